import ChatCore
import ChatStore
import Foundation
import PostgresNIO

/// Read status, typing state and chat sessions.
extension PostgresTransaction {
    func markRoomRead(_ roomID: String, user: String) throws -> Int {
        try requireRoom(roomID, user: user, allowPublic: false)
        // ON CONFLICT: a concurrent receipt of the same message by another worker counts once.
        let marked = try query("""
            INSERT INTO message_read_status (message_id, user_id, read_at)
            SELECT m.id, $1, $2 FROM messages m
            WHERE m.room_id = $3 AND NOT m.is_deleted AND m.sender_id != $1
              AND NOT EXISTS (SELECT 1 FROM message_read_status s WHERE s.message_id = m.id AND s.user_id = $1)
            ON CONFLICT DO NOTHING RETURNING message_id
            """, [.text(user), .int(Timestamp.now().micros), .text(roomID)]).rows.map { try $0.get("message_id", as: String.self) }
        guard !marked.isEmpty else { return 0 }
        // Counted in a statement of its own, so with a snapshot taken after the
        // insert: a deletion that held its message FOR UPDATE while the insert
        // waited for it (the read status's foreign key takes KEY SHARE) has
        // committed, and its message is not counted (see markMessageRead).
        let live = try one("""
            WITH live AS (
                SELECT COUNT(*) AS n,
                       COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM mentions mn WHERE mn.message_id = messages.id AND mn.user_id = $3)) AS mentioned
                FROM messages WHERE id = ANY($1) AND NOT is_deleted)
            UPDATE room_participants SET read_count = read_count + live.n, mention_read_count = mention_read_count + live.mentioned FROM live
            WHERE room_id = $2 AND user_id = $3 AND live.n > 0 RETURNING live.n
            """, [.texts(marked), .text(roomID), .text(user)], as: Int64.self) ?? 0
        return Int(live)
    }

    func markMessageRead(_ ref: Requests.MessageRef, user: String) throws -> Bool {
        try requireRoom(ref.roomID, user: user, allowPublic: false)
        guard try one("SELECT 1 FROM messages WHERE id = $1 AND room_id = $2", [.text(ref.messageID), .text(ref.roomID)], as: Int32.self) != nil
        else { throw StoreError.notFound() }
        // No row lock of our own: reactions and edits need not wait for a
        // receipts batch. The insert's foreign key takes the message FOR KEY
        // SHARE until commit, which a deletion's FOR UPDATE waits for.
        let inserted = try query("INSERT INTO message_read_status (message_id, user_id, read_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                                 [.text(ref.messageID), .text(user), .int(Timestamp.now().micros)]).changed > 0
        guard inserted else { return true }
        // Whether the message is live, read by this statement's snapshot,
        // taken after the insert: if the deletion held the row first, the
        // insert waited for its commit and this sees it deleted; if the
        // insert came first, the deletion waits for this commit and then
        // sees the read status and takes the count back. Never both missed.
        try query("""
            UPDATE room_participants SET read_count = read_count + 1,
                mention_read_count = mention_read_count + (EXISTS (SELECT 1 FROM mentions WHERE message_id = $3 AND user_id = $2))::int
            WHERE room_id = $1 AND user_id = $2
              AND EXISTS (SELECT 1 FROM messages WHERE id = $3 AND NOT is_deleted AND sender_id != $2)
            """, [.text(ref.roomID), .text(user), .text(ref.messageID)])
        return false
    }

    func saveTyping(_ states: [Store.TypingState]) throws {
        for state in states {
            try query("""
                INSERT INTO typing_indicators (room_id, user_id, is_typing, last_seen) VALUES ($1, $2, $3, $4)
                ON CONFLICT (room_id, user_id) DO UPDATE SET is_typing = excluded.is_typing, last_seen = excluded.last_seen
                WHERE excluded.last_seen >= typing_indicators.last_seen
                """, [.text(state.roomID), .text(state.userID), .bool(state.isTyping), .int(state.lastSeen.micros)])
        }
    }

    func typingUsers(_ roomID: String, viewer: String, since: Timestamp) throws -> [(user: User, lastSeen: Timestamp)] {
        try requireRoom(roomID, user: viewer, allowPublic: false)
        return try query("""
            SELECT \(Self.userColumns), t.last_seen FROM typing_indicators t JOIN users u ON u.id = t.user_id
            WHERE t.room_id = $1 AND t.is_typing AND t.last_seen >= $2 AND t.user_id != $3
            ORDER BY t.last_seen DESC
            """, [.text(roomID), .int(since.micros), .text(viewer)]).rows.map { (user: try Self.user($0), lastSeen: Timestamp(micros: try $0.get("last_seen"))) }
    }

    func openSession(_ session: Requests.Session, user: String) throws {
        let now = Timestamp.now().micros
        try query("""
            INSERT INTO chat_sessions (session_id, user_id, session_type, is_active, last_ping, connected_at, user_agent, ip_address, frontend)
            VALUES ($1, $2, $3, TRUE, $4, $4, $5, $6, $7) ON CONFLICT DO NOTHING
            """, [.text(session.sessionID), .text(user), .text(session.sessionType), .int(now), .text(session.userAgent), .text(session.ipAddress), .text(session.frontend)])
    }

    func pingSession(_ sessionID: String, user: String) throws {
        try query("UPDATE chat_sessions SET last_ping = $1 WHERE session_id = $2 AND user_id = $3", [.int(Timestamp.now().micros), .text(sessionID), .text(user)])
    }

    func closeSession(_ sessionID: String, user: String) throws {
        try query("UPDATE chat_sessions SET is_active = FALSE WHERE session_id = $1 AND user_id = $2", [.text(sessionID), .text(user)])
    }

    func activeSessions(user: String) throws -> [Store.SessionRecord] {
        try query("""
            SELECT session_id, session_type, is_active, last_ping, connected_at, user_agent, ip_address
            FROM chat_sessions WHERE user_id = $1 AND is_active ORDER BY connected_at DESC
            """, [.text(user)]).rows.map { row in
            Store.SessionRecord(
                sessionID: try row.get("session_id"), sessionType: try row.get("session_type"), isActive: try row.get("is_active"),
                lastPing: Timestamp(micros: try row.get("last_ping")), connectedAt: Timestamp(micros: try row.get("connected_at")),
                userAgent: try row.get("user_agent"), ipAddress: try row.get("ip_address")
            )
        }
    }

    func cleanupSessions(user: String, before: Timestamp) throws -> Int {
        try query("DELETE FROM chat_sessions WHERE user_id = $1 AND NOT is_active AND last_ping < $2", [.text(user), .int(before.micros)]).changed
    }

    func resetSessions(frontend: String, alsoBare: String?, before: Int64) throws -> Int {
        try query(
            "UPDATE chat_sessions SET is_active = FALSE WHERE frontend IN ($1, $2) AND is_active AND connected_at < $3",
            [.text(frontend), .text(alsoBare ?? frontend), .int(before)]).changed
    }
}
