import ChatBus
import ChatConfig
import ChatCore
import ChatWire
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import Systemd
import UnixSignals

/// A SIGUSR1 came before Dispatch caught it (`Frontend.run`).
private let earlyRestart = Atomic<Bool>(false)

/// The frontend's view of the configuration.
public struct FrontendConfig: Sendable {
    public var chat: ChatConfig
    /// Unique per process start, so replies meant for a previous incarnation are ignored.
    public var frontendID: String
    /// The store shard count at start; the supervisor may change it (`BusClient.storeShards`).
    public var storeShards: Int
    /// This frontend's place among the supervisor's children (`frontend.0`),
    /// the same for every process that fills it.
    public var slot: String = ProcessInfo.processInfo.environment["CHATD_CHILD"] ?? FrontendSlot.role
    /// The slot qualified by the host: its sessions' `frontend` in the shared database.
    public var sessionOwner: String { Requests.SessionReset.qualified(host: chat.host, slot: slot) }
    /// When this process started, µs since the epoch.
    public let startedAt = Timestamp.now().micros

    public init(chat: ChatConfig, frontendID: String, storeShards: Int) {
        self.chat = chat
        self.frontendID = frontendID
        self.storeShards = storeShards
    }

    public var maxMessageChars: Int { chat.maxMessageChars }
}

/// Which worker roles have been heard from recently (worker heartbeats), for `/healthz`.
public final class HealthState: Sendable {
    private let lastSeen = Mutex<[String: UInt64]>([:])

    public init() {}

    func record(_ worker: String, _ body: [UInt8]) {
        record(worker, at: monotonicNanos())
    }

    func record(_ worker: String, at now: UInt64) {
        lastSeen.withLock { $0[worker] = now }
    }

    /// True when every expected worker sent a heartbeat in the last 3 s
    /// (they send one every 500 ms). A heartbeat may carry a later time than
    /// `now` (recorded between the clock read and the lock): no subtraction.
    func allAlive(_ expected: [String], now: UInt64 = monotonicNanos()) -> Bool {
        lastSeen.withLock { seen in
            expected.allSatisfy { name in seen[name].map { $0 + 3_000_000_000 > now } ?? false }
        }
    }
}

/// The frontend process: HTTP and WebSocket on one port, the bus behind it.
public enum Frontend {
    public static func run(config: FrontendConfig, logger: Logger) async throws {
        guard let address = config.chat.listenAddress else { throw ConfigError.invalid("listen", config.chat.listen) }
        // The stop signals are caught before anything else: one that came
        // while the process starts (the bus, the JWKS, the server) would
        // otherwise be lost or end the process without its close codes.
        // SIGUSR1 is flagged until Dispatch's handler replaces this one
        // (registering the sequence); what comes after waits in the sequence
        // until `run` reads it.
        signal(SIGUSR1) { _ in earlyRestart.store(true, ordering: .sequentiallyConsistent) }
        let signals = await UnixSignalsSequence(trapping: .sigusr1, .sigterm, .sigint)
        // The supervisor hands down the socket systemd passed it (chatd.socket).
        let source: ListenSource = if let fd = ProcessInfo.processInfo.environment["CHATD_LISTEN_FD"].flatMap(CInt.init) {
            .inherited(fd: fd)
        } else {
            .address(host: address.host, port: address.port)
        }
        let group = MultiThreadedEventLoopGroup.singleton
        let connections = ConnectionRegistry(group: group)
        let health = HealthState()
        let board = MetricsBoard()
        let bus = try BusClient(
            frontendID: config.frontendID,
            bus: config.chat.busAddress,
            storeShards: config.storeShards,
            // Refused by the broker (logged): exit so the supervisor's
            // backoff retries, and a key added there later gets in.
            callbacks: .init(
                roomEvents: connections.fanOut, heartbeat: health.record, metrics: board.store, handshakeFailed: { exit(1) },
                linkGap: connections.closeRooms(affectedBy:)),
            logger: logger,
            policy: RetryPolicy(
                retryInterval: UInt64(config.chat.retryMilliseconds) * 1_000_000,
                deadline: UInt64(config.chat.requestTimeoutMilliseconds) * 1_000_000
            ),
            security: BusSecurity(keys: config.chat.busKeys)
        )
        bus.start()
        // A process started to take its predecessor's WebSockets over
        // (docs/protocol.md, "Frontend handover").
        let predecessor = ProcessInfo.processInfo.environment[HandoverReport.predecessorVariable].flatMap { $0.isEmpty ? nil : $0 }
        // Sessions the previous process in this slot left active are over.
        // Sent before any connection is accepted, so it precedes this
        // process's own session.open commands; startedAt spares those anyway.
        // Not after a handover: its sessions live on here.
        if predecessor == nil, let body = try? JSONEncoder().encode(Requests.SessionReset(frontend: config.sessionOwner, startedAt: config.startedAt)) {
            bus.send(.sessionReset, to: .role(.receipts), user: [], body: [UInt8](body)) { _ in }
        }
        // After the server stopped (WebSockets closed with 1001), what clients
        // sent is still answered by the workers before the frontend exits.
        var handedOver: HandoverSource?
        defer { bus.stop(drain: drainSeconds(config.chat, handedOver: handedOver?.handedOverAny.load(ordering: .relaxed) == true)) }
        let services = try await makeServices(config: config, logger: logger, bus: bus, connections: connections, health: health, metrics: board)
        let life = services.life
        let reporter = config.chat.metrics ? FrontendMetrics.reporter(slot: config.slot, bus: bus, life: life, logger: logger) : nil
        defer { withExtendedLifetime(reporter) {} }
        let handover = try startHandovers(config: config, services: services, group: group, predecessor: predecessor, logger: logger)
        handedOver = handover
        defer { unlink(HandoverSource.path(runtimeDir: config.chat.resolvedRuntimeDir, pid: getpid())) }
        let responder = makeResponder(buildRouter(services: services).buildResponder(), logger: logger, access: services.accessLog)
        let server = HTTPServer(
            source: source, channel: ChatChannel(responder: responder, services: services, logger: logger), group: group, logger: logger
        ) { channel in
            logger.info("frontend listening", metadata: [
                "address": "\(channel.localAddress.map { "\($0)" } ?? "?")", "frontend.id": "\(config.frontendID)",
                "source": "\(source)",
            ])
            // READY=1 to the supervisor once the port answers, then a
            // heartbeat from an event loop every 500 ms: a stuck loop stops it.
            // It carries the commands awaiting an answer per queue (`ctl status`).
            handover.server.withLock { $0 = channel }
            let supervisor = Notifier()
            supervisor.send(["READY": "1", "CHATD_CHILD": config.slot])
            CallSweep(bus: bus, life: life).start(on: channel.eventLoop)
            channel.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(500), delay: .milliseconds(500)) { _ in
                let queues = QueueReport(bus.outstanding()).encoded
                supervisor.send([
                    "WATCHDOG": "1", "CHATD_CHILD": config.slot, QueueReport.field: queues, "CHATD_STORE_SHARDS": bus.isChangingStoreShards ? "changing" : String(bus.storeShards),
                    FrontendSlot.webSocketsField: String(life.webSockets),
                ])
            }
        }
        let serviceGroup = ServiceGroup(configuration: .init(services: [server], logger: logger))
        try await run(serviceGroup, stoppingOn: signals, life: life, logger: logger)
    }

    /// How long the bus may still answer what is pending once the server
    /// stopped: 3 s; after a handover, up to the command deadline
    /// (`handoverDrainSeconds`), as the commands of the sockets that moved
    /// with some unanswered are resent only from here. It ends as soon as
    /// nothing is pending.
    static func drainSeconds(_ config: ChatConfig, handedOver: Bool) -> Double {
        handedOver ? max(3, config.handoverDrainSeconds) : 3
    }

    /// Listens for a successor's handover request, and, in a process started
    /// to replace one (`CHATD_HANDOVER_FROM`), takes its predecessor's
    /// WebSockets over, telling the supervisor how it went (`CHATD_HANDOVER`).
    static func startHandovers(
        config: FrontendConfig, services: FrontendServices, group: any EventLoopGroup, predecessor: String?, logger: Logger
    ) throws -> HandoverSource {
        let source = HandoverSource(services: services, logger: logger)
        try source.listen(at: HandoverSource.path(runtimeDir: config.chat.resolvedRuntimeDir, pid: getpid()))
        if let predecessor {
            let reads = ProcessInfo.processInfo.environment[HandoverReport.readsVariable].flatMap(UInt16.init) ?? HandoverMessage.version
            HandoverTarget(services: services, group: group, logger: logger, reads: reads).run(from: predecessor) { outcome in
                logger.info("handover: \(outcome)")
                Notifier().send(["CHATD_CHILD": config.slot, HandoverReport.field: outcome.description])
            }
        }
        return source
    }

    /// Runs the server until SIGTERM or SIGINT (a stop: WebSockets closed
    /// with 1001) or SIGUSR1 (the supervisor restarts this frontend while the
    /// service goes on: 1012, so clients reconnect at once, to a sibling).
    /// A signal that came before the group runs is remembered by it: the
    /// server starts and shuts down at once.
    static func run(_ group: ServiceGroup, stoppingOn signals: UnixSignalsSequence, life: FrontendLife, logger: Logger) async throws {
        try await withThrowingTaskGroup(of: Bool.self) { tasks in
            tasks.addTask {
                try await group.run()
                return true
            }
            tasks.addTask {
                if earlyRestart.load(ordering: .sequentiallyConsistent) {
                    logger.info("restarting before serving")
                    life.stopForRestart()
                    await group.triggerGracefulShutdown()
                    return false
                }
                for await signal in signals {
                    if signal == .sigusr1 {
                        logger.info("restarting: closing WebSockets with 1012")
                        life.stopForRestart()
                    } else {
                        logger.info("stopping: closing WebSockets with 1001", metadata: ["signal": "\(signal)"])
                        life.stopForGood()
                    }
                    await group.triggerGracefulShutdown()
                    break
                }
                return false
            }
            // Until the server has ended (its graceful shutdown included); then
            // no signal is waited for any more.
            while let serverEnded = try await tasks.next(), !serverEnded {}
            tasks.cancelAll()
        }
    }

    /// What every request handler uses: the configuration, the bus, the token
    /// verifier (with the JWKS loaded, if one is configured), the connections
    /// and the rate limiter.
    static func makeServices(
        config: FrontendConfig, logger: Logger, bus: BusClient, connections: ConnectionRegistry, health: HealthState,
        metrics: MetricsBoard = MetricsBoard()
    ) async throws -> FrontendServices {
        let jwks = config.chat.jwks.map {
            JWKSProvider(
                source: .init($0), minRefreshInterval: config.chat.jwksRefreshSeconds,
                cachePath: (config.chat.dataDir as NSString).appendingPathComponent("jwks-cache.json"), logger: logger
            )
        }
        await jwks?.load()
        let auth = await Authenticator(
            secret: try config.chat.verifyingJWTSecret(), jwks: jwks, issuer: config.chat.jwtIssuer, audience: config.chat.jwtAudience,
            leeway: config.chat.jwtLeewaySeconds
        )
        return FrontendServices(
            config: config, logger: logger, bus: bus, auth: auth, connections: connections, health: health,
            limiter: config.chat.rateLimits ? RateLimiter(config: config.chat) : nil, metrics: metrics,
            accessLog: config.chat.accessLog ? AccessLog() : nil
        )
    }

    /// The REST router for `services`: what the server runs, and what
    /// in-process tests run with Hummingbird's test client.
    static func buildRouter(services: FrontendServices) -> Router<ChatRequestContext> {
        ChatAPI(services: services).buildRouter()
    }
}
