import ChatConfig
import ChatPostgres
import ChatStore
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
