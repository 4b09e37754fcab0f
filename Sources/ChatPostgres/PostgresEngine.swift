import ChatStore
import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// PostgreSQL as a `StoreEngine`, through postgres-nio.
///
/// Workers are synchronous: `BusServer` runs their handler on its bus
/// thread, never on an event loop, so each statement blocks that thread on
/// its future (`wait()`), which NIO allows off its event loops. The event
/// loop group is NIO's shared one; the connections are this engine's own
/// small pool, opened on first use and kept.
public final class PostgresEngine: StoreEngine, @unchecked Sendable {
    public let settings: PostgresSettings
    let pool: PostgresPool
    let logger: Logger

    /// Connects lazily; `migrate()` first where the schema may be behind
    /// (the supervisor and `chatd migrate` do, the workers need not).
    /// - Parameter poolSize: connections at most. A worker runs one
    ///   transaction at a time (2 leaves one for the search worker's index
    ///   pass beside a read); tests with threads pass more.
    public init(url: String, poolSize: Int = 2, logger: Logger = Logger(label: "chatd.postgres")) throws {
        settings = try PostgresSettings(url: url)
        self.logger = logger
        pool = PostgresPool(settings: settings, size: poolSize, logger: logger)
    }

    deinit { pool.closeAll() }

    /// Creates or upgrades the schema (`PostgresMigrations`).
    public func migrate() throws {
        try pool.withConnection { try PostgresMigrations.migrate($0, logger: logger) }
    }

    public func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try PostgresRetry.run(logger: logger) { try transaction(begin: Self.beginWrite, body) }
    }

    public func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try transaction(begin: Self.beginRead, body)
    }

    /// Read committed (the default): each statement sees what committed
    /// before it; the room's row lock orders a room's writers.
    static let beginWrite = "BEGIN"
    /// Repeatable read: every statement of a batch's reads sees one snapshot, as SQLite's read transaction does.
    static let beginRead = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    func transaction<T>(begin: String, _ body: (PostgresTransaction) throws -> T) throws -> T {
        try pool.withConnection { connection in
            // Not waited for: its error, if any, comes with the first statement that is.
            connection.send(begin)
            do {
                let result = try body(PostgresTransaction(connection))
                try connection.commit()
                return result
            } catch {
                // A connection that cannot roll back is closed, not reused.
                do { try connection.rollback() } catch { connection.broken = true }
                throw error
            }
        }
    }

    /// A unique (23505), foreign key (23503) or check (23514) violation, or
    /// text PostgreSQL cannot hold (22021: a NUL character, which SQLite
    /// stores): the command is refused (400), the batch goes on.
    public func isConflict(_ error: any Error) -> Bool {
        guard let code = (error as? PSQLError)?.serverInfo?[.sqlState] else { return false }
        return ["23505", "23503", "23514", "22021"].contains(code)
    }

    public func makeSearchIndex(indexPath: String) throws -> any MessageSearchIndex {
        PostgresSearchIndex(engine: self)
    }

    /// A message is a round trip here, not a function call: 64 keeps a
    /// batch to a fraction of a second even on a loaded machine (at 512 a
    /// burst's first batch, at several round trips a message, outlasted the
    /// 10 s deadline under the soak test). Also a ceiling: each command
    /// opens a savepoint that is never released (`PostgresTransaction`),
    /// nested in the ones before, and PostgreSQL caches 64 subtransactions
    /// per backend; past that every session pays pg_subtrans lookups. Raise
    /// it only with RELEASE after each command.
    public var maxBatch: Int { 64 }

    public func warmUp() throws {
        try pool.withConnection { try $0.run("SELECT 1") }
    }
}

/// Where and as whom to connect, from `postgres://user:password@host:port/database`.
public struct PostgresSettings: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String

    public init(url: String) throws {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
            let host = components.host, !host.isEmpty else {
            throw PostgresEngineError("not a postgres:// URL (postgres://user:password@host:port/database)")
        }
        self.host = host
        port = components.port ?? 5432
        user = components.user.flatMap { $0.removingPercentEncoding } ?? "postgres"
        password = components.password.flatMap { $0.removingPercentEncoding }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        database = path.isEmpty ? user : path
    }

    /// TLS is not configured here: the database is on a private network (docs/operations.md).
    var configuration: PostgresConnection.Configuration {
        PostgresConnection.Configuration(host: host, port: port, username: user, password: password, database: database, tls: .disable)
    }
}

public struct PostgresEngineError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
