import ChatConfig
import ChatPostgres
import ChatStore
import ChatWire
import ChatWorkers
import Logging

/// The database the configuration names: PostgreSQL when `database` is set,
/// else the SQLite file in `dataDir`.
enum StoreEngines {
    /// Opens it, migrated when `migrate` (the supervisor and `chatd migrate`
    /// migrate once; the workers find the schema current).
    static func open(_ config: ChatConfig, migrate: Bool, logger: Logger) throws -> any StoreEngine {
        guard let url = config.database else { return try ChatDatabase(path: config.databasePath) }
        let engine = try PostgresEngine(url: url, logger: logger)
        if migrate { try engine.migrate() }
        return engine
    }
}

/// The PostgreSQL lock as the workers' `ShardLock` (the two modules do not
/// know each other).
private final class PostgresOwnerLock: ShardLock {
    let lock: PostgresShardLock
    init(_ lock: PostgresShardLock) { self.lock = lock }
    func tryLock(shard: Int) -> Bool { lock.tryLock(shard: shard) }
    func isAlive() -> Bool { lock.isAlive() }
}

extension StoreEngines {
    /// The shard owner a store worker of a `run: workers` host needs with
    /// PostgreSQL (several such hosts may each run `store.<n>`; only the
    /// lock's holder serves it). Nil with SQLite (one workers host, its file)
    /// and on a `run: all` host (it is the only one serving its broker: a
    /// handover there must not wait for a lock).
    static func shardOwner(_ config: ChatConfig, role: Role, logger: Logger) throws -> ShardOwner? {
        guard role == .store, config.run == .workers, let url = config.database else { return nil }
        return ShardOwner(lock: PostgresOwnerLock(PostgresShardLock(settings: try PostgresSettings(url: url), logger: logger)), logger: logger)
    }
}
