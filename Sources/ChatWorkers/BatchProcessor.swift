import ChatCore
import ChatStore
import ChatWire
import Foundation
import GRDB
import Logging

/// What every worker role shares: it decodes the caller of each command,
/// provisions users just in time, runs all writes of a batch in one
/// transaction (each in its own savepoint, so one refusal undoes only itself)
/// and the reads after it. Events are returned, to be published after commit.
final class BatchProcessor {
    let database: ChatDatabase
    let logger: Logger
    private let decoder = JSONDecoder()
    /// Users already provisioned by this process, by the exact claims bytes.
    private var knownUsers: [[UInt8]: Identity] = [:]

    init(database: ChatDatabase, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    typealias Handler = (Command, Identity, Database) throws -> [Event]

    /// - Parameters:
    ///   - inTransaction: runs first in every write transaction (deferred writes ride along).
    ///   - forceWrite: open a write transaction even with no write command (to run `inTransaction`).
    ///   - afterCommit: runs once that transaction committed.
    func handle(
        _ batch: [Command], isWrite: (CommandKind) -> Bool, write: Handler, read: Handler,
        inTransaction: (Database) throws -> Void = { _ in }, forceWrite: Bool = false, afterCommit: () -> Void = {}
    ) -> [Event] {
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
                events.append(.reply(to: command, error: .detail(.badRequest, "Missing or malformed user identity.")))
            }
        }
        let writes = batch.indices.filter { identities[$0] != nil && isWrite(batch[$0].kind) }
        let reads = batch.indices.filter { identities[$0] != nil && !isWrite(batch[$0].kind) }

        if !writes.isEmpty || !newUsers.isEmpty || forceWrite {
            var pending: [Event] = []
            do {
                try database.pool.write { db in
                    try inTransaction(db)
                    for identity in newUsers.values { try Store.upsert(identity, in: db) }
                    for index in writes {
                        let command = batch[index]
                        do {
                            try db.inSavepoint {
                                pending += try write(command, identities[index]!, db)
                                return .commit
                            }
                        } catch let error as StoreError {
                            pending.append(.reply(to: command, error: ReplyError(error)))
                        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
                            // One command's conflict undoes its savepoint only;
                            // the others of the batch still commit.
                            logger.warning("command refused by a constraint", metadata: ["kind": "\(command.kind.rawValue)", "error": "\(error)"])
                            pending.append(.reply(to: command, error: .detail(.badRequest, "The request conflicts with stored data.")))
                        }
                    }
                }
                events += pending
                afterCommit()
                for (bytes, identity) in newUsers { knownUsers[bytes] = identity }
                // Bounded: forgetting a user only costs one more upsert.
                if knownUsers.count > 100_000 { knownUsers.removeAll() }
            } catch {
                logger.error("write batch failed", metadata: ["error": "\(error)", "commands": "\(writes.count)"])
                for index in writes {
                    events.append(.reply(to: batch[index], error: .storageUnavailable))
                }
            }
        }

        if !reads.isEmpty {
            do {
                try database.pool.read { db in
                    for index in reads {
                        let command = batch[index]
                        do {
                            events += try read(command, identities[index]!, db)
                        } catch let error as StoreError {
                            events.append(.reply(to: command, error: ReplyError(error)))
                        }
                    }
                }
            } catch {
                logger.error("read batch failed", metadata: ["error": "\(error)"])
                for index in reads {
                    events.append(.reply(to: batch[index], error: .storageUnavailable))
                }
            }
        }
        return events
    }

    /// A command's body, or a 400 when it does not decode.
    func body<T: Decodable>(_ type: T.Type, _ command: Command) throws -> T {
        do {
            return try decoder.decode(type, from: Data(command.body))
        } catch {
            throw StoreError(code: .badRequest, detail: "Malformed command body.")
        }
    }
}

extension ReplyError {
    /// A store refusal as it crosses the bus: the same problems, the code as a status.
    init(_ error: StoreError) {
        let status: Status = switch error.code {
        case .badRequest: .badRequest
        case .forbidden: .forbidden
        case .notFound: .notFound
        }
        self.init(status, error.problems.map { problem -> Problem in
            switch problem {
            case .detail(let message): .detail(message)
            case .error(let message): .error(message)
            case .field(let field, let message): .field(field, message)
            }
        })
    }
}
