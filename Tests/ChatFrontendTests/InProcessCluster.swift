import ChatBus
import ChatConfig
import ChatCore
import ChatStore
import ChatWire
import ChatWorkers
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import ZeroMQ

@testable import ChatFrontend

/// Room events as the bus client handed them over.
final class EventLog: Sendable {
    let events = Mutex<[RoomEvent]>([])
}

/// Set once, to stop the in-process workers.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}

/// The broker, the workers and the bus client of one `InProcessServer`.
final class Cluster: Sendable {
    let config: FrontendConfig
    let services: FrontendServices
    let auth: Authenticator
    let logger: Logger
    let events: EventLog
    private let broker: Broker
    private let bus: BusClient
    private let stopping: StopFlag
    private let workersDone: DispatchGroup
    /// The bus everything here shares (one context for `inproc://`).
    let context: ZeroMQ.Context
    let address: BusAddress
    /// Bus clients of other frontends (`otherFrontend`), stopped with the cluster.
    private let others = Mutex<[BusClient]>([])

    private init(
        config: FrontendConfig, services: FrontendServices, auth: Authenticator, logger: Logger, events: EventLog,
        broker: Broker, bus: BusClient, stopping: StopFlag, workersDone: DispatchGroup, context: ZeroMQ.Context, address: BusAddress
    ) {
        self.config = config
        self.services = services
        self.auth = auth
        self.logger = logger
        self.events = events
        self.broker = broker
        self.bus = bus
        self.stopping = stopping
        self.workersDone = workersDone
        self.context = context
        self.address = address
    }

    /// The bus client of another frontend on the same broker, started: the
    /// room events it receives are appended to `events`.
    func otherFrontend(events: EventLog, roomLinger: UInt64 = 5_000_000_000) throws -> BusClient {
        let bus = try BusClient(
            frontendID: "fe-other-\(UInt32.random(in: 0...UInt32.max))", bus: address, storeShards: config.storeShards,
            callbacks: .init(roomEvents: { batch in events.events.withLock { $0 += batch } }, heartbeat: { _, _ in }),
            logger: logger, roomLinger: roomLinger, context: context
        )
        bus.start()
        others.withLock { $0.append(bus) }
        return bus
    }

    static func start(storeWorkers: Int, configure: (inout ChatConfig) -> Void) async throws -> Cluster {
        var chat = ChatConfig()
        chat.dataDir = try temporaryDirectory()
        chat.listen = "127.0.0.1:8000"
        chat.jwtSecret = (0..<4).map { _ in String(format: "%016llx", UInt64.random(in: 0...UInt64.max)) }.joined()
        chat.storeWorkers = storeWorkers
        configure(&chat)
        var logger = Logger(label: "chatd.inprocess")
        logger.logLevel = .warning
        // One context for all: inproc endpoints exist only within a context.
        let context = try ZeroMQ.Context()
        let address = BusAddress.inproc(name: "chatd-\(UInt32.random(in: 0...UInt32.max))")
        let queues = (0..<storeWorkers).map { Endpoints.queue(.store, shard: $0) } + [Role.receipts, .search, .files].map { Endpoints.queue($0) }
        let broker = try Broker(bus: address, queues: queues, logger: logger, context: context)
        try broker.start()
        broker.announce(storeShards: storeWorkers)
        // Migrated once, before any worker opens it, as `chatd serve` does.
        _ = try ChatDatabase(path: chat.databasePath)
        let stopping = StopFlag()
        let workersDone = DispatchGroup()
        let workers = (0..<storeWorkers).map { WorkerName(.store, $0) } + [.receipts, .search, .files].map { WorkerName($0, 0) }
        for name in workers {
            try startWorker(name, config: chat, bus: address, context: context, logger: logger, stopping: stopping, done: workersDone)
        }
        let events = EventLog()
        let health = HealthState()
        let connections = ConnectionRegistry(group: MultiThreadedEventLoopGroup.singleton)
        let config = FrontendConfig(chat: chat, frontendID: "fe-test-\(UInt32.random(in: 0...UInt32.max))", storeShards: storeWorkers)
        let bus = try BusClient(
            frontendID: config.frontendID, bus: address, storeShards: storeWorkers,
            callbacks: .init(
                roomEvents: { batch in
                    events.events.withLock { $0 += batch }
                    connections.fanOut(batch)
                },
                heartbeat: health.record
            ),
            logger: logger,
            policy: RetryPolicy(
                retryInterval: UInt64(chat.retryMilliseconds) * 1_000_000, deadline: UInt64(chat.requestTimeoutMilliseconds) * 1_000_000
            ),
            context: context
        )
        bus.start()
        let services = try await Frontend.makeServices(config: config, logger: logger, bus: bus, connections: connections, health: health)
        let cluster = Cluster(
            config: config, services: services, auth: await Authenticator(secret: chat.jwtSecret!), logger: logger, events: events,
            broker: broker, bus: bus, stopping: stopping, workersDone: workersDone, context: context, address: address
        )
        // Ready as `/healthz` is: every worker's heartbeat reached the
        // frontend, so each one serves and the frontend hears its replies.
        let deadline = Date().addingTimeInterval(20)
        while !health.allAlive(workers.map(\.description)) {
            guard Date() < deadline else {
                await cluster.stop()
                throw TestFailure("in-process workers did not start")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return cluster
    }

    /// Runs one worker on a thread of its own, as `chatd worker` runs it in its process.
    private static func startWorker(
        _ name: WorkerName, config: ChatConfig, bus: BusAddress, context: ZeroMQ.Context, logger: Logger, stopping: StopFlag,
        done: DispatchGroup
    ) throws {
        let server = try BusServer(role: name.role, shard: name.index, bus: bus, logger: logger, context: context)
        let database = try ChatDatabase(path: config.databasePath)
        let box = WorkerParts(server: server, database: database)
        done.enter()
        let thread = Thread {
            defer { done.leave() }
            let (server, database) = (box.server, box.database)
            let stop = { stopping.isSet }
            do {
                switch name.role {
                case .store:
                    let worker = StoreWorker(database: database, config: config, logger: logger)
                    try server.run(shouldStop: stop, nudge: Topic.searchNudge, handle: worker.handle)
                case .receipts:
                    let worker = ReceiptsWorker(database: database, config: config, logger: logger)
                    try server.run(shouldStop: stop, idle: worker.idle, handle: worker.handle)
                case .search:
                    let worker = try SearchWorker(database: database, indexPath: config.searchIndexPath, logger: logger)
                    try server.run(
                        shouldStop: stop, wakeOn: Topic.searchNudge, idleInterval: { worker.behind ? 0 : 500 }, idle: worker.wake,
                        handle: worker.handle
                    )
                case .files:
                    let worker = FilesWorker(database: database, config: config, logger: logger)
                    try server.run(shouldStop: stop, idle: worker.idle, handle: worker.handle)
                case .webhooks:
                    let worker = WebhooksWorker(database: database, config: config, logger: logger)
                    try server.run(shouldStop: stop, wakeOn: Topic.searchNudge, idleInterval: { 100 }, idle: worker.tick, handle: worker.handle)
                }
            } catch {
                logger.critical("in-process worker failed", metadata: ["worker": "\(name)", "error": "\(error)"])
            }
        }
        thread.name = "chatd-\(name)"
        thread.start()
    }

    /// Stops the bus client, the workers (each within a poll interval) and the
    /// broker, and removes the data directory. The waits block a thread of
    /// their own, not one of the few that run the tests' tasks.
    func stop() async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let thread = Thread { [self] in
                for other in others.withLock({ $0 }) { other.stop() }
                bus.stop()
                stopping.set()
                workersDone.wait()
                broker.stop()
                try? FileManager.default.removeItem(atPath: config.chat.dataDir)
                done.resume()
            }
            thread.start()
        }
    }

    /// A new directory under /tmp.
    static func temporaryDirectory() throws -> String {
        var template = Array("/tmp/chatd-inproc-XXXXXX".utf8CString)
        guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }).map({ String(cString: $0) }) else {
            throw TestFailure("mkdtemp failed")
        }
        return dir
    }
}

/// A worker's bus server and database, handed to the thread that alone uses them.
private struct WorkerParts: @unchecked Sendable {
    let server: BusServer
    let database: ChatDatabase
}
