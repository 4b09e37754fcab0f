import ChatBus
import ChatConfig
import ChatCore
import ChatStore
import ChatWire
import Foundation
import Logging

/// The `receipts` role: read status, typing state and chat sessions.
///
/// Read receipts arrive in bursts and are written in bulk (a batch is one
/// transaction; each receipt an idempotent `INSERT OR IGNORE`). Typing events
/// are published at once and their state kept in memory; it reaches the
/// database lazily, with the next batch that writes anyway or the periodic
/// flush, so a typing event never waits on a disk write.
public final class ReceiptsWorker {
    let processor: BatchProcessor
    let config: ChatConfig
    /// Typing states not yet in the database, by (room, user).
    var unsavedTyping: [String: Store.TypingState] = [:]
    /// When typing state last reached the database.
    var lastFlush = Date()

    public init(database: any StoreEngine, config: ChatConfig, logger: Logger) {
        self.processor = BatchProcessor(database: database, logger: logger)
        self.config = config
    }

    static func isWrite(_ kind: CommandKind) -> Bool {
        switch kind {
        case .typingList, .sessionActive: false
        // typing.set is handled before the transaction (see handle).
        default: true
        }
    }

    public func handle(_ batch: [Command]) -> [Event] {
        var events: [Event] = []
        var rest: [Command] = []
        // Typing first and without the database: fan out now, persist later.
        for command in batch {
            switch command.kind {
            case .typingSet: events += typing(command)
            case .sessionReset: events.append(reset(command))
            default: rest.append(command)
            }
        }
        if !rest.isEmpty || flushDue {
            events += process(rest)
        }
        return events
    }

    /// Called when the worker is idle: persists typing state that waited.
    public func idle() -> [Event] {
        flushDue ? process([]) : []
    }

    /// Typing state has waited long enough for a transaction of its own.
    var flushDue: Bool { !unsavedTyping.isEmpty && Date().timeIntervalSince(lastFlush) >= 1 }

    func process(_ commands: [Command]) -> [Event] {
        processor.handle(
            commands, isWrite: Self.isWrite, write: write, read: read,
            // Typing state that waited rides along with any write transaction.
            inTransaction: { db in
                if !self.unsavedTyping.isEmpty { try db.saveTyping(Array(self.unsavedTyping.values)) }
            },
            forceWrite: flushDue,
            afterCommit: {
                self.unsavedTyping.removeAll()
                self.lastFlush = Date()
            }
        )
    }

    /// A typing event: checked against membership (a read, never a write),
    /// published at once, its state kept for the next write.
    func typing(_ command: Command) -> [Event] {
        guard let identity = try? JSONDecoder().decode(Identity.self, from: Data(command.user)),
            let request = try? processor.body(Requests.TypingSet.self, command), let sender = ConnectionRef(request.connection) else {
            return [.reply(to: command, error: .detail(.badRequest, "Malformed typing command."))]
        }
        do {
            try processor.database.read { db in
                let room = try db.requireRoom(request.roomID, user: identity.id)
                guard room.isActive else { throw StoreError.badRequest(error: "This room is no longer active") }
            }
        } catch let error as StoreError {
            return [.reply(to: command, error: ReplyError(error))]
        } catch {
            return [.reply(to: command, error: .storageUnavailable)]
        }
        let state = Store.TypingState(roomID: request.roomID, userID: identity.id, isTyping: request.isTyping, lastSeen: .now())
        unsavedTyping["\(request.roomID)|\(identity.id)"] = state
        // The sender's own connection is excluded by the key.
        return [
            Event.room(request.roomID, key: .except(sender),
                       body: ClientJSON.presenceEvent("typing", user: identity.user, isTyping: request.isTyping)),
            .reply(to: command, status: .ok, body: []),
        ]
    }

    /// A frontend slot's new process closes what its predecessor left open.
    func reset(_ command: Command) -> Event {
        guard let request = try? processor.body(Requests.SessionReset.self, command) else {
            return .reply(to: command, error: .detail(.badRequest, "Malformed session reset."))
        }
        do {
            let closed = try processor.database.write { try $0.resetSessions(frontend: request.frontend, alsoBare: request.bareSlot, before: request.startedAt) }
            if closed > 0 { processor.logger.info("closed sessions a previous frontend left open", metadata: ["frontend": "\(request.frontend)", "sessions": "\(closed)"]) }
            return .reply(to: command, status: .ok, body: [])
        } catch {
            return .reply(to: command, error: .storageUnavailable)
        }
    }

    func write(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> [Event] {
        let user = identity.id
        switch command.kind {
        case .receiptRoom:
            let count = try db.markRoomRead(try processor.body(Requests.RoomRef.self, command).roomID, user: user)
            var w = JSONWriter(capacity: 48)
            w.beginObject(); w.field("status", "marked as read"); w.field("count", Int64(count)); w.endObject()
            return [.reply(to: command, status: .ok, body: w.bytes)]
        case .receiptMessage:
            let already = try db.markMessageRead(try processor.body(Requests.MessageRef.self, command), user: user)
            var w = JSONWriter(capacity: 64)
            w.beginObject(); w.field("status", "marked as read"); w.field("was_already_read", already); w.endObject()
            return [.reply(to: command, status: .ok, body: w.bytes)]
        case .sessionOpen:
            let session = try processor.body(Requests.Session.self, command)
            try db.openSession(session, user: user)
            return [
                Event.room(session.roomID, key: .session(id: session.sessionID, change: .joined), body: ClientJSON.presenceEvent("user_joined", user: identity.user)),
                .reply(to: command, status: .ok, body: []),
            ]
        case .sessionPing:
            try db.pingSession(try processor.body(Requests.Session.self, command).sessionID, user: user)
            return [.reply(to: command, status: .ok, body: [])]
        case .sessionClose:
            let session = try processor.body(Requests.Session.self, command)
            try db.closeSession(session.sessionID, user: user)
            return [
                Event.room(session.roomID, key: .session(id: session.sessionID, change: .left), body: ClientJSON.presenceEvent("user_left", user: identity.user)),
                .reply(to: command, status: .ok, body: []),
            ]
        case .sessionCleanup:
            let cutoff = Timestamp(micros: Timestamp.now().micros - 24 * 3600 * 1_000_000)
            let deleted = try db.cleanupSessions(user: user, before: cutoff)
            var w = JSONWriter(capacity: 64)
            w.beginObject(); w.field("status", "cleanup completed"); w.field("deleted_sessions", Int64(deleted)); w.endObject()
            return [.reply(to: command, status: .ok, body: w.bytes)]
        default:
            throw StoreError(code: .badRequest, detail: "Not a receipts command: \(command.kind.rawValue)")
        }
    }

    func read(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> [Event] {
        switch command.kind {
        case .typingList:
            let roomID = try processor.body(Requests.RoomRef.self, command).roomID
            let since = Timestamp(micros: Timestamp.now().micros - Int64(config.typingWindowSeconds * 1_000_000))
            // Typing state still in memory is newer than the database's.
            var entries: [String: (user: User, lastSeen: Timestamp)] = [:]
            for (user, lastSeen) in try db.typingUsers(roomID, viewer: identity.id, since: since) { entries[user.id] = (user, lastSeen) }
            for state in unsavedTyping.values where state.roomID == roomID && state.userID != identity.id {
                if state.isTyping && state.lastSeen >= since {
                    if let known = entries[state.userID] { entries[state.userID] = (known.user, state.lastSeen) }
                    else if let user = try db.user(id: state.userID) { entries[state.userID] = (user, state.lastSeen) }
                } else {
                    entries[state.userID] = nil
                }
            }
            let items = entries.values.sorted { $0.lastSeen > $1.lastSeen }.map { ClientJSON.typingEntry(room: roomID, user: $0.user, lastSeen: $0.lastSeen) }
            return [.reply(to: command, status: .ok, body: ClientJSON.array(items))]
        case .sessionActive:
            let items = try db.activeSessions(user: identity.id).map {
                ClientJSON.session(id: $0.sessionID, type: $0.sessionType, isActive: $0.isActive, lastPing: $0.lastPing, connectedAt: $0.connectedAt, userAgent: $0.userAgent, ipAddress: $0.ipAddress)
            }
            return [.reply(to: command, status: .ok, body: ClientJSON.array(items))]
        default:
            throw StoreError(code: .badRequest, detail: "Not a receipts read: \(command.kind.rawValue)")
        }
    }
}
