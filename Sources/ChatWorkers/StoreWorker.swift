import ChatBus
import ChatConfig
import ChatCore
import ChatStore
import ChatWire
import Foundation
import GRDB
import Logging

/// The `store` role: rooms, participants, messages, users. One worker per
/// shard; all writes of a room arrive at the same shard, in order.
///
/// Commands come in batches (whatever was waiting). All writes of a batch run
/// in one transaction, each in its own savepoint so one refusal does not undo
/// the others; events and replies are published only after the commit.
public final class StoreWorker {
    let database: ChatDatabase
    let config: ChatConfig
    let logger: Logger
    /// Users already provisioned by this process, by the exact claims bytes.
    var knownUsers: [[UInt8]: Identity] = [:]
    let decoder = JSONDecoder()

    public init(database: ChatDatabase, config: ChatConfig, logger: Logger) {
        self.database = database
        self.config = config
        self.logger = logger
    }

    static func isWrite(_ kind: CommandKind) -> Bool {
        switch kind {
        case .roomCreate, .roomEnter, .messageCreate: true
        case .roomList, .roomGet, .messageList: false
        }
    }

    /// Turns a batch of commands into the events to publish, in order.
    public func handle(_ batch: [Command]) -> [Event] {
        var events: [Event] = []
        var identities: [Int: Identity] = [:]
        var newUsers: [[UInt8]: Identity] = [:]
        for (index, command) in batch.enumerated() {
            if let known = knownUsers[command.user] {
                identities[index] = known
            } else if let identity = try? decoder.decode(Identity.self, from: Data(command.user)) {
                identities[index] = identity
                newUsers[command.user] = identity
            } else {
                events.append(.reply(to: command, status: .badRequest, body: ClientJSON.detail("Missing or malformed user identity.")))
            }
        }
        let writes = batch.indices.filter { identities[$0] != nil && Self.isWrite(batch[$0].kind) }
        let reads = batch.indices.filter { identities[$0] != nil && !Self.isWrite(batch[$0].kind) }

        if !writes.isEmpty || !newUsers.isEmpty {
            var pending: [Event] = []
            do {
                try database.pool.write { db in
                    for identity in newUsers.values { try Store.upsert(identity, in: db) }
                    for index in writes {
                        let command = batch[index]
                        do {
                            try db.inSavepoint {
                                pending += try self.write(command, identity: identities[index]!, in: db)
                                return .commit
                            }
                        } catch let error as StoreError {
                            pending.append(.reply(to: command, status: Self.status(error.code), body: error.body))
                        }
                    }
                }
                events += pending
                for (bytes, identity) in newUsers { knownUsers[bytes] = identity }
                // Bounded: a long-lived worker sees many users; forgetting only costs an upsert.
                if knownUsers.count > 100_000 { knownUsers.removeAll() }
            } catch {
                logger.error("write batch failed", metadata: ["error": "\(error)", "commands": "\(writes.count)"])
                for index in writes {
                    events.append(.reply(to: batch[index], status: .unavailable, body: ClientJSON.detail("Storage is unavailable, try again.")))
                }
            }
        }

        if !reads.isEmpty {
            do {
                try database.pool.read { db in
                    for index in reads {
                        let command = batch[index]
                        do {
                            events.append(try self.read(command, identity: identities[index]!, in: db))
                        } catch let error as StoreError {
                            events.append(.reply(to: command, status: Self.status(error.code), body: error.body))
                        }
                    }
                }
            } catch {
                logger.error("read batch failed", metadata: ["error": "\(error)"])
                for index in reads {
                    events.append(.reply(to: batch[index], status: .unavailable, body: ClientJSON.detail("Storage is unavailable, try again.")))
                }
            }
        }
        return events
    }

    static func status(_ code: StoreError.Code) -> Status {
        switch code {
        case .badRequest: .badRequest
        case .forbidden: .forbidden
        case .notFound: .notFound
        }
    }

    func body<T: Decodable>(_ type: T.Type, _ command: Command) throws -> T {
        do {
            return try decoder.decode(type, from: Data(command.body))
        } catch {
            throw StoreError(code: .badRequest, body: ClientJSON.detail("Malformed command body."))
        }
    }

    func write(_ command: Command, identity: Identity, in db: Database) throws -> [Event] {
        switch command.kind {
        case .messageCreate:
            let request = try body(Requests.MessageCreate.self, command)
            switch try Store.createMessage(request, sender: identity.user, maxChars: config.maxMessageChars, in: db) {
            case .created(let message), .resent(let message):
                // A resent command re-publishes: the first publication may
                // have died with the previous worker. Frontends drop the
                // second copy by its key.
                let json = ClientJSON.encode(message)
                return [
                    Event(topic: Topic.room(message.roomID), kind: .roomEvent, key: message.id, body: ClientJSON.messageEvent(json)),
                    .reply(to: command, status: .created, body: json),
                ]
            case .duplicate(let original):
                return [.reply(to: command, status: .ok, body: ClientJSON.encode(original))]
            }
        case .roomCreate:
            let request = try body(Requests.RoomCreate.self, command)
            let room = try Store.createRoom(request, creator: identity.id, in: db)
            return [.reply(to: command, status: .created, body: ClientJSON.encode(room))]
        case .roomEnter:
            let request = try body(Requests.RoomRef.self, command)
            try Store.enter(room: request.roomID, user: identity.id, in: db)
            return [.reply(to: command, status: .ok, body: [])]
        case .roomList, .roomGet, .messageList:
            preconditionFailure("reads are not written")
        }
    }

    func read(_ command: Command, identity: Identity, in db: Database) throws -> Event {
        switch command.kind {
        case .roomList:
            let request = try body(Requests.RoomList.self, command)
            let (count, rooms) = try Store.roomPage(request, viewer: identity.id, in: db)
            let links = Pagination.links(request.page, count: count)
            return .reply(to: command, status: .ok, body: ClientJSON.page(count: count, next: links.next, previous: links.previous, results: rooms.map(ClientJSON.encode)))
        case .roomGet:
            let request = try body(Requests.RoomRef.self, command)
            return .reply(to: command, status: .ok, body: ClientJSON.encode(try Store.room(request.roomID, viewer: identity.id, in: db)))
        case .messageList:
            let request = try body(Requests.MessageList.self, command)
            let (count, messages) = try Store.messagePage(request, viewer: identity.id, in: db)
            let links = Pagination.links(request.page, count: count)
            return .reply(to: command, status: .ok, body: ClientJSON.page(count: count, next: links.next, previous: links.previous, results: messages.map(ClientJSON.encode)))
        case .roomCreate, .roomEnter, .messageCreate:
            preconditionFailure("writes are not read")
        }
    }
}
