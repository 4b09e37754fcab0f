import ChatBus
import ChatConfig
import ChatStore
import ChatWire
import Foundation
import Logging

/// Each role's worker, as the loop `BusServer` runs.
public enum WorkerLoops {
    public static func loop(_ role: Role, database: any StoreEngine, config: ChatConfig, logger: Logger) throws -> BusServer.WorkerLoop {
        switch role {
        case .store:
            let worker = StoreWorker(database: database, config: config, logger: logger)
            return BusServer.WorkerLoop(maxBatch: database.maxBatch, nudge: Topic.searchNudge, handle: worker.handle)
        case .receipts:
            let worker = ReceiptsWorker(database: database, config: config, logger: logger)
            return BusServer.WorkerLoop(maxBatch: database.maxBatch, idle: worker.idle, handle: worker.handle)
        case .search:
            // Indexing is background work: on a busy machine it yields the CPU
            // to the frontend and the store, and catches up when load drops.
            setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
            let worker = try SearchWorker(database: database, indexPath: config.searchIndexPath, logger: logger)
            return BusServer.WorkerLoop(
                wakeOn: Topic.searchNudge,
                // While behind (a rebuild), keep indexing between commands.
                idleInterval: { worker.behind ? 0 : 500 }, idle: worker.wake, handle: worker.handle
            )
        case .files:
            let worker = FilesWorker(database: database, config: config, logger: logger)
            // A batch's replies are all built before the first is sent: 16
            // `file.read`s of 256 KiB hold 4 MiB, not the 128 MiB of 512.
            return BusServer.WorkerLoop(maxBatch: 16, idle: worker.idle, handle: worker.handle)
        case .webhooks:
            let worker = WebhooksWorker(database: database, config: config, logger: logger)
            // Woken by the store's nudge after each batch that wrote: a new
            // delivery goes out within milliseconds, not at the next poll.
            return BusServer.WorkerLoop(wakeOn: Topic.searchNudge, idleInterval: { 100 }, idle: worker.tick, handle: worker.handle)
        }
    }

    /// What a standby does ahead of need, without writing: opens a reader
    /// connection of the database pool (the writer's was opened to migrate)
    /// and loads the schema into it, so its first batch does not pay for
    /// that. The search index is not opened: the serving search worker
    /// writes it, and opening it may migrate or rebuild it.
    public static func warmUp(_ role: Role, database: any StoreEngine, logger: Logger) {
        do {
            try database.warmUp()
        } catch {
            logger.warning("standby warm-up failed", metadata: ["error": "\(error)"])
        }
    }
}
