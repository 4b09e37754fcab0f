import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// A connection of the pool, used by one thread at a time.
final class PooledConnection: @unchecked Sendable {
    let connection: PostgresConnection
    let logger: Logger
    /// Failed in a way that leaves its state unknown: closed, not reused.
    var broken = false

    init(_ connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    /// Runs one statement with its parameters and returns its rows and the
    /// count of rows it changed, in one round trip: the extended protocol's
    /// parse, bind and execute of the unnamed statement, the parameters
    /// typed by their values.
    ///
    /// Not prepared once per connection: `EXECUTE` of a `PREPARE`d
    /// statement takes no protocol parameters (a utility statement), and
    /// postgres-nio's named preparation (`PreparedQuery`) returns no command
    /// tag, which the counts of changed rows come from. PostgreSQL still
    /// parses and plans each call; that cost is in the statement count.
    @discardableResult
    func query(_ sql: String, _ values: [PostgresValue] = []) throws -> (rows: [PostgresRandomAccessRow], changed: Int) {
        try send(sql, values)
    }

    private func send(_ sql: String, _ values: [PostgresValue]) throws -> (rows: [PostgresRandomAccessRow], changed: Int) {
        var binds = PostgresBindings(capacity: values.count)
        for value in values { value.append(to: &binds) }
        do {
            let result = try connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger).wait()
            var rows: [PostgresRandomAccessRow] = []
            for row in result { rows.append(row.makeRandomAccess()) }
            return (rows, result.metadata.rows ?? 0)
        } catch let error as PSQLError where error.serverInfo == nil {
            // No answer from the server: the connection is gone or confused.
            broken = true
            throw error
        }
    }

    func run(_ sql: String) throws { try query(sql) }
}

/// A value bound to a statement's `$n`.
enum PostgresValue {
    case text(String?)
    case int(Int64?)
    case bool(Bool)
    case texts([String])
    case ints([Int64])

    /// The parameter's type as PREPARE declares it.
    var typeName: String {
        switch self {
        case .text: "text"
        case .int: "int8"
        case .bool: "bool"
        case .texts: "text[]"
        case .ints: "int8[]"
        }
    }

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
        let connection = try idle.withLock { $0.popLast() } ?? open()
        defer {
            if connection.broken {
                Self.close(connection)
            } else {
                idle.withLock { $0.append(connection) }
            }
        }
        return try body(connection)
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
