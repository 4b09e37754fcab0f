import ChatCore
import Foundation

/// The domain operations the workers run, inside one transaction of a
/// `StoreEngine`. Each engine implements them in its own SQL: SQLite's
/// forwards to the tuned `Store` statics, PostgreSQL's (ChatPostgres) has its
/// own statements. A refusal throws `StoreError`; a constraint violation
/// throws the engine's error, which `StoreEngine.isConflict` recognises.
///
/// Not `Sendable`: a transaction belongs to the thread that runs it.
public protocol StoreTransaction: AnyObject {
    /// Runs `body` in a savepoint: a throw rolls back what it wrote, and only that.
    func savepoint<T>(_ body: () throws -> T) throws -> T

    // Users
    func upsert(_ identity: Identity) throws
    func user(id: String) throws -> User?

    // Users and blocks (Store+Blocks.swift)
    func searchUsers(_ query: String, viewer: String, limit: Int) throws -> [User]
    func block(_ target: String, by blocker: String) throws -> User
    func unblock(_ target: String, by blocker: String) throws
    func blockedPage(_ page: Requests.Page, viewer: String) throws -> (count: Int64, users: [User])
    /// Members of the room who blocked `sender` (whom its messages are hidden from).
    func blockers(of sender: String, room roomID: String) throws -> [String]

    // Rooms
    @discardableResult
    func requireRoom(_ roomID: String, user: String, allowPublic: Bool) throws -> Store.RoomInfo
    func enter(room roomID: String, user: String, maxParticipants: Int) throws
    func createRoom(_ request: Requests.RoomCreate, creator: String, maxParticipants: Int) throws -> Room
    func updateRoom(_ request: Requests.RoomUpdate, user: String, maxParticipants: Int) throws -> Room
    func deactivateRoom(_ roomID: String, user: String) throws
    func directRoom(_ request: Requests.RoomDirect, user: String) throws -> (Room, Bool)
    func leaveRoom(_ roomID: String, user: String) throws
    func joinRoom(_ roomID: String, user: String, maxParticipants: Int) throws
    func room(_ roomID: String, viewer: String) throws -> Room
    func roomPage(_ request: Requests.RoomList, viewer: String) throws -> (count: Int64, rooms: [Room])
    func searchRooms(_ query: String, viewer: String, limit: Int) throws -> [Room]

    // Roles: the primitives; who may use them is decided in Store+Members.swift.
    /// Holds the room against concurrent role changes until the transaction
    /// ends (PostgreSQL: its row lock, as a message insert takes; SQLite's
    /// single writer needs none), so a check and its change see one state.
    func lockRoles(room roomID: String) throws
    func roomInfo(_ roomID: String, user: String) throws -> Store.RoomInfo?
    /// A room's members: owner, then admins, then members, each by join time.
    func members(room roomID: String) throws -> [Store.Member]
    func setRole(_ role: MemberRole, room roomID: String, user: String) throws
    func removeParticipant(room roomID: String, user: String) throws
    /// Pins (`by` nil unpins); a deleted message is never pinned.
    func setPin(_ ref: Requests.MessageRef, by user: String?) throws
    func pinPage(_ request: Requests.RoomPage, viewer: String) throws -> (count: Int64, messages: [Message])

    // Messages
    func createMessage(_ request: Requests.MessageCreate, sender: User, maxChars: Int) throws -> Store.CreateOutcome
    func editMessage(_ request: Requests.MessageUpdate, user: String, maxChars: Int) throws -> Message
    func deleteMessage(_ ref: Requests.MessageRef, user: String) throws -> Message
    func react(_ request: Requests.MessageReact, user: String) throws -> Message
    func message(_ ref: Requests.MessageRef, user: String) throws -> Message
    func messages(ids: [String]) throws -> [Message]
    func messagePage(_ request: Requests.MessageList, viewer: String) throws -> (count: Int64, messages: [Message])

    // Receipts, typing, sessions
    func markRoomRead(_ roomID: String, user: String) throws -> Int
    func markMessageRead(_ ref: Requests.MessageRef, user: String) throws -> Bool
    func saveTyping(_ states: [Store.TypingState]) throws
    func typingUsers(_ roomID: String, viewer: String, since: Timestamp) throws -> [(user: User, lastSeen: Timestamp)]
    func openSession(_ session: Requests.Session, user: String) throws
    func pingSession(_ sessionID: String, user: String) throws
    func closeSession(_ sessionID: String, user: String) throws
    func activeSessions(user: String) throws -> [Store.SessionRecord]
    func cleanupSessions(user: String, before: Timestamp) throws -> Int
    func resetSessions(frontend: String, alsoBare: String?, before: Int64) throws -> Int

    // Mute, notification level, mentions (issue 16)
    /// Mutes (`muted`, until `request.until`) or unmutes the room for its member `user`.
    func mute(_ request: Requests.RoomMute, user: String, muted: Bool) throws
    func setNotificationLevel(_ request: Requests.RoomNotifications, user: String) throws
    func mentionPage(_ request: Requests.MentionList, viewer: String) throws -> (count: Int64, messages: [Message])
    // Webhooks (issue 16): the statements of WebhookStore, written once for both engines.
    /// Runs a query; each row's columns as text (integers in decimal), nil for NULL.
    func rows(_ sql: String, _ values: [SQLValue]) throws -> [[String?]]
    /// Runs a statement; returns how many rows it changed.
    @discardableResult
    func run(_ sql: String, _ values: [SQLValue]) throws -> Int

    /// What the store's page cache compares to know nothing was written since
    /// it kept a page, read in this (read) transaction before the page is;
    /// nil when the engine cannot tell cheaply and exactly (no caching then).
    func dataVersion() throws -> StoreDataVersion?
}

/// A state of the database as one reader sees it: equal values mean no
/// commit in between. Only compares values from the same engine object.
public struct StoreDataVersion: Hashable, Sendable {
    public var connection: Int
    public var commits: Int64
    public var changes: Int64

    public init(connection: Int, commits: Int64, changes: Int64) {
        (self.connection, self.commits, self.changes) = (connection, commits, changes)
    }
}

/// A database the workers use: write transactions, reads, and the message
/// search that follows it. Engines are called from a worker's bus thread,
/// never from an event loop, and may block it.
public protocol StoreEngine: AnyObject, Sendable {
    /// Runs `body` in one write transaction, committed when it returns.
    func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T
    /// Runs `body` in one read transaction (a consistent snapshot).
    func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T
    /// Whether `error` is a constraint violation (a unique key taken by a
    /// concurrent or earlier write): the command is refused, not the batch.
    func isConflict(_ error: any Error) -> Bool
    /// The search worker's index of messages; `indexPath` is where an engine
    /// that keeps it in a file of its own (SQLite) keeps it.
    func makeSearchIndex(indexPath: String) throws -> any MessageSearchIndex
    /// Opens what the first batch would otherwise open (a standby's warm-up).
    func warmUp() throws
    /// Most commands a worker takes into one transaction: what bounds a
    /// batch's length in time, well inside the frontend's 10 s deadline and
    /// the supervisor's 10 s heartbeat limit.
    var maxBatch: Int { get }
}

extension StoreEngine {
    /// BusServer's default: an SQLite write is a function call.
    public var maxBatch: Int { 512 }
}

/// The search worker's index: filled from the database off the write path,
/// from watermarks, and searched with the contract's substring semantics.
public protocol MessageSearchIndex: AnyObject {
    /// Indexes what is new or changed, for at most `budget` seconds; returns
    /// how many messages it indexed and whether it caught up.
    @discardableResult
    func catchUp(batch: Int, budget: TimeInterval) throws -> (count: Int, done: Bool)
    /// Messages stored and not yet indexed.
    func lag() throws -> Int64
    /// Messages of the user's rooms containing `query`, newest first.
    func search(_ query: String, user: String, filters: SearchIndex.Filters, limit: Int) throws -> [Message]
}

extension MessageSearchIndex {
    @discardableResult
    public func catchUp() throws -> (count: Int, done: Bool) { try catchUp(batch: 5000, budget: 0.5) }

    public func search(_ query: String, user: String, filters: SearchIndex.Filters) throws -> [Message] {
        try search(query, user: user, filters: filters, limit: 50)
    }
}

extension StoreTransaction {
    @discardableResult
    public func requireRoom(_ roomID: String, user: String) throws -> Store.RoomInfo {
        try requireRoom(roomID, user: user, allowPublic: false)
    }
}
