import ChatWire
import Foundation
import Logging
import Metrics
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

/// What a room subscription's waiter is told (`BusClient.subscribe(room:)`).
public typealias RoomReady = @Sendable (Result<Void, BusFailure>) -> Void

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
/// are safe. What to send when, and what to answer, is decided by
/// `BusClientMachine`; this class owns the thread and the sockets and does
/// what the machine says. Room events and heartbeats are handed to the
/// callbacks on the bus thread: they must not block.
public final class BusClient: Sendable {
    public typealias Completion = @Sendable (Result<Event, BusFailure>) -> Void

    public struct Callbacks: Sendable {
        /// A batch of room events, in arrival order, from one poll iteration.
        public var roomEvents: @Sendable ([RoomEvent]) -> Void
        /// A worker heartbeat (the worker's name, `store.0`, and the body).
        public var heartbeat: @Sendable (String, [UInt8]) -> Void
        /// The supervisor's merged metrics document (`MetricsReport`), every 5 s.
        public var metrics: @Sendable ([UInt8]) -> Void
        /// A CURVE handshake with the broker failed (logged at error by then);
        /// the bus thread has stopped. libzmq does not retry a refused
        /// connection, so the process should exit non-zero and be restarted.
        public var handshakeFailed: @Sendable () -> Void
        /// A worker's link to this broker was down and is back (logged by
        /// then): the sockets of the rooms it `affects` missed events.
        public var linkGap: @Sendable (LinkGap) -> Void

        public init(
            roomEvents: @escaping @Sendable ([RoomEvent]) -> Void, heartbeat: @escaping @Sendable (String, [UInt8]) -> Void,
            metrics: @escaping @Sendable ([UInt8]) -> Void = { _ in }, handshakeFailed: @escaping @Sendable () -> Void = {},
            linkGap: @escaping @Sendable (LinkGap) -> Void = { _ in }
        ) {
            self.roomEvents = roomEvents
            self.heartbeat = heartbeat
            self.metrics = metrics
            self.handshakeFailed = handshakeFailed
            self.linkGap = linkGap
        }
    }

    /// What the bus thread is handed: the machine's submission, waiting in the outbox.
    typealias Submission = BusClientMachine<Completion>.Submission

    /// A room subscription taken or given back, waiting in the outbox.
    enum RoomRequest {
        case acquire(String, RoomReady)
        case release(String)
    }

    /// What the bus thread takes from other threads.
    struct Outbox {
        var queue: [Submission] = []
        var rooms: [RoomRequest] = []
        var stopping = false
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
    private let security: BusSecurity
    private let wakeup: Wakeup
    private let outbox = Mutex(Outbox())
    private let roomTiming: RoomSubscriptions<RoomReady>.Timing
    private let started = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    private let nextID = Atomic<UInt64>(0)
    private let drainDeadline = Atomic<UInt64>(0)
    /// Commands sent and not yet answered, per queue (`Endpoints.queue`).
    private let outstandingSnapshot = Mutex<[String: Int]>([:])
    /// `chatd_bus_command_duration_seconds` per queue, made once each.
    private let durations = Mutex<[String: CoreMetrics.Timer]>([:])

    /// The command latency histogram of `queue` (bus thread; the lock is never contended).
    private func commandDuration(_ queue: String) -> CoreMetrics.Timer {
        durations.withLock { timers in
            if let timer = timers[queue] { return timer }
            let timer = CoreMetrics.Timer(label: "chatd_bus_command_duration_seconds", dimensions: [("queue", queue)])
            timers[queue] = timer
            return timer
        }
    }

    public init(
        frontendID: String, bus: BusAddress, storeShards: Int, callbacks: Callbacks, logger: Logger,
        policy: RetryPolicy = .init(), roomLinger: UInt64 = 5_000_000_000, context: Context? = nil, security: BusSecurity = .none
    ) throws {
        self.frontendID = frontendID
        self.bus = bus
        self.initialShards = storeShards
        self.shardCount = Atomic(storeShards)
        self.callbacks = callbacks
        self.logger = logger
        self.policy = policy
        // A room's subscription waits as long as a command would (a handshake
        // fails with 503 either way); a lost sync is asked again as a
        // command would be resent.
        self.roomTiming = .init(linger: roomLinger, resync: policy.retryInterval, deadline: policy.deadline)
        // Shared with the broker and workers for `inproc://` endpoints.
        self.context = try context ?? Context()
        self.security = security
        self.wakeup = try Wakeup()
    }

    /// Starts the bus thread; sockets are created on it.
    public func start() {
        let t = Thread { [self] in
            do {
                try self.run()
            } catch let failure as BusHandshakeFailure {
                failure.log(to: self.logger)
                self.callbacks.handshakeFailed()
            } catch {
                self.logger.critical("bus thread failed", metadata: ["error": "\(error)"])
            }
            // Nothing sent from now on can be answered: refuse it at once.
            let (queued, rooms) = outbox.withLock { state in
                state.stopping = true
                defer { state.queue.removeAll(); state.rooms.removeAll() }
                return (state.queue, state.rooms)
            }
            for submission in queued { submission.ticket(.failure(.closed)) }
            for case .acquire(_, let ready) in rooms { ready(.failure(.closed)) }
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

    /// A fresh request id, unique within this frontend process.
    public func makeRequestID() -> String {
        String(nextID.add(1, ordering: .relaxed).newValue, radix: 36)
    }

    /// Queues a command (thread-safe, non-blocking). `completion` runs on the bus thread.
    public func send(_ kind: CommandKind, to destination: Destination, user: [UInt8], body: [UInt8], completion: @escaping Completion) {
        let command = Command(kind: kind, requestID: makeRequestID(), origin: frontendID, user: user, body: body)
        // The deadline runs from here, whatever the command waits for on the way.
        let submission = Submission(destination: destination, command: command, ticket: completion, deadline: monotonicNanos() + policy.deadline)
        let accepted = outbox.withLock { state -> Bool in
            guard !state.stopping else { return false }
            state.queue.append(submission)
            return true
        }
        if accepted { wakeup.signal() } else { completion(.failure(.closed)) }
    }

    /// Subscribes this frontend to a room's events, or takes one more
    /// reference to its subscription (thread-safe, non-blocking). `ready`
    /// runs on the bus thread: with success once every event of the room the
    /// broker forwards from then on reaches this frontend (at once if that
    /// was already so), the caller then holding one reference it gives back
    /// with `unsubscribe(room:)`; with a failure (no answer before the
    /// command deadline, or closing) holding nothing.
    public func subscribe(room: String, ready: @escaping RoomReady) {
        let accepted = outbox.withLock { state -> Bool in
            guard !state.stopping else { return false }
            state.rooms.append(.acquire(room, ready))
            return true
        }
        if accepted { wakeup.signal() } else { ready(.failure(.closed)) }
    }

    /// `subscribe(room:ready:)`, waited for.
    public func subscribe(room: String) async -> Result<Void, BusFailure> {
        await withCheckedContinuation { continuation in
            subscribe(room: room) { continuation.resume(returning: $0) }
        }
    }

    /// Gives back a reference a successful `subscribe(room:)` handed out.
    /// The room is unsubscribed when nothing holds it for the linger.
    public func unsubscribe(room: String) {
        let accepted = outbox.withLock { state -> Bool in
            // Closing: the subscription goes with the socket.
            guard !state.stopping else { return false }
            state.rooms.append(.release(room))
            return true
        }
        if accepted { wakeup.signal() }
    }

    /// Sends a command and waits for its reply.
    public func request(_ kind: CommandKind, to destination: Destination, user: [UInt8], body: [UInt8]) async -> Result<Event, BusFailure> {
        await withCheckedContinuation { continuation in
            send(kind, to: destination, user: user, body: body) { continuation.resume(returning: $0) }
        }
    }

    typealias Machine = BusClientMachine<Completion>
    typealias Rooms = RoomSubscriptions<RoomReady>

    /// The bus thread: a poll loop that feeds the machine what happens and
    /// does what it says.
    private func run() throws {
        let sockets = try BusSockets(context: context, bus: bus, security: security, frontendID: frontendID, storeShards: initialShards)
        defer { sockets.close() }
        var machine = Machine(policy: policy, shards: initialShards)
        var rooms = Rooms(frontendID: frontendID, timing: roomTiming)
        var roomEvents: [RoomEvent] = []
        // However the loop ends, nobody is left waiting for an answer.
        defer {
            perform(machine.close(), &roomEvents)
            perform(rooms.close(), on: sockets)
        }
        let push: Machine.Push = { [self] outbound in transmit(outbound, on: sockets) }
        var trimmer = IdleTrim()
        var stopping = false
        while !(stopping && machine.isFinished(now: monotonicNanos())) {
            // Each full queue's PUSH is polled for room, after the two fixed items.
            let full = machine.fullQueues
            var poller = Poller()
            poller.add(.socket(sockets.events))
            poller.add(.fd(wakeup.fd))
            for queue in full { poller.add(.socket(sockets.queues[queue]!), events: pollOut) }
            for monitor in sockets.monitors { poller.add(.socket(monitor)) }
            let wake = [machine.nextWakeup, rooms.nextWakeup].compactMap { $0 }.min()
            let ready = try poller.poll(timeoutMilliseconds: Self.pollTimeout(until: wake))
            if ready.dropFirst(2 + full.count).contains(where: { $0 & pollIn != 0 }) { try sockets.checkHandshakes() }
            for (offset, queue) in full.enumerated() where ready[2 + offset] & pollOut != 0 {
                perform(machine.writable(queue: queue, now: monotonicNanos(), push: push), &roomEvents)
            }
            if ready[1] & pollIn != 0 && takeOutbox(into: &machine, &rooms, sockets: sockets, push: push, &roomEvents) { stopping = true }
            if ready[0] & pollIn != 0 { try readEvents(sockets, into: &machine, &rooms, push: push, &roomEvents) }
            let now = monotonicNanos()
            perform(machine.tick(now: now, push: push), &roomEvents)
            perform(rooms.tick(now: now), on: sockets)
            if !roomEvents.isEmpty { callbacks.roomEvents(roomEvents) }
            trimmer.trimIfBurstEnded(moved: roomEvents.count, logger: logger)
            roomEvents.removeAll(keepingCapacity: true)
            if let snapshot = machine.takeOutstandingChange() { outstandingSnapshot.withLock { $0 = snapshot } }
            shardCount.store(machine.shards, ordering: .relaxed)
            reshardingSnapshot.store(machine.resharding != nil, ordering: .relaxed)
        }
    }

    static func pollTimeout(until wake: UInt64?) -> Int {
        guard let wake else { return -1 }
        let now = monotonicNanos()
        return wake <= now ? 0 : Int((wake - now) / 1_000_000) + 1
    }

    /// Hands what `send` and `subscribe` queued to the machines. Returns
    /// true once `stop` was called.
    private func takeOutbox(
        into machine: inout Machine, _ rooms: inout Rooms, sockets: BusSockets, push: Machine.Push, _ roomEvents: inout [RoomEvent]
    ) -> Bool {
        wakeup.drain()
        let (queue, requests, stopping) = outbox.withLock { state in
            defer {
                state.queue.removeAll(keepingCapacity: true)
                state.rooms.removeAll(keepingCapacity: true)
            }
            return (state.queue, state.rooms, state.stopping)
        }
        let now = monotonicNanos()
        for submission in queue { perform(machine.submit(submission, now: now, push: push), &roomEvents) }
        for request in requests {
            switch request {
            case .acquire(let room, let ready): perform(rooms.acquire(room, waiter: ready, now: now), on: sockets)
            case .release(let room): perform(rooms.release(room, now: now), on: sockets)
            }
        }
        // The deadline was stored before `stopping`: it is read after it.
        if stopping { machine.stop(drainUntil: drainDeadline.load(ordering: .relaxed)) }
        return stopping
    }

    /// Reads what is waiting on the events socket, bounded so commands keep
    /// flowing under load.
    private func readEvents(
        _ sockets: BusSockets, into machine: inout Machine, _ rooms: inout Rooms, push: Machine.Push, _ roomEvents: inout [RoomEvent]
    ) throws {
        for _ in 0..<4096 {
            guard let frames = try sockets.events.receive(dontWait: true) else { break }
            let event: Event
            do {
                event = try Event(frames: frames)
            } catch {
                logger.warning("dropping malformed bus event", metadata: ["error": "\(error)"])
                continue
            }
            if event.kind == .synced {
                if let sync = SubscriptionSync(event) {
                    perform(rooms.synced(sync, now: monotonicNanos()), on: sockets)
                } else {
                    logger.warning("dropping malformed bus event", metadata: ["topic": "\(event.topic)"])
                }
                continue
            }
            if let document = MetricsReport.document(event) {
                callbacks.metrics(document)
                continue
            }
            // The machine may send to every shard below an announced count at once.
            if let news = ShardCount(event), news.count > sockets.storeShards {
                do {
                    try sockets.connectStores(upTo: news.count)
                } catch {
                    logger.error("cannot reach the new store shards, keeping the count", metadata: ["to": "\(news.count)", "error": "\(error)"])
                    continue
                }
            }
            perform(machine.receive(event, now: monotonicNanos(), push: push), &roomEvents)
        }
    }

    /// Queues one command on its PUSH without waiting; false when it is full.
    private func transmit(_ outbound: Machine.Outbound, on sockets: BusSockets) -> Bool {
        var command = outbound.command
        // After this the client has been told the command failed: a
        // worker that gets it later must not carry it out.
        let now = monotonicNanos()
        command.deadline = wallClockNanos() + (outbound.deadline > now ? outbound.deadline - now : 0)
        do {
            return try sockets.queues[outbound.queue]!.send(command.encode(), dontWait: true)
        } catch {
            logger.error("bus send failed", metadata: ["error": "\(error)"])
            return true
        }
    }

    private func perform(_ actions: [Machine.Action], _ roomEvents: inout [RoomEvent]) {
        for action in actions {
            switch action {
            case .complete(let completion, let result): completion(result)
            case .deliver(let event): roomEvents.append(event)
            case .heartbeat(let beat): callbacks.heartbeat(beat.worker.description, beat.body)
            case .linkGap(let gap):
                // What came before the gap's end is handed on first, so the
                // sockets get it before they close.
                if !roomEvents.isEmpty { callbacks.roomEvents(roomEvents) }
                roomEvents.removeAll()
                callbacks.linkGap(gap)
            case .log(let fact): log(fact)
            }
        }
    }

    /// Room subscriptions: the events socket's subscriptions, and the
    /// handshakes waiting for them.
    private func perform(_ actions: [Rooms.Action], on sockets: BusSockets) {
        for action in actions {
            do {
                switch action {
                case .subscribe(let room): try sockets.events.subscribe(Topic.room(room))
                case .unsubscribe(let room): try sockets.events.unsubscribe(Topic.room(room))
                case .requestSync(let sync): try sockets.events.subscribe(sync.topic)
                case .endSync(let sync): try sockets.events.unsubscribe(sync.topic)
                case .ready(let ready): ready(.success(()))
                case .failed(let ready, let failure):
                    if case .timedOut = failure { logger.warning("room subscription not confirmed by the broker in time") }
                    ready(.failure(failure))
                }
            } catch {
                // Only a closed socket or context refuses: its waiters time out.
                logger.error("room subscription change failed", metadata: ["error": "\(error)"])
            }
        }
    }

    private func log(_ fact: Machine.Fact) {
        switch fact {
        case .answered(let queue, let nanos):
            commandDuration(queue).recordNanoseconds(Int64(clamping: nanos))
        case .queueFull(let queue):
            logger.warning("command queue full, holding commands", metadata: ["queue": "\(queue)"])
        case .queueHasRoom(let queue, let held):
            logger.info("command queue has room again", metadata: ["queue": "\(queue)", "held.ms": "\(held / 1_000_000)"])
        case .poison(let id, let kind, let worker):
            // In flight at two deaths: most likely what kills the worker.
            // Resending it would kill the next one.
            logger.error("poison command: failing it, not resending", metadata: [
                "request.id": "\(id)", "kind": "\(kind.rawValue)", "worker": "\(worker)",
            ])
        case .workerReplaced(let worker, let resent):
            logger.info("worker replaced, resending", metadata: ["worker": "\(worker)", "commands": "\(resent)"])
        case .linkRestored(let worker, let generation, let resent):
            logger.warning("a worker's link to this broker was down; resending and closing its rooms' sockets with 1012", metadata: [
                "worker": "\(worker)", "link": "\(generation)", "commands": "\(resent)",
            ])
        case .resending(let id, let attempt, let kind):
            logger.debug("resending command", metadata: ["request.id": "\(id)", "attempt": "\(attempt)", "kind": "\(kind.rawValue)"])
        case .timedOut(let id, let kind):
            logger.warning("command timed out", metadata: ["request.id": "\(id)", "kind": "\(kind.rawValue)"])
        case .shardsChanging(let from, let to):
            logger.info("store shard count changing", metadata: ["from": "\(from)", "to": "\(to)"])
        case .shardsChanged(let to, let held):
            logger.info("store shard count changed", metadata: ["shards": "\(to)", "held.commands": "\(held)"])
        case .malformed(let topic):
            logger.warning("dropping malformed bus event", metadata: ["topic": "\(topic)"])
        }
    }
}

/// The bus thread's sockets: the events SUB and a PUSH per command queue.
/// Used only on that thread.
final class BusSockets {
    let events: Socket
    private(set) var queues: [String: Socket] = [:]
    /// Store shards connected, from 0.
    private(set) var storeShards = 0
    private let context: Context
    private let bus: BusAddress
    private let security: BusSecurity

    init(context: Context, bus: BusAddress, security: BusSecurity, frontendID: String, storeShards: Int) throws {
        self.context = context
        self.bus = bus
        self.security = security
        events = try Socket(context: context, type: .sub)
        try events.secure(security, bus: bus, as: .client)
        try watchHandshakes(events, "sub")
        // Past the mark the broker's XPUB drops this frontend's events (and
        // only this frontend's): a lost reply is resent, a lost room event is
        // a gap clients fill from history (docs/protocol.md, "Memory bounds").
        try events.setHighWaterMarks(send: HighWaterMarks.events, receive: HighWaterMarks.events)
        try events.setReconnectInterval(milliseconds: 20)
        try events.subscribe(Topic.reply(frontendID))
        // Rooms are subscribed one by one as sockets enter them
        // (`RoomSubscriptions`); the broker filters per frontend.
        try events.subscribe(Topic.heartbeatPrefix)
        try events.subscribe(Topic.storeShards)
        try events.subscribe(Topic.metrics)
        try events.connect(bus.eventsOut)
        for role in Role.allCases where role != .store && role.hasQueue { try open(Endpoints.queue(role)) }
        try connectStores(upTo: storeShards)
    }

    func connectStores(upTo count: Int) throws {
        while storeShards < count {
            try open(Endpoints.queue(.store, shard: storeShards))
            storeShards += 1
        }
    }

    private func open(_ queue: String) throws {
        let push = try Socket(context: context, type: .push)
        try push.secure(security, bus: bus, as: .client)
        try watchHandshakes(push, "push-\(queue)")
        // Full: the machine holds commands, in order, until the queue drains
        // or their deadline fails them (503). Never dropped, and the bus
        // thread never blocks on a send.
        try push.setHighWaterMarks(send: HighWaterMarks.commands, receive: HighWaterMarks.commands)
        try push.setReconnectInterval(milliseconds: 20)
        try push.connect(bus.queueIn(queue))
        queues[queue] = push
    }

    /// With CURVE: each socket's monitor of its handshakes (a refused
    /// connection is not retried by libzmq, so this host would wait forever).
    private(set) var monitors: [Socket] = []
    private var watchers: [HandshakeWatch] = []
    private static let monitorCount = Atomic<Int>(0)

    private func watchHandshakes(_ socket: Socket, _ name: String) throws {
        guard case .tcp = bus, let keys = security.keys else { return }
        // Unique within the context (tests run several clients in one).
        let id = "bus-client-\(Self.monitorCount.add(1, ordering: .relaxed).newValue)-\(name)"
        monitors.append(try socket.monitor(name: id, events: HandshakeWatch.events))
        watchers.append(HandshakeWatch(hostKey: keys.publicKey))
    }

    /// Throws `BusHandshakeFailure` if a monitor saw this host refused.
    func checkHandshakes() throws {
        for (index, monitor) in monitors.enumerated() {
            while let frames = try monitor.receive(dontWait: true) {
                guard let event = MonitorEvent(frames: frames) else { continue }
                if let failure = watchers[index].saw(event) { throw failure }
            }
        }
    }

    func close() {
        for monitor in monitors { monitor.close() }
        events.close()
        for socket in queues.values { socket.close() }
    }
}
