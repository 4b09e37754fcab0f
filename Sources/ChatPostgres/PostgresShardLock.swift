import Logging
import NIOCore
import NIOPosix
import PostgresNIO

/// A store shard's owner lock: `pg_try_advisory_lock(<chatd>, shard)` on a
/// connection of its own, outside the pool (a pooled connection is closed
/// and replaced when it breaks; this one's end is what releases the lock,
/// and its holder must hear of it). The lock lives as long as the session:
/// PostgreSQL releases it when this process exits or the session ends.
public final class PostgresShardLock: @unchecked Sendable {
    /// The two-key form's first key: "chat" (the one-key locks of the
    /// migrations and the search index are another key space).
    static let key: Int64 = 0x6368_6174
    private let settings: PostgresSettings
    private let logger: Logger
    private var connection: PooledConnection?
    private var holds = false

    public init(settings: PostgresSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    deinit {
        if let connection { PostgresPool.close(connection) }
    }

    /// Takes the lock if no other session holds it; connects first if needed.
    /// False also when the database cannot be reached (the connection is
    /// dropped and made again on the next try).
    public func tryLock(shard: Int) -> Bool {
        do {
            let connection = try self.connection ?? open()
            self.connection = connection
            let rows = try connection.query("SELECT pg_try_advisory_lock($1::int4, $2::int4) AS held", [.int(Self.key), .int(Int64(shard))]).rows
            holds = try rows.first?.get("held", as: Bool.self) ?? false
            return holds
        } catch {
            logger.warning("could not try the shard's lock", metadata: ["shard": "\(shard)", "error": "\(String(reflecting: error))"])
            drop()
            return false
        }
    }

    /// Whether the session holding the lock still answers. Any failure is
    /// its end: a session that cannot be reached may have been ended by the
    /// server, and the lock with it.
    public func isAlive() -> Bool {
        guard holds, let connection else { return false }
        do {
            try Self.answers(connection.connection, within: .seconds(2), logger: logger)
            return true
        } catch {
            logger.error("the shard lock's session failed", metadata: ["error": "\(String(reflecting: error))"])
            drop()
            return false
        }
    }

    /// `SELECT 1`, failed if no answer came within `limit`: a session the
    /// server terminated (pg_terminate_backend) was seen to leave the query
    /// unanswered for good, which would hang the worker's heartbeat.
    static func answers(_ connection: PostgresConnection, within limit: TimeAmount, logger: Logger) throws {
        let answered = connection.eventLoop.makePromise(of: Void.self)
        connection.query("SELECT 1", logger: logger).whenComplete { result in answered.completeWith(result.map { _ in }) }
        let timeout = connection.eventLoop.scheduleTask(in: limit) {
            answered.fail(PostgresEngineError("no answer within \(limit.nanoseconds / 1_000_000) ms"))
        }
        defer { timeout.cancel() }
        try answered.futureResult.wait()
    }

    private func drop() {
        holds = false
        if let connection { PostgresPool.close(connection) }
        connection = nil
    }

    private func open() throws -> PooledConnection {
        let connection = try PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.next(), configuration: settings.configuration, id: 0, logger: logger
        ).wait()
        return PooledConnection(connection, logger: logger)
    }
}
