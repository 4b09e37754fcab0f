import ChatCore
import Foundation
import GRDB

/// SQLite as a `StoreEngine`: GRDB's transactions, and the `Store` statics
/// (tuned for SQLite, kept as they are) behind `StoreTransaction`.
extension ChatDatabase: StoreEngine {
    public func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try writer.write { try body(SQLiteTransaction($0)) }
    }

    public func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try writer.read { try body(SQLiteTransaction($0)) }
    }

    public func isConflict(_ error: any Error) -> Bool {
        (error as? DatabaseError)?.resultCode == .SQLITE_CONSTRAINT
    }

    public func makeSearchIndex(indexPath: String) throws -> any MessageSearchIndex {
        try SearchIndex(path: indexPath, main: self)
    }

    /// Opens a reader connection of the pool (the writer's was opened to
    /// migrate) and loads the schema into it.
    public func warmUp() throws {
        try writer.read { db in _ = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master") }
    }
}

extension SearchIndex: MessageSearchIndex {}

/// One SQLite transaction (or savepoint) of a `ChatDatabase`.
final class SQLiteTransaction: StoreTransaction {
    let db: Database

    init(_ db: Database) { self.db = db }

    func savepoint<T>(_ body: () throws -> T) throws -> T {
        var result: T?
        try db.inSavepoint {
            result = try body()
            return .commit
        }
        return result!
    }

    func upsert(_ identity: Identity) throws { try Store.upsert(identity, in: db) }

    func rows(_ sql: String, _ values: [SQLValue]) throws -> [[String?]] {
        try Row.fetchAll(db.cachedStatement(sql: sql), arguments: Self.arguments(values)).map { row in
            (0..<row.count).map { index -> String? in
                switch (row[index] as DatabaseValue).storage {
                case .null: nil
                case .int64(let value): String(value)
                case .double(let value): String(value)
                case .string(let value): value
                case .blob(let data): String(decoding: data, as: UTF8.self)
                }
            }
        }
    }

    @discardableResult
    func run(_ sql: String, _ values: [SQLValue]) throws -> Int {
        try db.cachedStatement(sql: sql).execute(arguments: Self.arguments(values))
        return db.changesCount
    }

    static func arguments(_ values: [SQLValue]) -> StatementArguments {
        StatementArguments(values.map { value -> (any DatabaseValueConvertible)? in
            switch value {
            case .text(let text): text
            case .int(let number): number
            case .null: nil
            }
        })
    }
    func user(id: String) throws -> User? { try Store.user(id: id, in: db) }

    @discardableResult
    func requireRoom(_ roomID: String, user: String, allowPublic: Bool) throws -> Store.RoomInfo {
        try Store.requireRoom(roomID, user: user, allowPublic: allowPublic, in: db)
    }
    func enter(room roomID: String, user: String, maxParticipants: Int) throws {
        try Store.enter(room: roomID, user: user, maxParticipants: maxParticipants, in: db)
    }
    func createRoom(_ request: Requests.RoomCreate, creator: String, maxParticipants: Int) throws -> Room {
        try Store.createRoom(request, creator: creator, maxParticipants: maxParticipants, in: db)
    }
    func updateRoom(_ request: Requests.RoomUpdate, user: String, maxParticipants: Int) throws -> Room {
        try Store.updateRoom(request, user: user, maxParticipants: maxParticipants, in: db)
    }
    func deactivateRoom(_ roomID: String, user: String) throws { try Store.deactivateRoom(roomID, user: user, in: db) }
    func directRoom(_ request: Requests.RoomDirect, user: String) throws -> (Room, Bool) { try Store.directRoom(request, user: user, in: db) }
    func leaveRoom(_ roomID: String, user: String) throws { try Store.leaveRoom(roomID, user: user, in: db) }
    func joinRoom(_ roomID: String, user: String, maxParticipants: Int) throws {
        try Store.joinRoom(roomID, user: user, maxParticipants: maxParticipants, in: db)
    }
    func room(_ roomID: String, viewer: String) throws -> Room { try Store.room(roomID, viewer: viewer, in: db) }
    func roomPage(_ request: Requests.RoomList, viewer: String) throws -> (count: Int64, rooms: [Room]) {
        try Store.roomPage(request, viewer: viewer, in: db)
    }
    func searchRooms(_ query: String, viewer: String, limit: Int) throws -> [Room] {
        try Store.searchRooms(query, viewer: viewer, limit: limit, in: db)
    }

    func createMessage(_ request: Requests.MessageCreate, sender: User, maxChars: Int) throws -> Store.CreateOutcome {
        try Store.createMessage(request, sender: sender, maxChars: maxChars, in: db)
    }
    func editMessage(_ request: Requests.MessageUpdate, user: String, maxChars: Int) throws -> Message {
        try Store.editMessage(request, user: user, maxChars: maxChars, in: db)
    }
    func deleteMessage(_ ref: Requests.MessageRef, user: String) throws -> Message { try Store.deleteMessage(ref, user: user, in: db) }
    func react(_ request: Requests.MessageReact, user: String) throws -> Message { try Store.react(request, user: user, in: db) }
    func message(_ ref: Requests.MessageRef, user: String) throws -> Message { try Store.message(ref, user: user, in: db) }
    func messages(ids: [String]) throws -> [Message] { try Store.messages(ids: ids, in: db) }
    func messagePage(_ request: Requests.MessageList, viewer: String) throws -> (count: Int64, messages: [Message]) {
        try Store.messagePage(request, viewer: viewer, in: db)
    }

    func markRoomRead(_ roomID: String, user: String) throws -> Int { try Store.markRoomRead(roomID, user: user, in: db) }
    func markMessageRead(_ ref: Requests.MessageRef, user: String) throws -> Bool { try Store.markMessageRead(ref, user: user, in: db) }
    func saveTyping(_ states: [Store.TypingState]) throws { try Store.saveTyping(states, in: db) }
    func typingUsers(_ roomID: String, viewer: String, since: Timestamp) throws -> [(user: User, lastSeen: Timestamp)] {
        try Store.typingUsers(roomID, viewer: viewer, since: since, in: db)
    }
    func openSession(_ session: Requests.Session, user: String) throws { try Store.openSession(session, user: user, in: db) }
    func pingSession(_ sessionID: String, user: String) throws { try Store.pingSession(sessionID, user: user, in: db) }
    func closeSession(_ sessionID: String, user: String) throws { try Store.closeSession(sessionID, user: user, in: db) }
    func activeSessions(user: String) throws -> [Store.SessionRecord] { try Store.activeSessions(user: user, in: db) }
    func cleanupSessions(user: String, before: Timestamp) throws -> Int { try Store.cleanupSessions(user: user, before: before, in: db) }
    func resetSessions(frontend: String, alsoBare: String?, before: Int64) throws -> Int {
        try Store.resetSessions(frontend: frontend, alsoBare: alsoBare, before: before, in: db)
    }

    func mute(_ request: Requests.RoomMute, user: String, muted: Bool) throws { try Store.mute(request, user: user, muted: muted, in: db) }
    func setNotificationLevel(_ request: Requests.RoomNotifications, user: String) throws {
        try Store.setNotificationLevel(request, user: user, in: db)
    }
    func mentionPage(_ request: Requests.MentionList, viewer: String) throws -> (count: Int64, messages: [Message]) {
        try Store.mentionPage(request, viewer: viewer, in: db)
    }

    /// `data_version` moves with every commit of another connection;
    /// `total_changes()` with every change made through this one (an
    /// in-memory queue reads and writes on one connection). Both compare only
    /// on the same connection, hence its address in the value.
    func dataVersion() throws -> StoreDataVersion? {
        // Its own statement: PRAGMA data_version opens the read
        // transaction, so the value is that of the snapshot read next.
        let commits = try Int64.fetchOne(db.cachedStatement(sql: "PRAGMA data_version")) ?? 0
        let changes = try Int64.fetchOne(db.cachedStatement(sql: "SELECT total_changes()")) ?? 0
        return StoreDataVersion(connection: Int(bitPattern: db.sqliteConnection), commits: commits, changes: changes)
    }
}
