import ChatCore
import GRDB

/// Users (`users/me`, the lookup) and blocks (api-contract.md "Mute and
/// block"). A block hides the blocked user's messages from the blocker on
/// every path: history and search filter them by the blocks in force; a new
/// message's write finds the room's members who blocked its sender (one
/// index probe, `blockers(of:room:)`), writes their read status of it with
/// `hiddenReadAt` (so it never counts as unread, and `read_by` leaves it out),
/// and its event skips their sockets (`Message.hiddenFrom`).
extension Store {
    /// The refusal of a message or `direct_message` between two users with a
    /// block between them. It does not say who blocked whom.
    public static let blockedDirect = "You cannot send messages to this user"

    /// The `read_at` of a read status the store writes for a member who blocked
    /// the sender: hidden, not read (`read_by` shows `read_at > 0` only).
    public static let hiddenReadAt: Int64 = 0

    /// Blocks `target` for `blocker`; again is a no-op. The blocked user.
    public static func block(_ target: String, by blocker: String, in db: Database) throws -> User {
        guard let user = try users([target], in: db)[target] else { throw StoreError.notFound("User not found") }
        guard target != blocker else { throw StoreError.badRequest(error: "You cannot block yourself") }
        try db.execute(sql: "INSERT OR IGNORE INTO user_blocks (blocker_id, blocked_id, created_at) VALUES (?, ?, ?)",
                       arguments: [blocker, target, Timestamp.now().micros])
        return user
    }

    /// Lifts a block; lifting none is a no-op. Messages sent meanwhile stay
    /// read for the blocker (they never counted as unread).
    public static func unblock(_ target: String, by blocker: String, in db: Database) throws {
        try db.execute(sql: "DELETE FROM user_blocks WHERE blocker_id = ? AND blocked_id = ?", arguments: [blocker, target])
    }

    /// The users `viewer` blocked, most recent block first.
    public static func blockedPage(_ page: Requests.Page, viewer: String, in db: Database) throws -> (count: Int64, users: [User]) {
        let count = try Int64.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM user_blocks WHERE blocker_id = ?"), arguments: [viewer]) ?? 0
        guard Pagination.isValid(page, count: count), let offset = Pagination.offset(page) else { throw StoreError.invalidPage }
        let users = try Row.fetchAll(db.cachedStatement(sql: """
            SELECT \(userColumns) FROM user_blocks b JOIN users u ON u.id = b.blocked_id
            WHERE b.blocker_id = ? ORDER BY b.created_at DESC, u.id LIMIT ? OFFSET ?
            """), arguments: [viewer, page.pageSize, offset]).map(user)
        return (count, users)
    }

    /// Members of `roomID` who blocked `sender`: whom its messages are hidden from.
    public static func blockers(of sender: String, room roomID: String, in db: Database) throws -> [String] {
        try String.fetchAll(db.cachedStatement(sql: """
            SELECT b.blocker_id FROM user_blocks b JOIN room_participants p ON p.room_id = ? AND p.user_id = b.blocker_id
            WHERE b.blocked_id = ?
            """), arguments: [roomID, sender])
    }

    /// Whether either of two users blocked the other.
    public static func isBlocked(between a: String, and b: String, in db: Database) throws -> Bool {
        try Row.fetchOne(db.cachedStatement(sql: """
            SELECT 1 FROM user_blocks WHERE (blocker_id = ?1 AND blocked_id = ?2) OR (blocker_id = ?2 AND blocked_id = ?1)
            """), arguments: [a, b]) != nil
    }

    /// Whether `blocker` blocked `target`.
    public static func isBlocked(_ target: String, by blocker: String, in db: Database) throws -> Bool {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM user_blocks WHERE blocker_id = ? AND blocked_id = ?"),
                         arguments: [blocker, target]) != nil
    }

    /// A block between the sender and the other member of a direct room.
    static func isBlockedDirect(room roomID: String, sender: String, in db: Database) throws -> Bool {
        try Row.fetchOne(db.cachedStatement(sql: """
            SELECT 1 FROM room_participants p JOIN user_blocks b
                ON (b.blocker_id = p.user_id AND b.blocked_id = ?2) OR (b.blocker_id = ?2 AND b.blocked_id = p.user_id)
            WHERE p.room_id = ?1 AND p.user_id != ?2
            """), arguments: [roomID, sender]) != nil
    }

    /// Whether `viewer` blocked anyone: history takes its exact, unfiltered
    /// path (seq arithmetic) when not.
    static func hasBlocks(_ viewer: String, in db: Database) throws -> Bool {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM user_blocks WHERE blocker_id = ? LIMIT 1"), arguments: [viewer]) != nil
    }

    /// Hides a just-stored message from the members who blocked its sender.
    static func hide(_ messageID: String, room roomID: String, from users: [String], in db: Database) throws {
        guard !users.isEmpty else { return }
        try db.cachedStatement(sql: """
            INSERT OR IGNORE INTO message_read_status (message_id, user_id, read_at) SELECT ?, value, ? FROM json_each(?)
            """).execute(arguments: [messageID, hiddenReadAt, jsonArray(users)])
        try db.cachedStatement(sql: "UPDATE room_participants SET read_count = read_count + 1 WHERE room_id = ? AND user_id IN \(idList)")
            .execute(arguments: [roomID, jsonArray(users)])
    }

    /// `users/?q=`: the exact email anywhere, or a display name containing
    /// `query`, among the users who share a room with the viewer or are in a
    /// public room; case-insensitive (ASCII), at most `limit`, by name.
    public static func searchUsers(_ query: String, viewer: String, limit: Int, in db: Database) throws -> [User] {
        try Row.fetchAll(db.cachedStatement(sql: """
            SELECT \(userColumns) FROM users u
            WHERE lower(u.email) = lower(?1)
               OR (instr(lower(u.display_name), lower(?1)) > 0 AND u.id IN (
                    SELECT p2.user_id FROM room_participants p1 JOIN room_participants p2 ON p2.room_id = p1.room_id
                    WHERE p1.user_id = ?2
                    UNION
                    SELECT p.user_id FROM rooms r JOIN room_participants p ON p.room_id = r.id
                    WHERE r.room_type = 'public' AND r.is_active = 1))
            ORDER BY lower(u.display_name), u.id LIMIT ?3
            """), arguments: [query, viewer, limit]).map(user)
    }

    /// The room list's `last_message` for a viewer who blocked someone: the
    /// newest live message not of a blocked user (one probe for the blocks;
    /// a query only for a room whose last message is a blocked user's).
    static func hideBlockedLastMessages(_ last: inout [String: MessageSummary], viewer: String, in db: Database) throws {
        let blocked = Set(try String.fetchAll(db.cachedStatement(sql: "SELECT blocked_id FROM user_blocks WHERE blocker_id = ?"), arguments: [viewer]))
        guard !blocked.isEmpty else { return }
        for (room, summary) in last where blocked.contains(summary.sender.id) {
            last[room] = try first(db.cachedStatement(sql: """
                SELECT m.id, m.content, m.timestamp, \(userColumns) FROM messages m JOIN users u ON u.id = m.sender_id
                WHERE m.room_id = ? AND m.is_deleted = 0 AND m.sender_id NOT IN (SELECT blocked_id FROM user_blocks WHERE blocker_id = ?)
                ORDER BY m.seq DESC LIMIT 1
                """), arguments: [room, viewer]) { row in
                MessageSummary(id: row["id"], content: row["content"], sender: user(row), timestamp: Timestamp(micros: row["timestamp"]))
            }
        }
    }

    /// A page of a room's messages for a viewer who blocked someone: the
    /// blocked users' messages left out, counted and offset by a query
    /// (only blockers pay for it; everyone else's history is arithmetic).
    static func filteredMessagePage(
        _ request: Requests.MessageList, viewer: String, upper: Int64, lower: Int64, in db: Database
    ) throws -> (count: Int64, messages: [Message]) {
        let filter = """
            m.room_id = ? AND m.seq <= ? AND m.seq > ?
            AND m.sender_id NOT IN (SELECT blocked_id FROM user_blocks WHERE blocker_id = ?)
            """
        let arguments: StatementArguments = [request.roomID, upper, lower, viewer]
        let count = try Int64.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM messages m WHERE \(filter)"), arguments: arguments) ?? 0
        guard Pagination.isValid(request.page, count: count), let offset = Pagination.offset(request.page) else { throw StoreError.invalidPage }
        var messages = try Array(Row.fetchCursor(db.cachedStatement(sql: """
            SELECT \(messageColumns) FROM messages m JOIN users u ON u.id = m.sender_id
            WHERE \(filter) ORDER BY m.seq DESC LIMIT ? OFFSET ?
            """), arguments: arguments + [request.page.pageSize, offset]).map(message))
        try fillReadBy(&messages, in: db)
        return (count, messages)
    }
}

extension SQLiteTransaction {
    func searchUsers(_ query: String, viewer: String, limit: Int) throws -> [User] {
        try Store.searchUsers(query, viewer: viewer, limit: limit, in: db)
    }
    func block(_ target: String, by blocker: String) throws -> User {
        let user = try Store.block(target, by: blocker, in: db)
        try hideUnread(of: target, from: blocker)
        return user
    }
    func unblock(_ target: String, by blocker: String) throws { try Store.unblock(target, by: blocker, in: db) }
    func blockedPage(_ page: Requests.Page, viewer: String) throws -> (count: Int64, users: [User]) {
        try Store.blockedPage(page, viewer: viewer, in: db)
    }
    func blockers(of sender: String, room roomID: String) throws -> [String] { try Store.blockers(of: sender, room: roomID, in: db) }
}

extension Store {
    /// Run before `$1` becomes a member of room `$2` (when `$1` blocked
    /// anyone): the messages there of the users `$1` blocked, unread by `$1`,
    /// become hidden-read, as at a block, so that the counters the member's
    /// row starts with leave them out (history hides them). Not for a member
    /// already there, whose counters would not follow. Both engines (`$1`
    /// first: SQLite numbers the parameters by first appearance).
    package static let hideBlockedBeforeJoin = """
        INSERT INTO message_read_status (message_id, user_id, read_at)
        SELECT m.id, $1, 0 FROM messages m
        WHERE m.sender_id IN (SELECT blocked_id FROM user_blocks WHERE blocker_id = $1) AND m.room_id = $2
          AND NOT EXISTS (SELECT 1 FROM message_read_status s WHERE s.message_id = m.id AND s.user_id = $1)
          AND NOT EXISTS (SELECT 1 FROM room_participants p WHERE p.room_id = $2 AND p.user_id = $1)
        """
}

extension StoreTransaction {
    /// At a block: the blocked user's messages the blocker has not read, in
    /// the blocker's rooms (the blocked user still in them or not), become hidden-read (read_at 0) as new ones are
    /// when stored, so that no unread count or unread mention is left that
    /// the blocker cannot open (history hides them all). They stay read after
    /// an unblock. One pass over the blocked user's messages in shared rooms,
    /// at the block only; the same SQL on both engines (`$1` is written before
    /// `$2` in each statement: SQLite binds by first appearance).
    package func hideUnread(of target: String, from blocker: String) throws {
        let unread = """
            NOT EXISTS (SELECT 1 FROM message_read_status s WHERE s.message_id = m.id AND s.user_id = $1)
            AND NOT m.is_deleted AND m.sender_id = $2
            """
        try run("""
            UPDATE room_participants SET
                read_count = read_count + (SELECT COUNT(*) FROM messages m WHERE \(unread) AND m.room_id = room_participants.room_id),
                mention_read_count = mention_read_count + (
                    SELECT COUNT(*) FROM mentions mn JOIN messages m ON m.id = mn.message_id
                    WHERE \(unread) AND mn.user_id = $1 AND mn.room_id = room_participants.room_id)
            WHERE user_id = $1 AND room_id IN (SELECT room_id FROM messages WHERE sender_id = $2)
            """, [.text(blocker), .text(target)])
        try run("""
            INSERT INTO message_read_status (message_id, user_id, read_at)
            SELECT m.id, $1, 0 FROM room_participants p JOIN messages m ON m.room_id = p.room_id
            WHERE p.user_id = $1 AND \(unread.replacingOccurrences(of: "$1", with: "p.user_id"))
            """, [.text(blocker), .text(target)])
    }
}
