import ChatWire
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// Monotonic nanoseconds, for deadlines.
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Where a command goes: a store shard (writes of one room stay in order on
/// one shard), or any worker of another role.
public enum Destination: Sendable, Hashable {
    /// The store shard that owns `key` (a room id; a user pair for a direct
    /// room's creation), resolved on the bus thread when the command leaves,
    /// so that a change of the shard count applies to every command at once.
    case store(key: String)
    /// Any worker of a role other than store.
    case role(Role)

    /// Where a command of this kind goes; `shardKey` picks the store shard.
    public static func of(_ kind: CommandKind, shardKey: String) -> Destination {
        kind.role == .store ? .store(key: shardKey) : .role(kind.role)
    }
}

/// Why a command got no answer.
public enum BusFailure: Error, Sendable {
    /// No reply before the deadline, resends included: the client gets 503.
    case timedOut
    /// The bus is shutting down.
    case closed
}

/// A room event as the frontend receives it: the client-facing bytes, not decoded.
public struct RoomEvent: Sendable {
    public var roomID: String
    /// Idempotency key (a message id), empty when the event has none.
    public var key: String
    public var body: [UInt8]
}

/// The frontend's side of the bus. One thread owns the ZeroMQ sockets; other
/// threads hand it commands through a locked queue and an eventfd.
///
/// Each command stays pending until its reply arrives and is resent on a
/// timeout (`PendingRequests`); workers make writes idempotent, so resends
/// are safe. Room events and heartbeats are handed to the callbacks on the bus
/// thread: they must not block.
public final class BusClient: Sendable {
    public typealias Completion = @Sendable (Result<Event, BusFailure>) -> Void

    public struct Callbacks: Sendable {
        /// A batch of room events, in arrival order, from one poll iteration.
        public var roomEvents: @Sendable ([RoomEvent]) -> Void
        /// A worker heartbeat (topic suffix, body).
        public var heartbeat: @Sendable (String, [UInt8]) -> Void

        public init(roomEvents: @escaping @Sendable ([RoomEvent]) -> Void, heartbeat: @escaping @Sendable (String, [UInt8]) -> Void) {
            self.roomEvents = roomEvents
            self.heartbeat = heartbeat
        }
    }

    struct Outgoing: Sendable {
        var destination: Destination
        var command: Command
        var completion: Completion
        /// The store shard it went to (-1 for other roles), given on the bus thread.
        var shard = -1
        /// Position in the stream to that store shard.
        var seq: UInt64 = 0
        /// When the frontend gives up on it (monotonic nanoseconds).
        var deadline: UInt64 = 0
    }

    public let frontendID: String
    private let bus: BusAddress
    private let initialShards: Int
    private let shardCount: Atomic<Int>
    private let reshardingSnapshot = Atomic<Bool>(false)
    private let policy: RetryPolicy
    private let callbacks: Callbacks
    private let logger: Logger
    private let context: Context
    private let wakeup: Wakeup
    private let outbox = Mutex<(queue: [Outgoing], stopping: Bool)>(([], false))
    private let started = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    private let nextID = Atomic<UInt64>(0)
    private let drainDeadline = Atomic<UInt64>(0)
    /// Commands sent and not yet answered, per queue (`Endpoints.queue`).
    private let outstandingSnapshot = Mutex<[String: Int]>([:])

    public init(
        frontendID: String, bus: BusAddress, storeShards: Int, callbacks: Callbacks, logger: Logger,
        policy: RetryPolicy = .init(), context: Context? = nil
    ) throws {
        self.frontendID = frontendID
        self.bus = bus
        self.initialShards = storeShards
        self.shardCount = Atomic(storeShards)
        self.callbacks = callbacks
        self.logger = logger
        self.policy = policy
        // Shared with the broker and workers for `inproc://` endpoints.
        self.context = try context ?? Context()
        self.wakeup = try Wakeup()
    }

    /// Starts the bus thread; sockets are created on it.
    public func start() {
        let t = Thread { [self] in
            do {
                try self.run()
            } catch {
                self.logger.critical("bus thread failed", metadata: ["error": "\(error)"])
            }
            // Nothing sent from now on can be answered: refuse it at once.
            let queued = outbox.withLock { state in
                state.stopping = true
                defer { state.queue.removeAll() }
                return state.queue
            }
            for outgoing in queued { outgoing.completion(.failure(.closed)) }
            self.finished.signal()
        }
        t.name = "chatd-bus"
        started.store(true, ordering: .releasing)
        t.start()
    }

    /// Stops taking commands, waits up to `drain` seconds for the pending
    /// ones to be answered (their writes finish, their replies are read), then
    /// stops the thread; what is still pending fails with `.closed`.
    public func stop(drain: Double = 0) {
        // The deadline first: the bus thread reads it once it sees `stopping`.
        drainDeadline.store(monotonicNanos() + UInt64(max(0, drain) * 1e9), ordering: .relaxed)
        outbox.withLock { $0.stopping = true }
        wakeup.signal()
        if started.load(ordering: .acquiring) { finished.wait() }
    }

    /// Commands sent and not yet answered (or failed), per queue: waiting in
    /// the broker or a worker's socket, being handled, or their reply on its
    /// way. What `chatd ctl status` reports as queue depth.
    public func outstanding() -> [String: Int] {
        outstandingSnapshot.withLock { $0 }
    }

    /// How many store shards commands are spread over now. Changes when the
    /// supervisor announces a new count (`chatd ctl scale store <n>`).
    public var storeShards: Int { shardCount.load(ordering: .relaxed) }
    /// A new count was announced and this frontend has not switched to it yet.
    public var isChangingStoreShards: Bool { reshardingSnapshot.load(ordering: .relaxed) }

    /// The answer to a poison command (`PendingRequests`): 500, because
    /// trying again would fail the same way.
    static let poisonDetail = Array(#"{"detail":"This request was being processed when a server worker stopped, twice; it was not retried again."}"#.utf8)

    /// A fresh request id, unique within this frontend process.
    public func makeRequestID() -> String {
        String(nextID.add(1, ordering: .relaxed).newValue, radix: 36)
    }

    /// Queues a command (thread-safe, non-blocking). `completion` runs on the bus thread.
    public func send(_ kind: CommandKind, to destination: Destination, user: [UInt8], body: [UInt8], completion: @escaping Completion) {
        let command = Command(kind: kind, requestID: makeRequestID(), origin: frontendID, user: user, body: body)
        // The deadline runs from here, whatever the command waits for on the way.
        let outgoing = Outgoing(destination: destination, command: command, completion: completion, deadline: monotonicNanos() + policy.deadline)
        let accepted = outbox.withLock { state -> Bool in
            guard !state.stopping else { return false }
            state.queue.append(outgoing)
            return true
        }
        if accepted { wakeup.signal() } else { completion(.failure(.closed)) }
    }

    /// Sends a command and waits for its reply.
    public func request(_ kind: CommandKind, to destination: Destination, user: [UInt8], body: [UInt8]) async -> Result<Event, BusFailure> {
        await withCheckedContinuation { continuation in
            send(kind, to: destination, user: user, body: body) { continuation.resume(returning: $0) }
        }
    }

    private func run() throws {
        let events = try Socket(context: context, type: .sub)
        // Past the mark the broker's XPUB drops this frontend's events (and
        // only this frontend's): a lost reply is resent, a lost room event is
        // a gap clients fill from history (docs/protocol.md, "Memory bounds").
        try events.setHighWaterMarks(send: HighWaterMarks.events, receive: HighWaterMarks.events)
        try events.setReconnectInterval(milliseconds: 20)
        try events.subscribe(Topic.reply(frontendID))
        // The whole room prefix: a socket must get every event sent after its
        // handshake, and per-room subscriptions would race ZeroMQ's slow joiner.
        try events.subscribe(Topic.roomPrefix)
        try events.subscribe(Topic.heartbeatPrefix)
        try events.subscribe(Topic.storeShards)
        try events.connect(bus.eventsOut)

        func pusher(_ queue: String) throws -> Socket {
            let push = try Socket(context: context, type: .push)
            // Full: `transmit` holds commands here, in order, until the queue
            // drains or their deadline fails them (503). Never dropped, and
            // the bus thread never blocks on a send.
            try push.setHighWaterMarks(send: HighWaterMarks.commands, receive: HighWaterMarks.commands)
            try push.setReconnectInterval(milliseconds: 20)
            try push.connect(bus.queueIn(queue))
            return push
        }
        var stores: [Socket] = []
        var roles: [Role: Socket] = [:]
        for role in Role.allCases where role != .store { roles[role] = try pusher(Endpoints.queue(role)) }
        defer {
            events.close()
            for socket in stores { socket.close() }
            for socket in roles.values { socket.close() }
        }

        var pending = PendingRequests<Outgoing>(policy: policy)
        // Per store shard: the next stream position, the positions awaiting a
        // reply, and a lower bound of them (see StreamSequencer).
        var nextSeq: [UInt64] = []
        var awaiting: [Set<UInt64>] = []
        var lowest: [UInt64] = []
        var outstanding: [String: Int] = [:]
        for role in Role.allCases where role != .store { outstanding[Endpoints.queue(role)] = 0 }
        func addShards(upTo count: Int) throws {
            while stores.count < count {
                let queue = Endpoints.queue(.store, shard: stores.count)
                stores.append(try pusher(queue))
                nextSeq.append(1)
                awaiting.append([])
                lowest.append(1)
                outstanding[queue] = 0
            }
        }
        try addShards(upTo: initialShards)
        var shards = initialShards
        // A new shard count waits until no store command is unanswered, while
        // new store commands are held back in order: a room's writes never run
        // on two shards at once, and each socket's commands keep their order.
        var resharding: Int?
        var held: [Outgoing] = []
        // However the loop ends, nobody is left waiting for an answer.
        defer { for outgoing in pending.removeAll() + held { outgoing.completion(.failure(.closed)) } }

        func floor(_ shard: Int) -> UInt64 {
            while lowest[shard] < nextSeq[shard] && !awaiting[shard].contains(lowest[shard]) { lowest[shard] += 1 }
            return lowest[shard]
        }
        func queueName(_ outgoing: Outgoing) -> String {
            outgoing.shard >= 0 ? Endpoints.queue(.store, shard: outgoing.shard) : Endpoints.queue(outgoing.command.kind.role)
        }
        var outstandingChanged = true
        func settled(_ outgoing: Outgoing) {
            if outgoing.shard >= 0 { awaiting[outgoing.shard].remove(outgoing.seq) }
            outstanding[queueName(outgoing), default: 1] -= 1
            outstandingChanged = true
        }
        var basePoller = Poller()
        basePoller.add(.socket(events))
        basePoller.add(.fd(wakeup.fd))

        // Per queue whose PUSH is at its high-water mark: the commands waiting
        // for room, in the order they were to leave (a stream's order is
        // kept: nothing overtakes them), and their ids.
        var full: [String: (socket: Socket, waiting: [Outgoing], ids: Set<String>)] = [:]
        var fullSince: UInt64 = 0

        func socket(for outgoing: Outgoing) -> Socket {
            outgoing.shard >= 0 ? stores[outgoing.shard] : roles[outgoing.command.kind.role]!
        }
        /// Tries to queue one command; false when its PUSH is full.
        func push(_ outgoing: Outgoing, on socket: Socket) -> Bool {
            var command = outgoing.command
            if outgoing.shard >= 0 { command.stream = (outgoing.seq, floor(outgoing.shard)) }
            // After this the client has been told the command failed: a
            // worker that gets it later must not carry it out.
            let now = monotonicNanos()
            command.deadline = wallClockNanos() + (outgoing.deadline > now ? outgoing.deadline - now : 0)
            do {
                return try socket.send(command.encode(), dontWait: true)
            } catch {
                logger.error("bus send failed", metadata: ["error": "\(error)"])
                return true
            }
        }
        func transmit(_ outgoing: Outgoing) {
            let queue = queueName(outgoing)
            if full[queue] != nil {
                // Already waiting (a resend of a held command): once is enough.
                guard !full[queue]!.ids.contains(outgoing.command.requestID) else { return }
                full[queue]!.waiting.append(outgoing)
                full[queue]!.ids.insert(outgoing.command.requestID)
                return
            }
            let socket = socket(for: outgoing)
            if !push(outgoing, on: socket) {
                if full.isEmpty { fullSince = monotonicNanos() }
                logger.warning("command queue full, holding commands", metadata: ["queue": "\(queue)"])
                full[queue] = (socket, [outgoing], [outgoing.command.requestID])
            }
        }
        /// Sends what a full queue held, in order, while it takes them;
        /// drops those answered or failed meanwhile.
        func drain(_ queue: String) {
            guard var entry = full[queue] else { return }
            var sent = 0
            while sent < entry.waiting.count {
                let outgoing = entry.waiting[sent]
                if pending.contains(id: outgoing.command.requestID) {
                    guard push(outgoing, on: entry.socket) else { break }
                }
                sent += 1
            }
            entry.waiting.removeFirst(sent)
            if entry.waiting.isEmpty {
                full[queue] = nil
                logger.info("command queue has room again", metadata: ["queue": "\(queue)", "held.ms": "\((monotonicNanos() - fullSince) / 1_000_000)"])
            } else {
                entry.ids = Set(entry.waiting.map(\.command.requestID))
                full[queue] = entry
            }
        }
        func admit(_ outgoing: Outgoing, now: UInt64) {
            var outgoing = outgoing
            if case .store(let key) = outgoing.destination {
                let shard = Shard.of(key, count: shards)
                outgoing.shard = shard
                outgoing.seq = nextSeq[shard]
                nextSeq[shard] += 1
                awaiting[shard].insert(outgoing.seq)
            }
            pending.add(id: outgoing.command.requestID, payload: outgoing, now: now, deadline: outgoing.deadline)
            outstanding[queueName(outgoing), default: 0] += 1
            outstandingChanged = true
            transmit(outgoing)
        }

        var workerPIDs: [String: String] = [:]
        var stopping = false
        var trimmer = IdleTrim()
        while true {
            var timeout = -1
            if let wake = pending.nextWakeup {
                let now = monotonicNanos()
                timeout = wake <= now ? 0 : Int((wake - now) / 1_000_000) + 1
            }
            if stopping {
                let now = monotonicNanos()
                let deadline = drainDeadline.load(ordering: .relaxed)
                if (pending.count == 0 && held.isEmpty) || now >= deadline {
                    for outgoing in pending.removeAll() + held { outgoing.completion(.failure(.closed)) }
                    held.removeAll()
                    return
                }
                let untilDeadline = Int((deadline - now) / 1_000_000) + 1
                timeout = timeout < 0 ? untilDeadline : min(timeout, untilDeadline)
            }
            var poller = basePoller
            var fullIndex: [(index: Int, queue: String)] = []
            for (queue, entry) in full { fullIndex.append((poller.add(.socket(entry.socket), events: pollOut), queue)) }
            let ready = try poller.poll(timeoutMilliseconds: timeout)
            for (index, queue) in fullIndex where ready[index] & pollOut != 0 { drain(queue) }

            if ready[1] & pollIn != 0 {
                wakeup.drain()
                let queue: [Outgoing]
                (queue, stopping) = outbox.withLock { state in
                    defer { state.queue.removeAll(keepingCapacity: true) }
                    return (state.queue, state.stopping)
                }
                let now = monotonicNanos()
                for outgoing in queue {
                    if resharding != nil, case .store = outgoing.destination {
                        held.append(outgoing)
                    } else {
                        admit(outgoing, now: now)
                    }
                }
            }

            if ready[0] & pollIn != 0 {
                var roomEvents: [RoomEvent] = []
                // Drain what is waiting, bounded so commands keep flowing under load.
                for _ in 0..<4096 {
                    guard let frames = try events.receive(dontWait: true) else { break }
                    let event: Event
                    do {
                        event = try Event(frames: frames)
                    } catch {
                        logger.warning("dropping malformed bus event", metadata: ["error": "\(error)"])
                        continue
                    }
                    switch event.kind {
                    case .reply:
                        if let outgoing = pending.complete(id: event.key) {
                            settled(outgoing)
                            outgoing.completion(.success(event))
                        }
                    case .roomEvent:
                        roomEvents.append(RoomEvent(roomID: String(event.topic.dropFirst(Topic.roomPrefix.count)), key: event.key, body: event.body))
                    case .heartbeat:
                        let worker = String(event.topic.dropFirst(Topic.heartbeatPrefix.count))
                        // `<role> <shard> <pid>[ failed]`
                        let fields = event.body.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
                        let pid = fields.count > 2 ? fields[2] : ""
                        if let known = workerPIDs[worker], known != pid {
                            // A replacement: what the old worker held in its queue
                            // died with it. Resend now rather than at the timeout.
                            // Only a crash or a hang counts toward poison: a
                            // SIGKILL from outside says nothing about the commands.
                            let failed = fields.count > 3 && fields[3] == "failed"
                            let mine = { (outgoing: Outgoing) in queueName(outgoing) == Endpoints.queue(ofWorker: worker) }
                            let (lost, poisoned) = failed
                                ? pending.workerReplaced(now: monotonicNanos(), matching: mine)
                                : (pending.resendNow(now: monotonicNanos(), matching: mine), [])
                            // Poisoned commands are settled before anything is
                            // resent, so the resends carry a floor above them:
                            // the new worker must not wait for a command that
                            // will never come again.
                            for (id, outgoing) in poisoned {
                                // In flight at two deaths: most likely what kills
                                // the worker. Resending it would kill the next one.
                                logger.error("poison command: failing it, not resending", metadata: [
                                    "request.id": "\(id)", "kind": "\(outgoing.command.kind.rawValue)", "worker": "\(worker)",
                                ])
                                settled(outgoing)
                                outgoing.completion(.success(.reply(to: outgoing.command, status: .internal, body: Self.poisonDetail)))
                            }
                            if !lost.isEmpty {
                                logger.info("worker replaced, resending", metadata: ["worker": "\(worker)", "commands": "\(lost.count)"])
                            }
                            for (_, outgoing) in lost { transmit(outgoing) }
                        }
                        workerPIDs[worker] = pid
                        callbacks.heartbeat(worker, event.body)
                    case .storeShards:
                        // Repeated by the supervisor every half second until it restarts.
                        guard let count = Int(String(decoding: event.body, as: UTF8.self)), count > 0,
                            count != (resharding ?? shards) else { break }
                        do {
                            try addShards(upTo: count)
                            logger.info("store shard count changing", metadata: ["from": "\(shards)", "to": "\(count)"])
                            resharding = count
                            reshardingSnapshot.store(true, ordering: .relaxed)
                        } catch {
                            logger.error("cannot reach the new store shards, keeping the count", metadata: ["to": "\(count)", "error": "\(error)"])
                        }
                    }
                }
                if !roomEvents.isEmpty { callbacks.roomEvents(roomEvents) }
                trimmer.trimIfBurstEnded(moved: roomEvents.count, logger: logger)
            } else {
                trimmer.trimIfBurstEnded(moved: 0, logger: logger)
            }

            var failedAny = false
            for action in pending.tick(now: monotonicNanos()) {
                switch action {
                case .resend(let id, let outgoing, let attempt):
                    logger.debug("resending command", metadata: ["request.id": "\(id)", "attempt": "\(attempt)", "kind": "\(outgoing.command.kind.rawValue)"])
                    transmit(outgoing)
                case .fail(let id, let outgoing):
                    logger.warning("command timed out", metadata: ["request.id": "\(id)", "kind": "\(outgoing.command.kind.rawValue)"])
                    settled(outgoing)
                    outgoing.completion(.failure(.timedOut))
                    failedAny = true
                }
            }
            if failedAny {
                // What a full queue still held for them goes too.
                for queue in full.keys {
                    full[queue]!.waiting.removeAll { !pending.contains(id: $0.command.requestID) }
                    full[queue]!.ids = Set(full[queue]!.waiting.map(\.command.requestID))
                    if full[queue]!.waiting.isEmpty { full[queue] = nil }
                }
            }
            if !held.isEmpty {
                // Held past their deadline: their senders are told, as for any timeout.
                let now = monotonicNanos()
                for outgoing in held where outgoing.deadline <= now { outgoing.completion(.failure(.timedOut)) }
                held.removeAll { $0.deadline <= now }
            }
            if let target = resharding, awaiting.allSatisfy(\.isEmpty) {
                shards = target
                resharding = nil
                shardCount.store(target, ordering: .relaxed)
                reshardingSnapshot.store(false, ordering: .relaxed)
                logger.info("store shard count changed", metadata: ["shards": "\(target)", "held.commands": "\(held.count)"])
                let now = monotonicNanos()
                for outgoing in held { admit(outgoing, now: now) }
                held.removeAll()
            }
            // Held commands count as the queue "held" in ctl status.
            let heldNow = held.isEmpty ? nil : held.count
            if outstanding["held"] != heldNow {
                outstanding["held"] = heldNow
                outstandingChanged = true
            }
            if outstandingChanged {
                outstandingSnapshot.withLock { $0 = outstanding }
                outstandingChanged = false
            }
        }
    }
}
