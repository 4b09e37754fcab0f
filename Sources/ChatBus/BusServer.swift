import ChatWire
import Foundation
import Logging
import ZeroMQ

/// A worker's side of the bus: PULL commands from its queue, PUB events and
/// replies. Runs on the calling thread; `handle` gets every command that is
/// waiting (up to `maxBatch`) at once, so the worker can commit them in one
/// transaction.
///
/// With several brokers (`peers:`, one per frontend host) the worker keeps
/// one link to each (`Link`: its PUB, its echo SUB, its queue PULL), every
/// link with its own readiness (`BusLinkMachine`): a link takes commands
/// once its own echo came back, and a lost broker stops only its link. A
/// command is answered on the link it came from (its frontend is behind
/// that broker); room events, the search nudge and heartbeats go out on
/// every serving link (every frontend host may have clients in the room).
public final class BusServer {
    public let role: Role
    /// A standby's is set when it is promoted.
    public private(set) var shard: Int
    private let buses: [BusAddress]
    private var logger: Logger
    private let context: Context
    private let security: BusSecurity
    /// The store shard count this host runs: a broker announcing another is
    /// logged as an error (rooms would be routed differently on different
    /// hosts). Nil: not checked (one host, where `ctl scale store` changes it).
    private let expectedShards: Int?

    /// - Parameter context: the ZeroMQ context to share (`inproc://` endpoints); nil: its own.
    /// - Parameter security: CURVE keys and heartbeats for a `tcp://` bus.
    public convenience init(
        role: Role, shard: Int, bus: BusAddress, logger: Logger, context: Context? = nil, security: BusSecurity = .none
    ) throws {
        try self.init(role: role, shard: shard, buses: [bus], logger: logger, context: context, security: security)
    }

    /// - Parameters:
    ///   - buses: every broker to serve (a link to each), at least one.
    ///   - expectedShards: the store shard count to check brokers' announcements against.
    ///   - security: CURVE keys and heartbeats for `tcp://` buses; each link's
    ///     sockets use its own broker's server key (from the peers file).
    public init(
        role: Role, shard: Int, buses: [BusAddress], logger: Logger, context: Context? = nil, expectedShards: Int? = nil,
        security: BusSecurity = .none
    ) throws {
        // The poller's key has a bit per link (`polling`).
        precondition((1...60).contains(buses.count), "a worker serves 1 to 60 brokers")
        self.role = role
        self.shard = shard
        self.buses = buses
        self.logger = logger
        self.context = try context ?? Context()
        self.expectedShards = expectedShards
        self.security = security
    }

    /// Runs until `shouldStop` returns true (checked at least once a second).
    /// - Parameters:
    ///   - maxBatch: most commands handed over at once; bounds a transaction's length.
    ///   - handle: turns a batch of commands into events to publish, in order.
    ///   - heartbeat: called every 500 ms, `serving` false while no link
    ///     serves (at start, or after losing every broker).
    ///   - idle: called when no command came for a poll interval (500 ms); for deferred work.
    ///   - nudge: after handling a batch that published a room event, publish
    ///     one single-frame message on this topic (the store tells the search
    ///     worker there is news in the database), at most once per
    ///     `NudgeThrottle.gap`.
    ///   - wakeOn: also call `idle` as soon as a nudge on this topic arrives
    ///     (the search worker indexes on news, from the database). At most one
    ///     nudge waits (`ZMQ_CONFLATE`): a stopped or slow worker costs the
    ///     broker one message, not a copy of every event.
    public func run(
        maxBatch: Int = 512, shouldStop: () -> Bool, nudge: String? = nil, wakeOn: String? = nil,
        heartbeat: (_ serving: Bool) -> Void = { _ in }, idleInterval: @escaping () -> Int32 = { 500 },
        idle: @escaping () -> [Event] = { [] }, handle: @escaping ([Command]) -> [Event]
    ) throws {
        let loop = WorkerLoop(maxBatch: maxBatch, nudge: nudge, wakeOn: wakeOn, idleInterval: idleInterval, idle: idle, handle: handle)
        // "failed": this process replaces one that crashed or hung, so
        // frontends count a death toward their pending commands' poison.
        let beat = Heartbeat(
            worker: WorkerName(role, shard), pid: getpid(),
            failed: ProcessInfo.processInfo.environment["CHATD_PREDECESSOR_FAILED"] == "1")
        // Commands only once what this worker publishes reaches subscribers:
        // each link waits for its own heartbeat to come back.
        var session = try open(echo: beat.event.encode(), mode: .worker)
        defer { session.close() }
        session.beat = beat
        session.refreshSends()
        session.loop = loop
        try serve(&session, shouldStop: shouldStop, heartbeat: heartbeat, assignments: nil)
    }

    /// Runs as the role's warm standby: connects and waits for its echo as a
    /// worker does, says it is ready (`heartbeat(true)`) once a link serves,
    /// and then waits for the supervisor's `StandbyAssignment` on
    /// `assignments` (its standard input) without taking a command or
    /// heartbeating under any worker's name. Once named, it takes
    /// `promoted`'s loop and serves as that worker at once: its publishers
    /// already reach every subscriber, so only the queues are left to
    /// connect. Returns when told to stop, or when the channel closes (the
    /// supervisor is gone) or says something else.
    /// - Parameter promoted: called once, with the assignment, before the
    ///   first command: the worker's own start-up that may not happen in a
    ///   standby (the search worker opens its index there: only one process
    ///   writes it).
    public func runStandby(
        assignments fd: Int32, shouldStop: () -> Bool, heartbeat: (_ serving: Bool) -> Void,
        promoted: (StandbyAssignment) throws -> WorkerLoop
    ) throws {
        var session = try open(echo: StandbyName(role).echo(pid: getpid()).encode(), mode: .standby)
        defer { session.close() }
        try withoutActuallyEscaping(promoted) { promoted in
            try serve(&session, shouldStop: shouldStop, heartbeat: heartbeat, assignments: Standby(fd: fd, promoted: promoted))
        }
    }

    /// What a serving worker does with its commands and its idle time (the
    /// parameters of `run`).
    public struct WorkerLoop {
        public var maxBatch: Int
        public var nudge: String?
        public var wakeOn: String?
        public var idleInterval: () -> Int32
        public var idle: () -> [Event]
        public var handle: ([Command]) -> [Event]

        public init(
            maxBatch: Int = 512, nudge: String? = nil, wakeOn: String? = nil, idleInterval: @escaping () -> Int32 = { 500 },
            idle: @escaping () -> [Event] = { [] }, handle: @escaping ([Command]) -> [Event]
        ) {
            self.maxBatch = maxBatch
            self.nudge = nudge
            self.wakeOn = wakeOn
            self.idleInterval = idleInterval
            self.idle = idle
            self.handle = handle
        }
    }

    /// One broker's sockets and readiness.
    struct Link {
        let bus: BusAddress
        let pub: Socket
        /// The PUB's monitor: says when the broker's connection drops.
        let pubEvents: Socket
        /// Hears this process's own echo (and `ctl.shards` when checked).
        let echo: Socket
        /// The queue, connected when the link first takes commands.
        var pull: Socket?
        /// The nudge SUB (`wakeOn`), connected with the queue.
        var news: Socket?
        var machine: BusLinkMachine
        /// A store shard count this broker announced that differs from
        /// `expectedShards`, once logged.
        var foreignShards: Int?
        /// With CURVE: tells this broker refusing us from a hiccup.
        var handshakes: HandshakeWatch?
        /// What this link sends while it waits, and recognises when it comes
        /// back, and sends as its heartbeat: the worker's heartbeat with this
        /// link's generation (a standby's echo as it is).
        var sends: [[UInt8]] = []
        /// When this broker refused the link's handshake (monotonic), with
        /// other links to serve: its sockets are made again
        /// `refusedRetryNanos` later, the others serving on.
        var refusedAt: UInt64?

        func close() {
            news?.close()
            pull?.close()
            echo.close()
            pubEvents.close()
            pub.close()
        }
    }

    /// A standby's channel from the supervisor.
    struct Standby {
        let fd: Int32
        let promoted: (StandbyAssignment) throws -> WorkerLoop
        var line: [UInt8] = []
    }

    /// What a worker (or a standby) keeps while it runs.
    struct Session {
        var links: [Link]
        /// A standby's echo, or the worker's heartbeat with no link generation.
        var echo: [[UInt8]]
        /// Set for a worker (a standby's when it is promoted).
        var beat: Heartbeat?
        var loop: WorkerLoop?
        var sequencer = StreamSequencer()
        var nudges = NudgeThrottle()
        var trimmer = IdleTrim()
        var lastSweep = monotonicNanos()
        var lastAlive: UInt64?
        var wasServing = false
        /// Which link's queue is read first: each pass the next, so one
        /// busy broker cannot fill every batch.
        var rotation = 0
        /// The pass's poller, made again only when what is polled changes
        /// (a link starts or stops taking commands, the standby's channel):
        /// not once per pass, which at low load is once per command.
        var poller: (key: Int, poller: Poller, slots: [Slots], channel: Int?)?

        var serving: Bool { links.contains { $0.machine.isServing } }

        /// Sets a link's `sends` for its generation: at the start, when the
        /// link dropped, when a standby becomes a worker.
        mutating func refreshSends(_ index: Int) {
            guard var beat else { return links[index].sends = echo }
            beat.link = links[index].machine.generation
            links[index].sends = beat.event.encode()
        }

        mutating func refreshSends() { for index in links.indices { refreshSends(index) } }

        func close() { links.forEach { $0.close() } }
    }

    /// Where each link's sockets are in a pass's poller.
    struct Slots {
        var monitor: Int
        var echo: Int
        var pull: Int?
        var news: Int?
    }

    /// A link to every broker, each waiting for its echo.
    private func open(echo: [[UInt8]], mode: BusLinkMachine.Mode) throws -> Session {
        let topic = String(decoding: echo[0], as: UTF8.self)
        var links: [Link] = []
        do {
            for (index, bus) in buses.enumerated() { links.append(try openLink(bus, index: index, echoTopic: topic, mode: mode)) }
        } catch {
            links.forEach { $0.close() }
            throw error
        }
        var session = Session(links: links, echo: echo)
        session.refreshSends()
        return session
    }

    private func openLink(_ bus: BusAddress, index: Int, echoTopic: String, mode: BusLinkMachine.Mode) throws -> Link {
        var monitor: Socket?
        let pub = try connect(.pub, to: bus.eventsIn, of: bus) { pub in
            // Drops at the mark, never blocks: only reached when the broker (the
            // supervisor) stopped reading; a lost reply is resent by its frontend.
            try pub.setHighWaterMarks(send: HighWaterMarks.events, receive: HighWaterMarks.events)
            // Replies published in the instant before exit must still leave.
            pub.lingerMilliseconds = 1000
            // A lost connection to the broker (it restarted: a frontend host of
            // `run: workers` hosts) closes this link's gate again, until its echo is back.
            // With keys, also its handshakes: libzmq never retries a refused
            // connection, so a refused worker would wait silently forever.
            let handshakes = security.keys == nil ? 0 : HandshakeWatch.events
            // Random: a link made again after a refusal must not meet the old
            // monitor's endpoint, which may still be bound for a moment.
            monitor = try pub.monitor(name: "pub-\(role.rawValue)-\(shard)-\(getpid())-\(index)-\(UInt32.random(in: 0...UInt32.max))", events: MonitorEvent.disconnected | handshakes)
        }
        let echo = try connect(.sub, to: bus.eventsOut, of: bus) { sub in
            try sub.setHighWaterMarks(send: HighWaterMarks.echo, receive: HighWaterMarks.echo)
            try sub.subscribe(echoTopic)
            if expectedShards != nil { try sub.subscribe(Topic.storeShards) }
        }
        // `monitor` was set: the PUB's configuration ran without throwing.
        var link = Link(bus: bus, pub: pub, pubEvents: monitor!, echo: echo, machine: BusLinkMachine(mode: mode, now: monotonicNanos()))
        if let keys = security.keys, case .tcp = bus { link.handshakes = HandshakeWatch(hostKey: keys.publicKey) }
        return link
    }

    /// Makes and connects every socket of a link: the one place where what
    /// a bus socket needs before it connects is set.
    private func connect(_ type: SocketType, to endpoint: String, of bus: BusAddress, configure: (Socket) throws -> Void) throws -> Socket {
        // This link's broker's server key, not another link's.
        try Socket.connected(type, context: context, to: endpoint, of: bus, security: security) { socket in
            try socket.setReconnectInterval(milliseconds: 20)
            // A stopped broker's host is retried at most once a second, not
            // every 20 ms forever by each of a link's four sockets in every
            // worker; a broker that restarts is still back within a second.
            try socket.setReconnectIntervalMax(milliseconds: 1000)
            try configure(socket)
        }
    }

    /// Connects a link's queue (and the nudge SUB) the first time it serves.
    private func connectQueue(_ link: inout Link, loop: WorkerLoop) throws {
        guard link.pull == nil, link.news == nil else { return }
        let queue = Endpoints.queue(role, shard: shard)
        // Full: the broker's PUSH stops taking more; nothing is dropped.
        // A role without a queue (webhooks) only wakes on its nudge.
        if role.hasQueue {
            link.pull = try connect(.pull, to: link.bus.queueOut(queue), of: link.bus) {
                try $0.setHighWaterMarks(send: HighWaterMarks.commands, receive: HighWaterMarks.commands)
            }
        }
        if let topic = loop.wakeOn {
            link.news = try connect(.sub, to: link.bus.eventsOut, of: link.bus) { sub in
                try sub.setConflate()
                try sub.subscribe(topic)
            }
        }
    }

    /// Carries out a link machine's actions.
    private func perform(_ actions: [BusLinkMachine.Action], on index: Int, _ s: inout Session) throws {
        let bus = s.links[index].bus.eventsIn
        for action in actions {
            switch action {
            case .sendEcho: try s.links[index].pub.send(s.links[index].sends)
            case .sendHeartbeat: if s.beat != nil { try s.links[index].pub.send(s.links[index].sends) }
            case .takeCommands: if let loop = s.loop { try connectQueue(&s.links[index], loop: loop) }
            // The queue stays connected; it is no longer polled (`takesCommands`).
            case .stopCommands: break
            case .log(.serving(let nanos)):
                logger.info("broker echoed; serving it", metadata: ["bus": "\(bus)", "waited.ms": "\(nanos / 1_000_000)"])
            case .log(.lost):
                // Commands the new broker hands over at once would have their
                // replies and events dropped until it forwards the subscriptions
                // to this PUB: the link waits for its echo again.
                logger.warning("lost the broker; taking no commands from it until it echoes", metadata: [
                    "bus": "\(bus)", "links.serving": "\(s.links.filter(\.machine.isServing).count)/\(s.links.count)",
                ])
            }
        }
    }

    /// The passes of a worker or a standby, until told to stop (or a
    /// standby's channel ends).
    private func serve(_ s: inout Session, shouldStop: () -> Bool, heartbeat: (_ serving: Bool) -> Void, assignments: Standby?) throws {
        var standby = assignments
        // Fault injection for the poison-command test: with this set, a
        // command whose body contains it crashes the worker (a trap, as a
        // bug would). Unset in production: nothing is checked.
        let crashMarker = ProcessInfo.processInfo.environment["CHATD_FAILPOINT_CRASH_ON"].flatMap { $0.isEmpty ? nil : Array($0.utf8) }
        while !shouldStop() {
            let now = monotonicNanos()
            try retryRefused(&s, now: now)
            for index in s.links.indices { try perform(s.links[index].machine.tick(now: now), on: index, &s) }
            reportAlive(&s, now: now, heartbeat: heartbeat)
            if let nudge = s.loop?.nudge, s.nudges.due(now: now) { try publishEverywhere([Array(nudge.utf8)], s) }
            // The PUB takes in the subscriptions the broker forwards only when
            // it is called; unread for days of a standby's waiting they would
            // overflow its queue, and the broker drops what no longer fits:
            // once promoted, this worker would filter out those rooms' events.
            if s.loop == nil { for link in s.links { _ = link.pub.events } }
            // The assignment is taken once a link serves: a promoted standby publishes at once.
            let fd = s.serving ? standby?.fd : nil
            let (poller, slots, channel) = polling(&s, channel: fd)
            let ready = try poller.poll(timeoutMilliseconds: timeout(s, now: monotonicNanos()))
            let took = try readLinks(ready, slots: slots, &s, crashMarker: crashMarker)
            if !took, let loop = s.loop {
                _ = try publish(loop.idle(), &s, replies: [:])
                s.trimmer.trimIfBurstEnded(moved: 0, logger: logger)
            }
            // Readable, hung up or in error: read says which.
            guard let channel, ready[channel] != 0, var waiting = standby else { continue }
            switch readAssignment(&waiting) {
            case .waiting: standby = waiting
            case .end: return
            case .assignment(let assignment):
                guard try promote(&s, to: assignment, with: waiting) else { return }
                standby = nil
                s.lastAlive = nil  // READY=1 under the worker's name at once
            }
        }
    }

    /// The poller of this pass: every link's monitor and echo, the queues
    /// (and nudges) of those that take commands, and `channel`.
    private func polling(_ s: inout Session, channel fd: Int32?) -> (Poller, [Slots], Int?) {
        // Bit i: link i takes commands; the bit past the links: the channel.
        var key = fd == nil ? 0 : 1 << s.links.count
        for (index, link) in s.links.enumerated() where link.machine.takesCommands { key |= 1 << index }
        if let cached = s.poller, cached.key == key { return (cached.poller, cached.slots, cached.channel) }
        var poller = Poller()
        let slots = addLinks(to: &poller, s)
        let channel = fd.map { poller.add(.fd($0)) }
        s.poller = (key, poller, slots, channel)
        return (poller, slots, channel)
    }

    private func addLinks(to poller: inout Poller, _ s: Session) -> [Slots] {
        var slots: [Slots] = []
        for link in s.links {
            var slot = Slots(monitor: poller.add(.socket(link.pubEvents)), echo: poller.add(.socket(link.echo)))
            if link.machine.takesCommands {
                slot.pull = link.pull.map { poller.add(.socket($0)) }
                slot.news = link.news.map { poller.add(.socket($0)) }
            }
            slots.append(slot)
        }
        return slots
    }

    /// Until the next thing due: a link's echo or heartbeat, the nudge, the
    /// idle work, the supervisor's 500 ms.
    private func timeout(_ s: Session, now: UInt64) -> Int {
        var wake = now &+ 500_000_000
        for link in s.links { if let at = link.machine.nextWake(now: now) { wake = min(wake, at) } }
        if let at = s.nudges.deadline { wake = min(wake, at &+ 1_000_000) }
        let milliseconds = Int((wake - min(wake, now) + 999_999) / 1_000_000)
        guard let loop = s.loop else { return milliseconds }
        return min(milliseconds, Int(loop.idleInterval()))
    }

    /// Tells the supervisor this process lives every 500 ms, and at once
    /// when it starts or stops serving: `serving` while any link serves.
    private func reportAlive(_ s: inout Session, now: UInt64, heartbeat: (_ serving: Bool) -> Void) {
        let serving = s.serving
        guard serving != s.wasServing || s.lastAlive.map({ now &- $0 >= 500_000_000 }) ?? true else { return }
        heartbeat(serving)
        s.lastAlive = now
        s.wasServing = serving
    }

    /// Reads every link: its monitor, its echo, its nudges, then the queues
    /// of those that take commands, handled as one batch. Returns whether
    /// any command came.
    private func readLinks(_ ready: [Int16], slots: [Slots], _ s: inout Session, crashMarker: [UInt8]?) throws -> Bool {
        let now = monotonicNanos()
        var woken = false
        for (index, slot) in slots.enumerated() {
            if ready[slot.monitor] & pollIn != 0, try lostBroker(index, &s, now: now) {
                // Only a serving link has published anything that could be
                // queued (`remakeLink`): once per serving spell, so a peer that
                // accepts and drops at once (a proxy whose broker is down)
                // causes no storm of new sockets. A refused link keeps its
                // sockets until `retryRefused`.
                if s.links[index].refusedAt == nil, s.links[index].machine.isServing { try remakeLink(index, &s) }
                let actions = s.links[index].machine.disconnected(now: now)
                s.refreshSends(index)
                try perform(actions, on: index, &s)
            }
            if ready[slot.echo] & pollIn != 0 { try readEcho(index, &s, now: now) }
            if let news = slot.news, ready[news] & pollIn != 0 {
                // Only the wake-up matters, not the nudges themselves.
                while try s.links[index].news?.receive(dontWait: true) != nil {}
                woken = true
            }
        }
        guard let loop = s.loop else { return false }
        if woken { _ = try publish(loop.idle(), &s, replies: [:]) }
        // A queue polled readable, of a link that still takes commands (it may
        // have lost its broker in this pass).
        let readable = { (index: Int) in slots[index].pull.map { ready[$0] & pollIn != 0 } == true }
        guard slots.indices.contains(where: { readable($0) && s.links[$0].machine.takesCommands }) else { return false }
        try handleBatch(from: readable, &s, loop: loop, crashMarker: crashMarker)
        return true
    }

    /// What is waiting on the readable links' queues, up to `maxBatch`,
    /// handled in one batch; each reply goes back on its command's link.
    private func handleBatch(from readable: (Int) -> Bool, _ s: inout Session, loop: WorkerLoop, crashMarker: [UInt8]?) throws {
        let arrival = monotonicNanos()
        var batch: [Command] = []
        var received = 0
        // reply.<origin> → the link its commands came on (a frontend is behind one broker).
        var replies: [String: Int] = [:]
        s.rotation = (s.rotation + 1) % s.links.count
        for offset in s.links.indices {
            let index = (offset + s.rotation) % s.links.count
            guard readable(index), s.links[index].machine.takesCommands, let pull = s.links[index].pull else { continue }
            let (commands, count) = try receiveBatch(pull, maxBatch: loop.maxBatch - received, sequencer: &s.sequencer, now: arrival)
            received += count
            if s.links.count > 1 { for command in commands { replies[Topic.reply(command.origin)] = index } }
            if batch.isEmpty { batch = commands } else { batch += commands }
        }
        s.trimmer.trimIfBurstEnded(moved: received, logger: logger)
        if arrival - s.lastSweep > 60_000_000_000 {
            s.sequencer.forget(silentSince: arrival - 60_000_000_000)
            s.lastSweep = arrival
        }
        guard !batch.isEmpty else { return }
        if let crashMarker, batch.contains(where: { $0.body.firstRange(of: crashMarker) != nil }) {
            fatalError("failpoint: a command carries CHATD_FAILPOINT_CRASH_ON")
        }
        let wrote = try publish(loop.handle(batch), &s, replies: replies)
        if let nudge = loop.nudge, wrote, s.nudges.wrote(now: monotonicNanos()) { try publishEverywhere([Array(nudge.utf8)], s) }
    }

    /// Sends events: a reply on the link its command came from (its
    /// frontend is behind that broker), everything else on every serving
    /// link. Returns whether a room event was among them.
    private func publish(_ events: [Event], _ s: inout Session, replies: [String: Int]) throws -> Bool {
        var wrote = false
        for event in events {
            if event.kind == .roomEvent { wrote = true }
            if s.links.count == 1 {
                try s.links[0].pub.send(event.encode())
            } else if event.kind == .reply, let index = replies[event.topic] {
                try s.links[index].pub.send(event.encode())
            } else {
                try publishEverywhere(event.encode(), s)
            }
        }
        return wrote
    }

    private func publishEverywhere(_ frames: [[UInt8]], _ s: Session) throws {
        for link in s.links where link.machine.isServing { try link.pub.send(frames) }
    }

    /// What came on a link's echo SUB: its own echo (the link serves), and
    /// the broker's store shard count when it is checked.
    private func readEcho(_ index: Int, _ s: inout Session, now: UInt64) throws {
        var echoed = false
        while let frames = try s.links[index].echo.receive(dontWait: true) {
            // A predecessor of the same name may still be publishing (its pid
            // differs); an echo sent before the link last dropped has an older generation.
            if frames == s.links[index].sends {
                echoed = true
            } else if let expected = expectedShards, let event = try? Event(frames: frames), let announced = ShardCount(event) {
                checkShards(announced.count, expected: expected, &s.links[index])
            }
        }
        if echoed { try perform(s.links[index].machine.echoed(now: now), on: index, &s) }
    }

    /// Every frontend host routes rooms to store shards by its own count;
    /// hosts that disagree put a room's writes on two shards.
    private func checkShards(_ announced: Int, expected: Int, _ link: inout Link) {
        guard announced != expected else {
            link.foreignShards = nil
            return
        }
        guard link.foreignShards != announced else { return }
        link.foreignShards = announced
        logger.error(
            "a broker announces another store shard count than this host runs: its frontends route rooms to other shards; set storeWorkers to the same count on every host",
            metadata: ["bus": "\(link.bus.eventsIn)", "announced": "\(announced)", "this.host": "\(expected)"])
    }

    /// A standby named: it becomes the worker. False (and logged) for
    /// another role's name.
    private func promote(_ s: inout Session, to assignment: StandbyAssignment, with standby: Standby) throws -> Bool {
        guard assignment.worker.role == role else {
            logger.error("standby of another role named; exiting", metadata: ["assignment": "\(assignment.worker)"])
            return false
        }
        shard = assignment.worker.index
        logger[metadataKey: "worker"] = "\(assignment.worker)"
        let beat = Heartbeat(worker: assignment.worker, pid: getpid(), failed: assignment.predecessorFailed)
        // A broker lost from now on is waited for with this worker's own heartbeat.
        for link in s.links { try link.echo.subscribe(beat.topic) }
        s.beat = beat
        s.echo = beat.event.encode()
        s.refreshSends()
        s.loop = try standby.promoted(assignment)
        logger.info("standby promoted", metadata: ["worker": "\(assignment.worker)", "predecessor.failed": "\(assignment.predecessorFailed)"])
        let now = monotonicNanos()
        for index in s.links.indices { try perform(s.links[index].machine.promote(now: now), on: index, &s) }
        return true
    }

    enum AssignmentRead {
        case waiting
        case end
        case assignment(StandbyAssignment)
    }

    /// Reads the standby's channel: the supervisor's line, once whole. End
    /// of file (the supervisor is gone) or anything but an assignment ends it.
    private func readAssignment(_ standby: inout Standby) -> AssignmentRead {
        var buffer = [UInt8](repeating: 0, count: StandbyAssignment.maxLineBytes)
        let count = buffer.withUnsafeMutableBytes { read(standby.fd, $0.baseAddress, $0.count) }
        if count < 0 && (errno == EINTR || errno == EAGAIN) { return .waiting }
        guard count > 0 else {
            logger.info("the supervisor closed the standby's channel; exiting")
            return .end
        }
        standby.line += buffer[0..<count]
        if let end = standby.line.firstIndex(of: UInt8(ascii: "\n")) {
            let text = String(decoding: standby.line[..<end], as: UTF8.self)
            guard let assignment = StandbyAssignment(line: text) else {
                logger.error("not an assignment on the standby's channel; exiting", metadata: ["line": "\(text)"])
                return .end
            }
            return .assignment(assignment)
        }
        guard standby.line.count <= StandbyAssignment.maxLineBytes else {
            logger.error("no assignment on the standby's channel; exiting")
            return .end
        }
        return .waiting
    }

    /// What is waiting on the queue, up to `maxBatch`, in stream order.
    private func receiveBatch(_ pull: Socket, maxBatch: Int, sequencer: inout StreamSequencer, now: UInt64) throws -> (batch: [Command], received: Int) {
        var batch: [Command] = []
        var received = 0
        while received < maxBatch, let frames = try pull.receive(dontWait: true) {
            received += 1
            do {
                // Commands of a frontend's stream run in its order, even
                // when a resend brings an earlier one after later ones.
                // One whose deadline passed was reported failed: drop it.
                batch += sequencer.accept(try Command(frames: frames), now: now).filter { command in
                    guard let deadline = command.deadline, wallClockNanos() > deadline else { return true }
                    logger.info("dropping an expired command", metadata: ["kind": "\(command.kind.rawValue)", "request.id": "\(command.requestID)"])
                    return false
                }
            } catch {
                logger.warning("dropping malformed command", metadata: ["error": "\(error)"])
            }
        }
        return (batch, received)
    }

    /// Reads a PUB's monitor: did the broker's connection drop? When the
    /// broker refused this host (logged): with one link, throws
    /// `BusHandshakeFailure`, the worker exits and its supervisor's backoff
    /// restart tries again (so a key added to that broker's peers file later
    /// gets in); with several, only this link is lost, and made again
    /// `refusedRetryNanos` later (`retryRefused`): exiting would interrupt
    /// the links the other brokers accept.
    private func lostBroker(_ index: Int, _ s: inout Session, now: UInt64) throws -> Bool {
        var lost = false
        // Read to the end even once refused: an unread monitor stays readable.
        while let frames = try s.links[index].pubEvents.receive(dontWait: true) {
            guard let event = MonitorEvent(frames: frames) else { continue }
            if s.links[index].refusedAt != nil {
                // libzmq retries a handshake that failed without detail: a
                // link that got through after all is not remade (its sockets
                // would be replaced under a link that serves).
                if event.event == MonitorEvent.handshakeSucceeded {
                    s.links[index].refusedAt = nil
                    _ = s.links[index].handshakes?.saw(event)
                }
                continue
            }
            if event.event == MonitorEvent.disconnected { lost = true }
            if let failure = s.links[index].handshakes?.saw(event) {
                failure.log(to: logger)
                guard s.links.count > 1 else { throw failure }
                s.links[index].refusedAt = now
                lost = true
            }
        }
        return lost
    }

    /// A refused link's sockets are made again this long after the refusal.
    static let refusedRetryNanos: UInt64 = 10_000_000_000

    /// Makes a refused link's sockets again once `refusedRetryNanos` passed
    /// (libzmq never retries a refused handshake). Its machine goes on: it
    /// waits for its echo, its generation raised by the refusal's drop.
    private func retryRefused(_ s: inout Session, now: UInt64) throws {
        for index in s.links.indices {
            guard let at = s.links[index].refusedAt, now &- at >= Self.refusedRetryNanos else { continue }
            try remakeLink(index, &s)
            // New connections: the link waits for its echo under a new generation.
            let actions = s.links[index].machine.disconnected(now: now)
            s.refreshSends(index)
            try perform(actions, on: index, &s)
            logger.info("trying the broker that refused this host again", metadata: ["bus": "\(s.links[index].bus.eventsIn)"])
        }
    }

    /// Makes a link's sockets again, its machine kept: after a refusal, and
    /// whenever its broker's connection drops. libzmq keeps a connecting
    /// PUB's pipe across reconnects, so events published between the drop
    /// and this process reading its monitor would go out on the new
    /// connection ahead of the new generation's heartbeat, while older ones
    /// died with the old connection: a frontend would deliver the newer,
    /// then tell its sockets to resume after them, and the older would never
    /// come. Closed at once (linger 0), the old PUB takes them with it; the
    /// gap the new generation reports covers them. The queue's PULL goes too
    /// (commands it had prefetched are resent by the frontends on the gap).
    private func remakeLink(_ index: Int, _ s: inout Session) throws {
        let old = s.links[index]
        old.pub.lingerMilliseconds = 0
        old.close()
        var fresh = try openLink(old.bus, index: index, echoTopic: String(decoding: old.sends[0], as: UTF8.self), mode: old.machine.mode)
        fresh.machine = old.machine
        fresh.foreignShards = old.foreignShards
        s.links[index] = fresh
        s.poller = nil
    }
}
