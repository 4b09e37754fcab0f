import ChatCore
import GRDB

/// Mute, notification level and mentions (issue 16).
extension Store {
    /// A member's preferences for a room, as `rooms(ids:viewer:)` reads them.
    package struct Prefs {
        var muted: Bool
        var mutedUntil: Int64?
        var level: String?
        var unreadMentions: Int64?

        package init(muted: Bool, mutedUntil: Int64?, level: String?, unreadMentions: Int64?) {
            (self.muted, self.mutedUntil, self.level, self.unreadMentions) = (muted, mutedUntil, level, unreadMentions)
        }

        /// A timed mute whose end has passed reads as not muted.
        package func apply(to room: inout Room, now: Timestamp = .now()) {
            room.mutedUntil = muted ? mutedUntil.map(Timestamp.init(micros:)) : nil
            room.muted = muted && (mutedUntil.map { $0 > now.micros } ?? true)
            room.notificationLevel = level ?? NotificationLevel.default
            room.unreadMentions = max(0, unreadMentions ?? 0)
        }
    }

    /// `messages.mentions`: the ids comma-separated (UUIDs have no comma), NULL for none.
    package static func encodeMentions(_ ids: [String]) -> String? {
        ids.isEmpty ? nil : ids.joined(separator: ",")
    }

    package static func decodeMentions(_ text: String?) -> [String] {
        guard let text, !text.isEmpty else { return [] }
        return text.split(separator: ",").map(String.init)
    }

    /// Mutes the room for its member `user` until `request.until` (nil:
    /// until unmuted); `nil` for `until` on `unmute`. A participant only.
    public static func mute(_ request: Requests.RoomMute, user: String, muted: Bool, in db: Database) throws {
        try requireRoom(request.roomID, user: user, in: db)
        try db.cachedStatement(sql: "UPDATE room_participants SET muted = ?, muted_until = ? WHERE room_id = ? AND user_id = ?")
            .execute(arguments: [muted, muted ? request.until : nil, request.roomID, user])
    }

    public static func setNotificationLevel(_ request: Requests.RoomNotifications, user: String, in db: Database) throws {
        try requireRoom(request.roomID, user: user, in: db)
        guard NotificationLevel.all.contains(request.level) else { throw StoreError.badRequest([("level", "\"\(request.level)\" is not a valid choice.")]) }
        try db.cachedStatement(sql: "UPDATE room_participants SET notification_level = ? WHERE room_id = ? AND user_id = ?")
            .execute(arguments: [request.level, request.roomID, user])
    }

    /// The mention bookkeeping of a message just stored, in one place: who
    /// it mentions (only a text with `@` reads the members), its
    /// `mentions` column, the feed's rows and the mentioned members'
    /// counters. Returns the ids. A rule about who may not be mentioned
    /// (a block) belongs here.
    static func recordMentions(
        message id: String, room roomID: String, sender: String, content: String, at micros: Int64, except hidden: [String], in db: Database
    ) throws -> [String] {
        guard Mentions.mayMention(content) else { return [] }
        var members: [Mentions.Member] = []
        try Row.fetchCursor(db.cachedStatement(sql: """
            SELECT u.id, u.display_name, u.email FROM room_participants p JOIN users u ON u.id = p.user_id
            WHERE p.room_id = ? ORDER BY p.joined_at, u.id
            """), arguments: [roomID]).forEach { members.append(Mentions.Member(id: $0["id"], displayName: $0["display_name"], email: $0["email"])) }
        let ids = Mentions.parse(content, members: members, sender: sender)
        guard !ids.isEmpty else { return [] }
        try db.cachedStatement(sql: "UPDATE messages SET mentions = ? WHERE id = ?").execute(arguments: [encodeMentions(ids), id])
        // Members who blocked the sender keep the message's `mentions` (the
        // sender is not told) but get no feed entry and no unread mention.
        let counted = hidden.isEmpty ? ids : ids.filter { !hidden.contains($0) }
        guard !counted.isEmpty else { return ids }
        let list = jsonArray(counted)
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO mentions (user_id, message_id, room_id, created_at) SELECT value, ?, ?, ? FROM json_each(?)")
            .execute(arguments: [id, roomID, micros, list])
        try db.cachedStatement(sql: "UPDATE room_participants SET mention_count = mention_count + 1 WHERE room_id = ? AND user_id IN \(idList)")
            .execute(arguments: [roomID, list])
        return ids
    }

    /// A message is deleted: it no longer counts for the members it
    /// mentioned (nor, read, for their read mentions), and leaves their feeds.
    static func forgetMentions(message id: String, room roomID: String, in db: Database) throws {
        try db.cachedStatement(sql: """
            UPDATE room_participants SET mention_count = mention_count - 1,
                mention_read_count = mention_read_count
                    - EXISTS (SELECT 1 FROM message_read_status s WHERE s.message_id = ?1 AND s.user_id = room_participants.user_id)
            WHERE room_id = ?2 AND user_id IN (SELECT user_id FROM mentions WHERE message_id = ?1)
            """).execute(arguments: [id, roomID])
        try db.cachedStatement(sql: "DELETE FROM mentions WHERE message_id = ?").execute(arguments: [id])
    }

    /// A page of the viewer's mentions in rooms they are still in, newest first.
    public static func mentionPage(_ request: Requests.MentionList, viewer: String, in db: Database) throws -> (count: Int64, messages: [Message]) {
        let filter = """
            FROM mentions mn JOIN room_participants p ON p.room_id = mn.room_id AND p.user_id = mn.user_id WHERE mn.user_id = ?
              AND NOT EXISTS (SELECT 1 FROM messages m JOIN user_blocks b ON b.blocker_id = mn.user_id AND b.blocked_id = m.sender_id
                              WHERE m.id = mn.message_id)
            """
        let count = try Int64.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) \(filter)"), arguments: [viewer]) ?? 0
        guard Pagination.isValid(request.page, count: count), let offset = Pagination.offset(request.page) else { throw StoreError.invalidPage }
        let ids = try String.fetchAll(
            db.cachedStatement(sql: "SELECT mn.message_id \(filter) ORDER BY mn.created_at DESC, mn.message_id DESC LIMIT ? OFFSET ?"),
            arguments: [viewer, request.page.pageSize, offset])
        return (count, try messages(ids: ids, in: db))
    }
}
