import ChatCore
import ChatStore
import Foundation
import PostgresNIO

/// One PostgreSQL transaction of a `PostgresEngine`: the domain operations
/// of `StoreTransaction` in PostgreSQL's SQL, with the decisions of SQLite's
/// `Store` (counters kept on write, idempotent writes, a fixed number of
/// statements per list). Lists of ids are bound as one `text[]`.
final class PostgresTransaction: StoreTransaction {
    let connection: PooledConnection
    private var savepoints = 0
    /// The running command's savepoint, not sent yet.
    private var pendingSavepoint: String?
    /// The last savepoint sent.
    private var openedSavepoint: String?

    init(_ connection: PooledConnection) { self.connection = connection }

    @discardableResult
    func query(_ sql: String, _ values: [PostgresValue] = []) throws -> (rows: [PostgresRandomAccessRow], changed: Int) {
        try PostgresValue.refuseNUL(values)
        openSavepoint()
        return try connection.query(sql, values)
    }

    /// A prepared statement, in the command's savepoint like any other.
    func execute<Statement: PreparedStatement>(_ statement: Statement) throws -> [PostgresRandomAccessRow] {
        try PostgresValue.refuseNUL(statement.values)
        openSavepoint()
        return try connection.execute(statement)
    }

    /// The first column of the first row, if any.
    func one<T: PostgresDecodable>(_ sql: String, _ values: [PostgresValue], as type: T.Type = T.self) throws -> T? {
        guard let row = try query(sql, values).rows.first else { return nil }
        return try row[0].decode(T.self)
    }

    /// A command's savepoint, sent before the command's first statement (a
    /// command that runs none needs none) and not waited for. It is not
    /// released: RELEASE would be one more statement per command, and the
    /// COMMIT keeps what no ROLLBACK TO undid either way (a later savepoint
    /// nests in an earlier one, and rolling back to it undoes only what came
    /// after it: its own command).
    func savepoint<T>(_ body: () throws -> T) throws -> T {
        savepoints += 1
        let name = "s\(savepoints)"
        pendingSavepoint = name
        defer { pendingSavepoint = nil }
        do {
            return try body()
        } catch {
            if openedSavepoint == name { try query("ROLLBACK TO SAVEPOINT \(name)") }
            throw error
        }
    }

    /// Sends the savepoint the running command asked for, before its first statement.
    private func openSavepoint() {
        guard let name = pendingSavepoint else { return }
        pendingSavepoint = nil
        openedSavepoint = name
        connection.send("SAVEPOINT \(name)")
    }

    /// PostgreSQL keeps no per-snapshot commit count a reader can compare
    /// exactly and cheaply: the store's page cache is off (ReadCache).
    func dataVersion() throws -> StoreDataVersion? { nil }

    // MARK: Users

    func upsert(_ identity: Identity) throws {
        let user = identity.user
        try query("""
            INSERT INTO users (id, sub, email, display_name, clerk_profile_image_url, created_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (id) DO UPDATE SET
                email = excluded.email, display_name = excluded.display_name,
                clerk_profile_image_url = excluded.clerk_profile_image_url
            WHERE users.email IS DISTINCT FROM excluded.email OR users.display_name IS DISTINCT FROM excluded.display_name
                OR users.clerk_profile_image_url IS DISTINCT FROM excluded.clerk_profile_image_url
            """, [.text(user.id), .text(IDs.canonical(identity.sub) ?? identity.sub), .text(user.email), .text(user.displayName),
                  .text(user.clerkProfileImageURL), .int(Timestamp.now().micros)])
    }

    static let userColumns = """
        u.id AS user_id, u.email AS user_email, u.display_name AS user_display_name,
        u.profile_picture AS user_profile_picture, u.clerk_profile_image_url AS user_clerk_profile_image_url
        """

    static func user(_ row: PostgresRandomAccessRow) throws -> User {
        User(
            id: try row.get("user_id"), email: try row.get("user_email"), displayName: try row.get("user_display_name"),
            profilePicture: try row.get("user_profile_picture"), clerkProfileImageURL: try row.get("user_clerk_profile_image_url")
        )
    }

    func users(_ ids: some Collection<String>) throws -> [String: User] {
        guard !ids.isEmpty else { return [:] }
        var users: [String: User] = [:]
        for row in try query("SELECT \(Self.userColumns) FROM users u WHERE u.id = ANY($1)", [.texts(Array(ids))]).rows {
            let user = try Self.user(row)
            users[user.id] = user
        }
        return users
    }

    func user(id: String) throws -> User? { try users([id])[id] }

    // MARK: Access

    func roomInfo(_ roomID: String, user: String) throws -> Store.RoomInfo? {
        guard let row = try execute(Statements.RoomInfo(values: [.text(user), .text(roomID)])).first else { return nil }
        return try Self.roomInfo(row, id: roomID)
    }

    /// A `RoomInfo` from a row with `Statements.RoomInfo`'s columns.
    static func roomInfo(_ row: PostgresRandomAccessRow, id roomID: String) throws -> Store.RoomInfo {
        let role = try row.get("role", as: String?.self)
        return Store.RoomInfo(
            id: roomID, roomType: RoomType(rawValue: try row.get("room_type")) ?? .group, isActive: try row.get("is_active"),
            createdBy: try row.get("created_by"), isParticipant: role != nil, role: role.flatMap(MemberRole.init(rawValue:)),
            postPermission: PostPermission(rawValue: try row.get("post_permission")) ?? .members
        )
    }

    @discardableResult
    func requireRoom(_ roomID: String, user: String, allowPublic: Bool) throws -> Store.RoomInfo {
        try Store.admit(roomInfo(roomID, user: user), allowPublic: allowPublic)
    }

    func enter(room roomID: String, user: String, maxParticipants: Int) throws {
        guard let info = try roomInfo(roomID, user: user), info.isActive else { throw StoreError.notFound("Room not found") }
        if info.isParticipant { return }
        guard info.roomType == .public else { throw StoreError.forbidden(Store.noAccess) }
        try addParticipants(room: roomID, users: [user], limit: maxParticipants)
    }

    /// Adds members (a returning one gets its counters recomputed); past
    /// `limit` members in all, nothing is added (`400`).
    func addParticipants(room roomID: String, users: [String], limit: Int) throws {
        // The room's row lock first (as a message's), so that concurrent adds
        // count the members one after another and never pass the limit together.
        try query("SELECT 1 FROM rooms WHERE id = $1 FOR NO KEY UPDATE", [.text(roomID)])
        let present = try one("SELECT COUNT(*) FROM room_participants WHERE room_id = $1", [.text(roomID)], as: Int64.self) ?? 0
        if present + Int64(users.count) > Int64(limit) {
            let already = try one("SELECT COUNT(*) FROM room_participants WHERE room_id = $1 AND user_id = ANY($2)",
                                  [.text(roomID), .texts(users)], as: Int64.self) ?? 0
            guard present + Int64(users.count) - already <= Int64(limit) else {
                throw StoreError.badRequest([("participant_ids", "A room has at most \(limit) members.")])
            }
        }
        let now = Timestamp.now().micros
        for user in users {
            if try one("SELECT 1::bigint FROM user_blocks WHERE blocker_id = $1 LIMIT 1", [.text(user)], as: Int64.self) != nil {
                try query(Store.hideBlockedBeforeJoin, [.text(user), .text(roomID)])
            }
            try query("""
                INSERT INTO room_participants (room_id, user_id, joined_at, sent_count, read_count, mention_count, mention_read_count)
                SELECT $1, $2, $3,
                    (SELECT COUNT(*) FROM messages m WHERE m.room_id = $1 AND m.sender_id = $2 AND NOT m.is_deleted),
                    (SELECT COUNT(*) FROM message_read_status s JOIN messages m ON m.id = s.message_id
                     WHERE s.user_id = $2 AND m.room_id = $1 AND NOT m.is_deleted AND m.sender_id != $2),
                    -- a deleted message's mentions are gone (forgetMentions)
                    (SELECT COUNT(*) FROM mentions mn WHERE mn.user_id = $2 AND mn.room_id = $1),
                    (SELECT COUNT(*) FROM mentions mn JOIN message_read_status s ON s.message_id = mn.message_id AND s.user_id = $2
                     WHERE mn.user_id = $2 AND mn.room_id = $1)
                ON CONFLICT DO NOTHING
                """, [.text(roomID), .text(user), .int(now)])
        }
    }
}
