import ChatCore
import ChatStore
import Foundation
import PostgresNIO

/// Users and blocks in PostgreSQL's SQL, with SQLite's decisions
/// (Store+Blocks.swift). A new message's hiding happens inside
/// `chatd_store_message` (migrations v16-store-message, v16-store-message-2).
extension PostgresTransaction {
    func searchUsers(_ query: String, viewer: String, limit: Int) throws -> [User] {
        // strpos, not LIKE: `%` and `_` in the query are literal.
        try self.query("""
            SELECT \(Self.userColumns) FROM users u
            WHERE lower(u.email) = lower($1)
               OR (strpos(lower(u.display_name), lower($1)) > 0 AND u.id IN (
                    SELECT p2.user_id FROM room_participants p1 JOIN room_participants p2 ON p2.room_id = p1.room_id
                    WHERE p1.user_id = $2
                    UNION
                    SELECT p.user_id FROM rooms r JOIN room_participants p ON p.room_id = r.id
                    WHERE r.room_type = 'public' AND r.is_active))
            ORDER BY lower(u.display_name), u.id LIMIT $3
            """, [.text(query), .text(viewer), .int(Int64(limit))]).rows.map(Self.user)
    }

    func block(_ target: String, by blocker: String) throws -> User {
        guard let user = try users([target])[target] else { throw StoreError.notFound("User not found") }
        guard target != blocker else { throw StoreError.badRequest(error: "You cannot block yourself") }
        // The rooms both are in, locked as a message's write locks its room
        // (chatd_store_message), in one order: a message of the target's
        // there either committed before (hideUnread below sees it) or waits
        // and then finds the block (its hidden_from names the blocker). The
        // block is written on the blocker's shard, the message on the room's:
        // nothing else orders them (review finding).
        try query("""
            SELECT 1 FROM rooms WHERE id IN (
                SELECT p1.room_id FROM room_participants p1 JOIN room_participants p2 ON p2.room_id = p1.room_id
                WHERE p1.user_id = $1 AND p2.user_id = $2)
            ORDER BY id FOR NO KEY UPDATE
            """, [.text(blocker), .text(target)])
        try query("INSERT INTO user_blocks (blocker_id, blocked_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                  [.text(blocker), .text(target), .int(Timestamp.now().micros)])
        try hideUnread(of: target, from: blocker)
        return user
    }

    func unblock(_ target: String, by blocker: String) throws {
        try query("DELETE FROM user_blocks WHERE blocker_id = $1 AND blocked_id = $2", [.text(blocker), .text(target)])
    }

    func blockedPage(_ page: Requests.Page, viewer: String) throws -> (count: Int64, users: [User]) {
        let count = try one("SELECT COUNT(*) FROM user_blocks WHERE blocker_id = $1", [.text(viewer)], as: Int64.self) ?? 0
        guard Pagination.isValid(page, count: count), let offset = Pagination.offset(page) else { throw StoreError.invalidPage }
        let users = try query("""
            SELECT \(Self.userColumns) FROM user_blocks b JOIN users u ON u.id = b.blocked_id
            WHERE b.blocker_id = $1 ORDER BY b.created_at DESC, u.id LIMIT $2 OFFSET $3
            """, [.text(viewer), .int(Int64(page.pageSize)), .int(offset)]).rows.map(Self.user)
        return (count, users)
    }

    func blockers(of sender: String, room roomID: String) throws -> [String] {
        try query("""
            SELECT b.blocker_id FROM user_blocks b JOIN room_participants p ON p.room_id = $1 AND p.user_id = b.blocker_id
            WHERE b.blocked_id = $2
            """, [.text(roomID), .text(sender)]).rows.map { try $0[0].decode(String.self) }
    }

    func isBlocked(_ target: String, by blocker: String) throws -> Bool {
        try one("SELECT 1 FROM user_blocks WHERE blocker_id = $1 AND blocked_id = $2", [.text(blocker), .text(target)], as: Int32.self) != nil
    }

    func isBlocked(between a: String, and b: String) throws -> Bool {
        try one("""
            SELECT 1 FROM user_blocks WHERE (blocker_id = $1 AND blocked_id = $2) OR (blocker_id = $2 AND blocked_id = $1)
            """, [.text(a), .text(b)], as: Int32.self) != nil
    }

    /// `last_message` for a viewer who blocked someone, as SQLite's
    /// `Store.hideBlockedLastMessages`.
    func hideBlockedLastMessages(_ last: inout [String: MessageSummary], viewer: String) throws {
        let blocked = Set(try query("SELECT blocked_id FROM user_blocks WHERE blocker_id = $1", [.text(viewer)]).rows.map { try $0[0].decode(String.self) })
        guard !blocked.isEmpty else { return }
        for (room, summary) in last where blocked.contains(summary.sender.id) {
            let row = try query("""
                SELECT m.id, m.content, m.timestamp, \(Self.userColumns) FROM messages m JOIN users u ON u.id = m.sender_id
                WHERE m.room_id = $1 AND NOT m.is_deleted AND m.sender_id NOT IN (SELECT blocked_id FROM user_blocks WHERE blocker_id = $2)
                ORDER BY m.seq DESC LIMIT 1
                """, [.text(room), .text(viewer)]).rows.first
            last[room] = try row.map {
                MessageSummary(id: try $0.get("id"), content: try $0.get("content"), sender: try Self.user($0), timestamp: Timestamp(micros: try $0.get("timestamp")))
            }
        }
    }

    /// `messagePage` for a viewer who blocked someone: the blocked users'
    /// messages left out, counted and offset by a query.
    func filteredMessagePage(_ request: Requests.MessageList, viewer: String, upper: Int64, lower: Int64) throws -> (count: Int64, messages: [Message]) {
        let filter = """
            m.room_id = $1 AND m.seq <= $2 AND m.seq > $3
            AND m.sender_id NOT IN (SELECT blocked_id FROM user_blocks WHERE blocker_id = $4)
            """
        let values: [PostgresValue] = [.text(request.roomID), .int(upper), .int(lower), .text(viewer)]
        let count = try one("SELECT COUNT(*) FROM messages m WHERE \(filter)", values, as: Int64.self) ?? 0
        guard Pagination.isValid(request.page, count: count), let offset = Pagination.offset(request.page) else { throw StoreError.invalidPage }
        var messages = try query("""
            SELECT \(Self.messageColumns) FROM messages m JOIN users u ON u.id = m.sender_id
            WHERE \(filter) ORDER BY m.seq DESC LIMIT $5 OFFSET $6
            """, values + [.int(Int64(request.page.pageSize)), .int(offset)]).rows.map(Self.message)
        try fillReadBy(&messages)
        return (count, messages)
    }
}
