import ChatCore
import GRDB

/// Read status, typing state and chat sessions: the receipts role's tables.
extension Store {
    /// Marks every message of the room the user has not read (others', not
    /// deleted) as read, in one statement. Returns how many it marked.
    public static func markRoomRead(_ roomID: String, user: String, in db: Database) throws -> Int {
        try requireRoom(roomID, user: user, in: db)
        try db.execute(sql: """
            INSERT OR IGNORE INTO message_read_status (message_id, user_id, read_at)
            SELECT m.id, ?, ? FROM messages m
            WHERE m.room_id = ? AND m.is_deleted = 0 AND m.sender_id != ?
              AND NOT EXISTS (SELECT 1 FROM message_read_status s WHERE s.message_id = m.id AND s.user_id = ?)
            """, arguments: [user, Timestamp.now().micros, roomID, user, user])
        let marked = db.changesCount
        // Every live message of others is read now, so every mention too
        // (SQLite has one writer: nothing can come between).
        try db.cachedStatement(sql: """
            UPDATE room_participants SET read_count = read_count + ?, mention_read_count = mention_count WHERE room_id = ? AND user_id = ?
            """).execute(arguments: [marked, roomID, user])
        return marked
    }

    /// Marks one message read; returns whether it already was. Idempotent.
    public static func markMessageRead(_ ref: Requests.MessageRef, user: String, in db: Database) throws -> Bool {
        try requireRoom(ref.roomID, user: user, in: db)
        let lookup = try db.cachedStatement(sql: "SELECT sender_id, is_deleted, mentions FROM messages WHERE id = ? AND room_id = ?")
        let found = try first(lookup, arguments: [ref.messageID, ref.roomID]) { row -> (senderID: String, isDeleted: Bool, mentions: String?) in
            (row["sender_id"], row["is_deleted"], row["mentions"])
        }
        guard let (senderID, isDeleted, mentions) = found else { throw StoreError.notFound() }
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO message_read_status (message_id, user_id, read_at) VALUES (?, ?, ?)")
            .execute(arguments: [ref.messageID, user, Timestamp.now().micros])
        let inserted = db.changesCount > 0
        // Only others' live messages count towards unread.
        if inserted, senderID != user, !isDeleted {
            let mentioned = decodeMentions(mentions).contains(user)
            try db.cachedStatement(sql: """
                UPDATE room_participants SET read_count = read_count + 1, mention_read_count = mention_read_count + ? WHERE room_id = ? AND user_id = ?
                """).execute(arguments: [mentioned ? 1 : 0, ref.roomID, user])
        }
        return !inserted
    }

    /// Typing states to persist (the receipts worker writes them lazily, in bulk).
    public struct TypingState: Sendable, Hashable {
        public var roomID: String
        public var userID: String
        public var isTyping: Bool
        public var lastSeen: Timestamp

        public init(roomID: String, userID: String, isTyping: Bool, lastSeen: Timestamp) {
            self.roomID = roomID
            self.userID = userID
            self.isTyping = isTyping
            self.lastSeen = lastSeen
        }
    }

    public static func saveTyping(_ states: some Sequence<TypingState>, in db: Database) throws {
        let statement = try db.cachedStatement(sql: """
            INSERT INTO typing_indicators (room_id, user_id, is_typing, last_seen) VALUES (?, ?, ?, ?)
            ON CONFLICT(room_id, user_id) DO UPDATE SET is_typing = excluded.is_typing, last_seen = excluded.last_seen
            WHERE excluded.last_seen >= typing_indicators.last_seen
            """)
        for state in states {
            try statement.execute(arguments: [state.roomID, state.userID, state.isTyping, state.lastSeen.micros])
        }
    }

    /// Who else is typing in the room: `is_typing` with a `typing: true` in the last `window`.
    public static func typingUsers(_ roomID: String, viewer: String, since: Timestamp, in db: Database) throws -> [(user: User, lastSeen: Timestamp)] {
        try requireRoom(roomID, user: viewer, in: db)
        return try Array(Row.fetchCursor(db, sql: """
            SELECT \(userColumns), t.last_seen FROM typing_indicators t JOIN users u ON u.id = t.user_id
            WHERE t.room_id = ? AND t.is_typing = 1 AND t.last_seen >= ? AND t.user_id != ?
            ORDER BY t.last_seen DESC
            """, arguments: [roomID, since.micros, viewer]).map { (user: user($0), lastSeen: Timestamp(micros: $0["last_seen"])) })
    }

    // MARK: Chat sessions

    public static func openSession(_ session: Requests.Session, user: String, in db: Database) throws {
        let now = Timestamp.now().micros
        try db.execute(sql: """
            INSERT OR IGNORE INTO chat_sessions (session_id, user_id, session_type, is_active, last_ping, connected_at, user_agent, ip_address, frontend)
            VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?)
            """, arguments: [session.sessionID, user, session.sessionType, now, now, session.userAgent, session.ipAddress, session.frontend])
    }

    public static func pingSession(_ sessionID: String, user: String, in db: Database) throws {
        try db.execute(sql: "UPDATE chat_sessions SET last_ping = ? WHERE session_id = ? AND user_id = ?", arguments: [Timestamp.now().micros, sessionID, user])
    }

    public static func closeSession(_ sessionID: String, user: String, in db: Database) throws {
        try db.execute(sql: "UPDATE chat_sessions SET is_active = 0 WHERE session_id = ? AND user_id = ?", arguments: [sessionID, user])
    }

    public struct SessionRecord: Sendable, Equatable {
        public var sessionID: String
        public var sessionType: String
        public var isActive: Bool
        public var lastPing: Timestamp
        public var connectedAt: Timestamp
        public var userAgent: String
        public var ipAddress: String?

        package init(sessionID: String, sessionType: String, isActive: Bool, lastPing: Timestamp, connectedAt: Timestamp, userAgent: String, ipAddress: String?) {
            (self.sessionID, self.sessionType, self.isActive, self.lastPing) = (sessionID, sessionType, isActive, lastPing)
            (self.connectedAt, self.userAgent, self.ipAddress) = (connectedAt, userAgent, ipAddress)
        }
    }

    public static func activeSessions(user: String, in db: Database) throws -> [SessionRecord] {
        try Array(Row.fetchCursor(db, sql: """
            SELECT session_id, session_type, is_active, last_ping, connected_at, user_agent, ip_address
            FROM chat_sessions WHERE user_id = ? AND is_active = 1 ORDER BY connected_at DESC
            """, arguments: [user]).map { row in
            SessionRecord(
                sessionID: row["session_id"], sessionType: row["session_type"], isActive: row["is_active"],
                lastPing: Timestamp(micros: row["last_ping"]), connectedAt: Timestamp(micros: row["connected_at"]),
                userAgent: row["user_agent"], ipAddress: row["ip_address"]
            )
        })
    }

    /// Deletes the user's inactive sessions whose last ping is older than `before`.
    public static func cleanupSessions(user: String, before: Timestamp, in db: Database) throws -> Int {
        try db.execute(sql: "DELETE FROM chat_sessions WHERE user_id = ? AND is_active = 0 AND last_ping < ?", arguments: [user, before.micros])
        return db.changesCount
    }

    /// Closes the sessions a frontend slot's previous process left active
    /// (opened before the new one started), and those under the slot's bare
    /// name (`alsoBare`, written before names were qualified by host).
    /// Returns how many.
    public static func resetSessions(frontend: String, alsoBare bare: String? = nil, before: Int64, in db: Database) throws -> Int {
        try db.execute(
            sql: "UPDATE chat_sessions SET is_active = 0 WHERE frontend IN (?, ?) AND is_active = 1 AND connected_at < ?",
            arguments: [frontend, bare ?? frontend, before])
        return db.changesCount
    }
}
