import ChatCore
import ChatStore
import Foundation
import PostgresNIO

/// Roles and pins: the primitives of `StoreTransaction` that ChatStore's
/// Store+Members.swift decides with (the decisions are not here).
extension PostgresTransaction {
    func lockRoles(room roomID: String) throws {
        try query("SELECT 1 FROM rooms WHERE id = $1 FOR NO KEY UPDATE", [.text(roomID)])
    }

    func members(room roomID: String) throws -> [Store.Member] {
        try query("""
            SELECT \(Self.userColumns), p.role, p.joined_at FROM room_participants p JOIN users u ON u.id = p.user_id
            WHERE p.room_id = $1 ORDER BY \(Store.memberOrder)
            """, [.text(roomID)]).rows.map { row in
            Store.Member(
                user: try Self.user(row), role: MemberRole(rawValue: try row.get("role")) ?? .member,
                joinedAt: Timestamp(micros: try row.get("joined_at"))
            )
        }
    }

    func setRole(_ role: MemberRole, room roomID: String, user: String) throws {
        try query("UPDATE room_participants SET role = $1 WHERE room_id = $2 AND user_id = $3", [.text(role.rawValue), .text(roomID), .text(user)])
    }

    func removeParticipant(room roomID: String, user: String) throws {
        try query("DELETE FROM room_participants WHERE room_id = $1 AND user_id = $2", [.text(roomID), .text(user)])
    }

    func setPin(_ ref: Requests.MessageRef, by user: String?) throws {
        if let user {
            // NOT is_deleted: a deletion that committed meanwhile wins.
            try query("""
                UPDATE messages SET pinned_by = $1, pinned_at = COALESCE(pinned_at, $2) WHERE id = $3 AND room_id = $4 AND NOT is_deleted
                """, [.text(user), .int(Timestamp.now().micros), .text(ref.messageID), .text(ref.roomID)])
        } else {
            try query("UPDATE messages SET pinned_by = NULL, pinned_at = NULL WHERE id = $1 AND room_id = $2", [.text(ref.messageID), .text(ref.roomID)])
        }
    }

    func pinPage(_ request: Requests.RoomPage, viewer: String) throws -> (count: Int64, messages: [Message]) {
        let filter = """
            m.room_id = $1 AND m.pinned_at IS NOT NULL AND m.sender_id NOT IN (SELECT blocked_id FROM user_blocks WHERE blocker_id = $2)
            """
        let count = try one("SELECT COUNT(*) FROM messages m WHERE \(filter)", [.text(request.roomID), .text(viewer)], as: Int64.self) ?? 0
        guard Pagination.isValid(request.page, count: count), let offset = Pagination.offset(request.page) else { throw StoreError.invalidPage }
        var messages = try query("""
            SELECT \(Self.messageColumns) FROM messages m JOIN users u ON u.id = m.sender_id
            WHERE \(filter) ORDER BY m.pinned_at DESC, m.seq DESC LIMIT $3 OFFSET $4
            """, [.text(request.roomID), .text(viewer), .int(Int64(request.page.pageSize)), .int(offset)]).rows.map(Self.message)
        try fillReadBy(&messages)
        return (count, messages)
    }
}
