import ChatCore
import ChatStore
import ChatWire
import Foundation
import Logging

/// What every worker role shares: it decodes the caller of each command,
/// provisions users just in time, runs all writes of a batch in one
/// transaction (each in its own savepoint, so one refusal undoes only itself)
/// and the reads after it. Events are returned, to be published after commit.
final class BatchProcessor {
    let database: any StoreEngine
    let logger: Logger
    private let decoder = JSONDecoder()
    /// Users already provisioned by this process, by the exact claims bytes.
    private var knownUsers: [[UInt8]: Identity] = [:]

    init(database: any StoreEngine, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    /// The identity of a command without a caller (an incoming webhook's post), never stored.
    static let noCaller = Identity(sub: "00000000-0000-0000-0000-000000000000", email: nil, name: nil, picture: nil)

    typealias Handler = (Command, Identity, any StoreTransaction) throws -> [Event]

    /// - Parameters:
    ///   - inTransaction: runs first in every write transaction (deferred writes ride along).
    ///   - forceWrite: open a write transaction even with no write command (to run `inTransaction`).
    ///   - afterCommit: runs once that transaction committed.
    func handle(
        _ batch: [Command], isWrite: (CommandKind) -> Bool, write: Handler, read: Handler,
        inTransaction: (any StoreTransaction) throws -> Void = { _ in }, forceWrite: Bool = false, afterCommit: () -> Void = {}
    ) -> [Event] {
        var events: [Event] = []
        var identities: [Int: Identity] = [:]
        var newUsers: [[UInt8]: Identity] = [:]
        for (index, command) in batch.enumerated() {
            if let known = knownUsers[command.user] {
                identities[index] = known
            } else if command.user.isEmpty && command.kind.hasNoCaller {
                // An incoming webhook's URL token is the credential; a call sweep is the
                // server's own: no caller, and nobody to provision.
                identities[index] = Self.noCaller
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
            do {
                events += try commit(writes.map { (batch[$0], identities[$0]!) }, newUsers: Array(newUsers.values), write: write, inTransaction: inTransaction)
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
                try database.read { db in
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

    /// A command refused inside a transaction, which rolled back for it.
    private struct Refused: Error {
        var reply: Event
    }

    /// Runs the writes in one transaction and returns their events. With
    /// several, each runs in a savepoint of its own, so that one refusal
    /// undoes only itself. A lone one runs without: a savepoint is two more
    /// statements per command, and a tenth of the store's CPU per message
    /// when messages come one at a time. Its refusal rolls the transaction
    /// back, and what rode along (new users, `inTransaction`) commits again
    /// without it.
    private func commit(
        _ writes: [(Command, Identity)], newUsers: [Identity], write: Handler, inTransaction: (any StoreTransaction) throws -> Void
    ) throws -> [Event] {
        func alongside(_ db: any StoreTransaction) throws {
            try inTransaction(db)
            for identity in newUsers { try db.upsert(identity) }
        }
        if writes.count == 1, let (command, identity) = writes.first {
            do {
                return try database.write { db in
                    try alongside(db)
                    do {
                        return try write(command, identity, db)
                    } catch {
                        guard let reply = refusal(error, of: command) else { throw error }
                        throw Refused(reply: reply)
                    }
                }
            } catch let refused as Refused {
                try database.write { try alongside($0) }
                return [refused.reply]
            }
        }
        return try database.write { db in
            try alongside(db)
            var pending: [Event] = []
            for (command, identity) in writes {
                do {
                    pending += try db.savepoint { try write(command, identity, db) }
                } catch {
                    // One command's refusal undoes its savepoint only; the others of the batch still commit.
                    guard let reply = refusal(error, of: command) else { throw error }
                    pending.append(reply)
                }
            }
            return pending
        }
    }

    /// The reply for a command a domain rule or a constraint refused; nil for
    /// any other error (the whole batch then fails).
    private func refusal(_ error: any Error, of command: Command) -> Event? {
        if let error = error as? StoreError { return .reply(to: command, error: ReplyError(error)) }
        guard database.isConflict(error) else { return nil }
        logger.warning("command refused by a constraint", metadata: ["kind": "\(command.kind.rawValue)", "error": "\(error)"])
        return .reply(to: command, error: .detail(.badRequest, "The request conflicts with stored data."))
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
