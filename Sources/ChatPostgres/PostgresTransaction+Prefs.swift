import ChatCore
import ChatStore
import Foundation
import PostgresNIO

/// Mute, notification level and mentions (issue 16), as SQLite's Store+Prefs.
extension PostgresTransaction {
    func mute(_ request: Requests.RoomMute, user: String, muted: Bool) throws {
        try requireRoom(request.roomID, user: user, allowPublic: false)
        try query("UPDATE room_participants SET muted = $1, muted_until = $2 WHERE room_id = $3 AND user_id = $4",
                  [.bool(muted), .int(muted ? request.until : nil), .text(request.roomID), .text(user)])
    }

    func setNotificationLevel(_ request: Requests.RoomNotifications, user: String) throws {
        try requireRoom(request.roomID, user: user, allowPublic: false)
        guard NotificationLevel.all.contains(request.level) else { throw StoreError.badRequest([("level", "\"\(request.level)\" is not a valid choice.")]) }
        try query("UPDATE room_participants SET notification_level = $1 WHERE room_id = $2 AND user_id = $3",
                  [.text(request.level), .text(request.roomID), .text(user)])
    }

    /// The mention bookkeeping of a message just stored, in one place (see
    /// SQLite's `Store.recordMentions`): a text without `@` costs nothing; one
    /// with `@` one round trip for the members, and one more when it
    /// mentions anyone. Returns the ids.
    func recordMentions(
        message id: String, room roomID: String, sender: String, content: String, at micros: Int64, except hidden: [String]
    ) throws -> [String] {
        guard Mentions.mayMention(content) else { return [] }
        let members = try query("""
            SELECT u.id, u.display_name, u.email FROM room_participants p JOIN users u ON u.id = p.user_id
            WHERE p.room_id = $1 ORDER BY p.joined_at, u.id
            """, [.text(roomID)]).rows.map {
            Mentions.Member(id: try $0.get("id"), displayName: try $0.get("display_name"), email: try $0.get("email"))
        }
        let ids = Mentions.parse(content, members: members, sender: sender)
        guard !ids.isEmpty else { return [] }
        // Members who blocked the sender keep the message's `mentions` (the
        // sender is not told) but get no feed entry and no unread mention.
        let counted = hidden.isEmpty ? ids : ids.filter { !hidden.contains($0) }
        try query("""
            WITH message AS (UPDATE messages SET mentions = $1 WHERE id = $2),
                 feed AS (INSERT INTO mentions (user_id, message_id, room_id, created_at)
                          SELECT unnest($3::text[]), $2, $4, $5 ON CONFLICT DO NOTHING)
            UPDATE room_participants SET mention_count = mention_count + 1 WHERE room_id = $4 AND user_id = ANY($3)
            """, [.text(Store.encodeMentions(ids)), .text(id), .texts(counted), .text(roomID), .int(micros)])
        return ids
    }

    /// A deleted message no longer counts for the members it mentioned, and
    /// leaves their feeds (called under the deletion's row lock).
    func forgetMentions(message id: String, room roomID: String) throws {
        try query("""
            WITH gone AS (DELETE FROM mentions WHERE message_id = $1 RETURNING user_id)
            UPDATE room_participants SET mention_count = mention_count - 1,
                mention_read_count = mention_read_count
                    - (EXISTS (SELECT 1 FROM message_read_status s WHERE s.message_id = $1 AND s.user_id = room_participants.user_id))::int
            WHERE room_id = $2 AND user_id IN (SELECT user_id FROM gone)
            """, [.text(id), .text(roomID)])
    }

    func mentionPage(_ request: Requests.MentionList, viewer: String) throws -> (count: Int64, messages: [Message]) {
        let filter = """
            FROM mentions mn JOIN room_participants p ON p.room_id = mn.room_id AND p.user_id = mn.user_id WHERE mn.user_id = $1
              AND NOT EXISTS (SELECT 1 FROM messages m JOIN user_blocks b ON b.blocker_id = mn.user_id AND b.blocked_id = m.sender_id
                              WHERE m.id = mn.message_id)
            """
        let count = try one("SELECT COUNT(*) \(filter)", [.text(viewer)], as: Int64.self) ?? 0
        guard Pagination.isValid(request.page, count: count), let offset = Pagination.offset(request.page) else { throw StoreError.invalidPage }
        let ids = try query("SELECT mn.message_id \(filter) ORDER BY mn.created_at DESC, mn.message_id DESC LIMIT $2 OFFSET $3",
                            [.text(viewer), .int(Int64(request.page.pageSize)), .int(Int64(offset))]).rows.map { try $0.get("message_id", as: String.self) }
        return (count, try messages(ids: ids))
    }
}
