import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// A connection of the pool, used by one thread at a time.
///
/// postgres-nio runs a connection's statements one after another, in the
/// order they were sent. A statement whose answer nothing needs (BEGIN, a
/// savepoint) is `send`: the worker's thread does not wait for it, and the
/// event loop starts the next statement as soon as it ends, without a
/// round trip through the blocked thread (on a loaded machine each such
/// wake-up costs milliseconds). Its error is not lost: the next statement
/// waited for throws it first (`settle`).
final class PooledConnection: @unchecked Sendable {
    let connection: PostgresConnection
    let logger: Logger
    /// Failed in a way that leaves its state unknown: closed, not reused.
    var broken = false
    /// Names of the prepared statements that have run here once (`execute`).
    private var prepared: Set<String> = []
    /// Statements sent and not yet waited for, oldest first.
    private var unawaited: [EventLoopFuture<PostgresQueryResult>] = []
    /// Runs the prepared statements' async calls on this connection's event loop (`execute`).
    private lazy var executor = EventLoopExecutor(connection.eventLoop)

    init(_ connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    /// Runs one statement with its parameters and returns its rows and the
    /// count of rows it changed, in one round trip: the extended protocol's
    /// parse, bind and execute of the unnamed statement, the parameters
    /// typed by their values. The hot statements are prepared once per
    /// connection instead (`execute`).
    @discardableResult
    func query(_ sql: String, _ values: [PostgresValue] = []) throws -> (rows: [PostgresRandomAccessRow], changed: Int) {
        let future = start(sql, values)
        try settle()
        let result = try wait(future)
        var rows: [PostgresRandomAccessRow] = []
        for row in result { rows.append(row.makeRandomAccess()) }
        return (rows, result.metadata.rows ?? 0)
    }

    /// Sends a statement without waiting for it (see the type's comment).
    func send(_ sql: String) {
        unawaited.append(start(sql, []))
    }

    /// Waits for the statements sent without waiting; throws the first one's error.
    func settle() throws {
        guard !unawaited.isEmpty else { return }
        let sent = unawaited
        unawaited.removeAll()
        var first: (any Error)?
        for future in sent {
            do { _ = try wait(future) } catch { first = first ?? error }
        }
        if let first { throw first }
    }

    /// COMMIT, after what was sent: PostgreSQL answers a COMMIT of a
    /// transaction that an earlier error aborted with ROLLBACK, not an error.
    func commit() throws {
        let future = start("COMMIT", [])
        try settle()
        let result = try wait(future)
        guard result.metadata.command == "COMMIT" else { throw PostgresEngineError("the transaction was rolled back (\(result.metadata.command))") }
    }

    /// Ends a failed transaction: what was sent is waited for (its errors
    /// were already reported or are the same failure), then ROLLBACK.
    func rollback() throws {
        try? settle()
        try query("ROLLBACK")
    }

    /// Executes a statement prepared once per connection (postgres-nio
    /// parses it on its first use and keeps it by `Statement.name`), and
    /// returns its rows. A preparation that failed stays failed on the
    /// connection (postgres-nio keeps the error), so an error before the
    /// statement first succeeded here closes the connection once its
    /// transaction ends; a later one (a deadlock, a lock timeout, which the
    /// retry reruns) leaves it open: reconnecting and preparing everything
    /// again under contention would only add to it.
    func execute<Statement: PreparedStatement>(_ statement: Statement) throws -> [PostgresRandomAccessRow] {
        let promise = connection.eventLoop.makePromise(of: [PostgresRandomAccessRow].self)
        let (connection, logger) = (self.connection, self.logger)
        Task(executorPreference: executor) {
            do {
                var rows: [PostgresRandomAccessRow] = []
                for try await row in try await connection.execute(statement, logger: logger) { rows.append(row) }
                promise.succeed(rows)
            } catch {
                promise.fail(error)
            }
        }
        do {
            try settle()
            let rows = try wait(promise.futureResult)
            prepared.insert(Statement.name)
            return rows
        } catch {
            if !prepared.contains(Statement.name) { broken = true }
            throw error
        }
    }

    private func start(_ sql: String, _ values: [PostgresValue]) -> EventLoopFuture<PostgresQueryResult> {
        var binds = PostgresBindings(capacity: values.count)
        for value in values { value.append(to: &binds) }
        return connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger)
    }

    private func wait<T: Sendable>(_ future: EventLoopFuture<T>) throws -> T {
        do {
            return try future.wait()
        } catch let error as PSQLError where error.serverInfo == nil {
            // No answer from the server: the connection is gone or confused.
            broken = true
            throw error
        }
    }

    func run(_ sql: String) throws { try query(sql) }
}

/// A statement prepared once per connection: its SQL and parameter types
/// are fixed (the types declared, so a NULL first value types nothing),
/// its values bound per call; rows come back as `query`'s do.
protocol PreparedStatement: PostgresPreparedStatement where Row == PostgresRandomAccessRow {
    var values: [PostgresValue] { get }
}

extension PreparedStatement {
    func makeBindings() throws -> PostgresBindings {
        var binds = PostgresBindings(capacity: values.count)
        for value in values { value.append(to: &binds) }
        return binds
    }

    func decodeRow(_ row: PostgresRow) throws -> PostgresRandomAccessRow { row.makeRandomAccess() }
}

/// Runs tasks on one event loop. A worker's thread blocks on a prepared
/// statement's result; the async call that produces it must not need a
/// thread of Swift's cooperative pool, which the blocked worker may be
/// occupying (on one core the pool has one thread).
final class EventLoopExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        loop.execute { job.runSynchronously(on: executor) }
    }
}

/// A value bound to a statement's `$n`.
enum PostgresValue {
    case text(String?)
    case int(Int64?)
    case bool(Bool)
    case texts([String])
    case ints([Int64])

    func append(to binds: inout PostgresBindings) {
        switch self {
        case .text(let value?): binds.append(value)
        case .int(let value?): binds.append(value)
        case .bool(let value): binds.append(value)
        case .texts(let values): binds.append(values)
        case .ints(let values): binds.append(values)
        case .text(nil), .int(nil): binds.appendNull()
        }
    }
}

extension PostgresValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    init(stringLiteral value: String) { self = .text(value) }
    init(integerLiteral value: Int64) { self = .int(value) }
    init(booleanLiteral value: Bool) { self = .bool(value) }
}

/// At most `size` connections, opened when first needed. A caller that
/// finds them all in use waits for one (a worker's thread holds one for a
/// transaction at a time, so it waits only on another thread of its process).
final class PostgresPool: @unchecked Sendable {
    let settings: PostgresSettings
    let size: Int
    let logger: Logger
    private let idle = Mutex<[PooledConnection]>([])
    private let slots: DispatchSemaphore
    private let nextID = Atomic<Int>(1)

    init(settings: PostgresSettings, size: Int, logger: Logger) {
        (self.settings, self.size, self.logger) = (settings, max(1, size), logger)
        slots = DispatchSemaphore(value: max(1, size))
    }

    func withConnection<T>(_ body: (PooledConnection) throws -> T) throws -> T {
        slots.wait()
        defer { slots.signal() }
        let connection = try reusable() ?? open()
        defer {
            if connection.broken {
                Self.close(connection)
            } else {
                idle.withLock { $0.append(connection) }
            }
        }
        return try body(connection)
    }

    /// An idle connection that is still open; one the server or the
    /// network closed meanwhile (a restart, an idle timeout) is dropped, so
    /// a batch does not fail on it.
    private func reusable() -> PooledConnection? {
        while let connection = idle.withLock({ $0.popLast() }) {
            if !connection.connection.isClosed { return connection }
            Self.close(connection)
        }
        return nil
    }

    private func open() throws -> PooledConnection {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let connection = try PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.next(), configuration: settings.configuration, id: id, logger: logger
        ).wait()
        let pooled = PooledConnection(connection, logger: logger)
        // Integer microseconds everywhere; nothing depends on the session's zone or encoding beyond UTF-8.
        try pooled.run("SET client_encoding = 'UTF8'")
        // A lock held longer than this (its holder stuck or gone unnoticed)
        // fails the batch (storage unavailable; the frontend resends) well
        // inside the frontend's 10 s deadline and the supervisor's 10 s
        // heartbeat limit, instead of hanging the worker until it is killed.
        try pooled.run("SET lock_timeout = '4s'")
        return pooled
    }

    /// Closes and waits: postgres-nio requires a connection closed before it is released.
    static func close(_ connection: PooledConnection) {
        let future: EventLoopFuture<Void> = connection.connection.close()
        try? future.wait()
    }

    func closeAll() {
        for connection in idle.withLock({ list in defer { list.removeAll() }; return list }) {
            Self.close(connection)
        }
    }
}

extension PostgresRandomAccessRow {
    /// The column `name`, decoded (an optional type reads NULL as nil).
    func get<T: PostgresDecodable>(_ name: String, as type: T.Type = T.self) throws -> T {
        try self[name].decode(T.self)
    }
}
