import ChatWire
import Foundation
import Logging
import ZeroMQ

/// The bus's fixed point, run by the supervisor (the longest-lived process):
/// it binds every endpoint, frontends and workers connect, so either side can
/// restart without the other noticing more than a reconnect.
///
/// Per queue (each store shard, the receipts role), a PULL (frontends push)
/// forwards to a PUSH (the queue's workers pull, round robin); a message for a
/// queue whose workers are all down waits in the broker until one connects. Events go XSUB → XPUB, with
/// subscriptions flowing back, so workers publish without knowing frontends.
/// Room subscriptions stop here: the broker subscribes to every room itself
/// and XPUB's filter hands each frontend the rooms it subscribed to; a sync
/// request is answered at once (`SubscriptionSync`, `UpstreamMessage`).
/// It also repeats the store shard count for frontends every half second.
public final class Broker: @unchecked Sendable {
    private let bus: BusAddress
    private let queues: [String]
    private let logger: Logger
    private let context: Context
    private let wakeup: Wakeup
    private let security: BusSecurity
    /// The allow-list, with keys on a `tcp://` bus.
    private let gatekeeper: BusGatekeeper?
    // Under `lock`: requests for the broker thread.
    private var stopRequested = false
    private var queuesToAdd: [String] = []
    private var storeShards: Int?
    private var commandsToSend: [(queue: String, frames: [[UInt8]])] = []
    private var metricsToPublish: [UInt8]?
    private let lock = NSLock()

    /// - Parameter queues: command queue names (`Endpoints.queue`).
    /// - Parameter context: the ZeroMQ context to share (`inproc://` endpoints
    ///   need one context for both ends); nil: a context of its own.
    /// - Parameter security: CURVE keys and heartbeats for a `tcp://` bus.
    public init(bus: BusAddress, queues: [String], logger: Logger, context: Context? = nil, security: BusSecurity = .none) throws {
        self.bus = bus
        self.queues = queues
        self.logger = logger
        self.context = try context ?? Context()
        self.wakeup = try Wakeup()
        self.security = security
        if case .tcp = bus, let keys = security.keys {
            gatekeeper = BusGatekeeper(keys: keys, logger: logger)
        } else {
            gatekeeper = nil
        }
    }

    /// A reloaded peers file: the keys let in from the next connection on
    /// (connections already made stay).
    public func update(keys: BusKeys) {
        gatekeeper?.update(keys)
    }

    public func stop() {
        lock.withLock { stopRequested = true }
        wakeup.signal()
    }

    /// Binds more command queues (new store shards) while running.
    public func add(queues names: [String]) {
        lock.withLock { queuesToAdd += names }
        wakeup.signal()
    }

    /// The store shard count to tell frontends, from now on, twice a second.
    /// Repeated because a subscriber misses what is published before its
    /// subscription arrives (slow joiner).
    public func announce(storeShards count: Int) {
        lock.withLock { storeShards = count }
        wakeup.signal()
    }

    /// Publishes the supervisor's merged metrics document (`MetricsReport`)
    /// to every frontend on the next pass of the broker thread.
    public func publish(metrics document: [UInt8]) {
        lock.withLock { metricsToPublish = document }
        wakeup.signal()
    }

    /// Hands `command` to a worker of `queue` as a frontend's would be, once
    /// one can take it; the reply goes to `command.origin`, which nobody may
    /// hear. For the supervisor's own commands (a retired frontend slot's
    /// sessions reset), which no frontend would send.
    public func send(_ command: Command, toQueue queue: String) {
        lock.withLock { commandsToSend.append((queue, command.encode())) }
        wakeup.signal()
    }

    /// Binds everything (so peers can connect once this returns) and then
    /// forwards on a thread of its own. `onFailure` runs (once, on a broker
    /// thread) when the broker or its ZAP handler stops working: the bus is
    /// down for this host, so the owner should exit non-zero and be restarted.
    public func start(onFailure: @escaping @Sendable (String) -> Void = { _ in }) throws {
        // Bound before the sockets: with the handler gone every handshake
        // fails (ZMQ_ZAP_ENFORCE_DOMAIN), so its failure is the broker's.
        let zap = try gatekeeper.map { gatekeeper in try ZAPHandler(context: context) { gatekeeper.allow($0) } }
        let logger = self.logger
        zap?.start { error in
            logger.critical("bus ZAP handler failed: no host can connect", metadata: ["error": "\(error)"])
            onFailure("ZAP handler failed: \(error)")
        }
        let sockets: Sockets
        do {
            sockets = try bindAll()
        } catch {
            zap?.stop()
            throw error
        }
        let thread = Thread { [self] in
            defer { zap?.stop() }
            do {
                try forward(sockets)
            } catch {
                logger.critical("broker failed", metadata: ["error": "\(error)"])
                onFailure("broker failed: \(error)")
            }
        }
        thread.name = "chatd-broker"
        thread.start()
    }

    // Created on the caller's thread, then used only by the broker thread.
    struct Sockets: @unchecked Sendable {
        var eventsIn: Socket
        var eventsOut: Socket
        var queueIn: [Socket]
        var queueOut: [Socket]
    }

    private func make(_ type: SocketType, _ endpoint: String) throws -> Socket {
        let socket = try Socket(context: context, type: type)
        try socket.secure(security, bus: bus, as: .server)
        // Events: XPUB drops at the mark for that subscriber alone. Commands:
        // a full PUSH stops the broker reading the queue's PULL, a full PULL
        // makes the frontends' PUSH refuse (they hold, then 503).
        let mark = type == .xsub || type == .xpub ? HighWaterMarks.events : HighWaterMarks.commands
        try socket.setHighWaterMarks(send: mark, receive: mark)
        // A stale ipc file of a crashed run would make bind fail.
        if endpoint.hasPrefix("ipc://") { unlink(String(endpoint.dropFirst(6))) }
        try socket.bind(endpoint)
        return socket
    }

    private func bindAll() throws -> Sockets {
        let eventsIn = try make(.xsub, bus.eventsIn)
        // Every room's events, whoever is subscribed: XSUB sends this to
        // each publisher as it connects, so none is ever filtered out by a
        // frontend's subscription still on its way.
        try eventsIn.send([UpstreamMessage.allRooms])
        return Sockets(
            eventsIn: eventsIn,
            eventsOut: try make(.xpub, bus.eventsOut),
            queueIn: try queues.map { try make(.pull, bus.queueIn($0)) },
            queueOut: try queues.map { try make(.push, bus.queueOut($0)) }
        )
    }

    private func bind(queue name: String, into s: inout Sockets, queues: inout [String]) {
        var input: Socket?
        do {
            input = try make(.pull, bus.queueIn(name))
            let output = try make(.push, bus.queueOut(name))
            s.queueIn.append(input!)
            s.queueOut.append(output)
            queues.append(name)
        } catch {
            // Commands for this queue will time out (503) until the cause is fixed.
            input?.close()
            logger.critical("cannot bind a new queue", metadata: ["queue": "\(name)", "error": "\(error)"])
        }
    }

    /// One message a subscriber sent up through XPUB: (un)subscriptions
    /// other than rooms' go on to the publishers; a sync request is answered.
    /// By the time XPUB hands a subscription up it has applied it, and every
    /// one its subscriber sent before, to its filter, so the answer reaches
    /// that subscriber ahead of every event forwarded after it.
    private func relayUpstream(_ s: Sockets) throws -> Bool {
        guard let frames = try s.eventsOut.receive(dontWait: true) else { return false }
        switch UpstreamMessage(frames[0]) {
        case .forward: try s.eventsIn.send(frames)
        case .room, .drop: break
        case .sync(let sync): try s.eventsOut.send(sync.event.encode())
        }
        return true
    }

    /// Sends each command whose queue a worker can take it from now (a PUSH
    /// with no peer would block); returns the others, to try next pass.
    private func sendWhereTaken(_ commands: [(queue: String, frames: [[UInt8]])], _ s: Sockets, queues: [String]) throws -> [(queue: String, frames: [[UInt8]])] {
        try commands.filter { command in
            guard let index = queues.firstIndex(of: command.queue) else { return false }
            guard s.queueOut[index].events & Int32(pollOut) != 0 else { return true }
            return try !s.queueOut[index].send(command.frames, dontWait: true)
        }
    }

    private func forward(_ s: Sockets) throws {
        var s = s
        var queues = self.queues
        defer {
            s.eventsIn.close(); s.eventsOut.close()
            s.queueIn.forEach { $0.close() }; s.queueOut.forEach { $0.close() }
        }
        var lastAnnounced: UInt64 = 0
        var trimmer = IdleTrim()
        var commands: [(queue: String, frames: [[UInt8]])] = []
        while true {
            let (stop, adding, shards, metrics) = lock.withLock { () -> (Bool, [String], Int?, [UInt8]?) in
                defer { queuesToAdd = []; commands += commandsToSend; commandsToSend = []; metricsToPublish = nil }
                return (stopRequested, queuesToAdd, storeShards, metricsToPublish)
            }
            if stop { return }
            for name in adding where !queues.contains(name) { bind(queue: name, into: &s, queues: &queues) }
            if !commands.isEmpty { commands = try sendWhereTaken(commands, s, queues: queues) }
            if let metrics { try s.eventsOut.send(MetricsReport.event(metrics).encode()) }
            if let shards, monotonicNanos() - lastAnnounced >= 500_000_000 {
                try s.eventsOut.send(ShardCount(shards).event.encode())
                lastAnnounced = monotonicNanos()
            }
            var poller = Poller()
            poller.add(.socket(s.eventsIn))
            poller.add(.socket(s.eventsOut))
            poller.add(.fd(wakeup.fd))
            // Only read a queue when a worker can take the message: a PUSH
            // with no peer would block the whole broker.
            // One `ZMQ_EVENTS` per queue and pass: each is a poll(2) and a
            // getpid(2) inside ZeroMQ, and a broker passes here twice a message
            // at low load.
            let writable = queues.indices.map { s.queueOut[$0].events & Int32(pollOut) != 0 }
            var queueIndex: [Int: Int] = [:]
            for queue in queues.indices where writable[queue] {
                queueIndex[poller.add(.socket(s.queueIn[queue]))] = queue
            }
            for queue in queues.indices where !writable[queue] {
                // Wake when the queue's worker (re)connects.
                queueIndex[poller.add(.socket(s.queueOut[queue]), events: pollOut)] = -1
            }
            let ready = try poller.poll(timeoutMilliseconds: 500)
            if ready[2] & pollIn != 0 { wakeup.drain() }
            var moved = 0
            // Messages are moved, not copied (`forward`); events to XPUB never
            // block (it drops at a subscriber's mark).
            // Each batch is capped (the queues' 4096): under sustained
            // publishing an uncapped one never ends, and the sync requests
            // waiting upstream, which handshakes wait for, go unanswered.
            // Upstream is read every pass, whatever the poll said of it.
            var batch = 0
            while ready[0] & pollIn != 0, batch < 4096, try s.eventsIn.forward(to: s.eventsOut) { batch += 1 }
            while batch < 8192, try relayUpstream(s) { batch += 1 }
            moved += batch
            for (index, queue) in queueIndex where queue >= 0 && ready[index] & pollIn != 0 {
                var batch = 0
                var dropped = 0
                // POLLOUT before each: a command taken off the PULL must fit.
                // Should the queue's only worker drop its connection between
                // that check and the send, the command is dropped rather than
                // the broker blocking every queue until a replacement
                // connects: its frontend resends what goes unanswered.
                while batch < 4096, s.queueOut[queue].events & Int32(pollOut) != 0,
                    try s.queueIn[queue].forward(to: s.queueOut[queue], dropped: &dropped) {
                    batch += 1
                }
                if dropped > 0 {
                    logger.warning("commands dropped: their worker went away as they were sent; frontends resend them", metadata: [
                        "queue": "\(queues[queue])", "commands": "\(dropped)",
                    ])
                }
                moved += batch
            }
            trimmer.trimIfBurstEnded(moved: moved, logger: logger)
        }
    }
}

extension IdleTrim {
    /// Counts messages moved and trims the heap when a burst has ended,
    /// logging what it returned.
    mutating func trimIfBurstEnded(moved: Int, logger: Logger) {
        guard observe(moved: moved, now: monotonicNanos()) else { return }
        let before = residentMegabytes()
        Allocator.trim()
        logger.info("burst over, heap returned to the kernel", metadata: ["rss.mb.before": "\(before)", "rss.mb.after": "\(residentMegabytes())"])
    }
}

/// This process's resident memory (/proc/self/statm), in MiB, for the log.
func residentMegabytes() -> Int {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
        let pages = statm.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return -1 }
    return (pages * Int(sysconf(Int32(_SC_PAGESIZE)))) >> 20
}
