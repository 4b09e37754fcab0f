import ChatWire
import Foundation
import Logging
import ZeroMQ

/// A worker's side of the bus: PULL commands from its queue, PUB events and
/// replies. Runs on the calling thread; `handle` gets every command that is
/// waiting (up to `maxBatch`) at once, so the worker can commit them in one
/// transaction.
public final class BusServer {
    public let role: Role
    /// A standby's is set when it is promoted.
    public private(set) var shard: Int
    private let bus: BusAddress
    private var logger: Logger
    private let context: Context
    private let security: BusSecurity
    private var stopRequested = false

    /// - Parameter context: the ZeroMQ context to share (`inproc://` endpoints); nil: its own.
    /// - Parameter security: CURVE keys and heartbeats for a `tcp://` bus.
    public init(role: Role, shard: Int, bus: BusAddress, logger: Logger, context: Context? = nil, security: BusSecurity = .none) throws {
        self.role = role
        self.shard = shard
        self.bus = bus
        self.logger = logger
        self.context = try context ?? Context()
        self.security = security
    }

    /// Runs until `shouldStop` returns true (checked at least once a second).
    /// - Parameters:
    ///   - maxBatch: most commands handed over at once; bounds a transaction's length.
    ///   - handle: turns a batch of commands into events to publish, in order.
    ///   - heartbeat: called every heartbeat (500 ms), `serving` false while
    ///     the worker waits for the bus (at start, or after losing the broker).
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
        let link = try openLink(echoTopic: beat.topic)
        defer { link.close() }
        // Commands only once what this worker publishes reaches subscribers.
        guard try awaitEcho(link, frames: beat.event.encode(), shouldStop: shouldStop, heartbeat: heartbeat) else { return }
        try serve(link, beat: beat, loop: loop, shouldStop: shouldStop, heartbeat: heartbeat)
    }

    /// Runs as the role's warm standby: connects and waits for its echo as a
    /// worker does, says it is ready (`heartbeat(true)`), and then waits for
    /// the supervisor's `StandbyAssignment` on `assignments` (its standard
    /// input) without taking a command or heartbeating under any worker's
    /// name. Once named, it takes `promoted`'s loop and serves as that worker
    /// at once: its publisher already reaches every subscriber, so only the
    /// queue is left to connect. Returns when told to stop, or when the
    /// channel closes (the supervisor is gone) or says something else.
    /// - Parameter promoted: called once, with the assignment, before the
    ///   first command: the worker's own start-up that may not happen in a
    ///   standby (the search worker opens its index there: only one process
    ///   writes it).
    public func runStandby(
        assignments fd: Int32, shouldStop: () -> Bool, heartbeat: (_ serving: Bool) -> Void,
        promoted: (StandbyAssignment) throws -> WorkerLoop
    ) throws {
        let echo = StandbyName(role).echo(pid: getpid()).encode()
        let link = try openLink(echoTopic: String(decoding: echo[0], as: UTF8.self))
        defer { link.close() }
        guard try awaitEcho(link, frames: echo, shouldStop: shouldStop, heartbeat: heartbeat),
            let assignment = try awaitAssignment(fd, link: link, echo: echo, shouldStop: shouldStop, heartbeat: heartbeat)
        else { return }
        guard assignment.worker.role == role else {
            return logger.error("standby of another role named; exiting", metadata: ["assignment": "\(assignment.worker)"])
        }
        shard = assignment.worker.index
        logger[metadataKey: "worker"] = "\(assignment.worker)"
        let beat = Heartbeat(worker: assignment.worker, pid: getpid(), failed: assignment.predecessorFailed)
        // A broker lost from now on is waited for with this worker's own heartbeat.
        try link.echo.subscribe(beat.topic)
        let loop = try promoted(assignment)
        logger.info("standby promoted", metadata: ["worker": "\(assignment.worker)", "predecessor.failed": "\(assignment.predecessorFailed)"])
        try serve(link, beat: beat, loop: loop, shouldStop: shouldStop, heartbeat: heartbeat)
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

    /// The sockets a worker opens first and keeps: its PUB, the PUB's
    /// monitor, and the SUB that hears its own heartbeats (the echo).
    struct Link {
        var pub: Socket
        var pubEvents: Socket
        var echo: Socket

        func close() {
            echo.close()
            pubEvents.close()
            pub.close()
        }
    }

    private func openLink(echoTopic: String) throws -> Link {
        let (pub, pubEvents) = try openPublisher()
        let echo = try Socket(context: context, type: .sub)
        try echo.secure(security, bus: bus, as: .client)
        try echo.setHighWaterMarks(send: HighWaterMarks.echo, receive: HighWaterMarks.echo)
        try echo.setReconnectInterval(milliseconds: 20)
        try echo.subscribe(echoTopic)
        try echo.connect(bus.eventsOut)
        return Link(pub: pub, pubEvents: pubEvents, echo: echo)
    }

    /// Connects the queue (and the nudge SUB) and serves until told to stop.
    private func serve(_ link: Link, beat: Heartbeat, loop: WorkerLoop, shouldStop: () -> Bool, heartbeat: (_ serving: Bool) -> Void) throws {
        let pull = try Socket(context: context, type: .pull)
        try pull.secure(security, bus: bus, as: .client)
        // Full: the broker's PUSH stops taking more; nothing is dropped.
        try pull.setHighWaterMarks(send: HighWaterMarks.commands, receive: HighWaterMarks.commands)
        try pull.setReconnectInterval(milliseconds: 20)
        try pull.connect(bus.queueOut(Endpoints.queue(role, shard: shard)))
        defer { pull.close() }
        let news = try loop.wakeOn.map(openNews)
        defer { news?.close() }
        var poller = Poller()
        poller.add(.socket(pull))
        poller.add(.socket(link.pubEvents))
        poller.add(.socket(link.echo))
        if let news { poller.add(.socket(news)) }
        let sockets = Sockets(pub: link.pub, pubEvents: link.pubEvents, echo: link.echo, pull: pull, news: news)
        try serve(sockets, poller: poller, beat: beat, loop: loop, shouldStop: shouldStop, heartbeat: heartbeat)
    }

    /// A worker's sockets once it serves.
    struct Sockets {
        var pub: Socket
        var pubEvents: Socket
        var echo: Socket
        var pull: Socket
        var news: Socket?
    }

    private func openPublisher() throws -> (pub: Socket, events: Socket) {
        let pub = try Socket(context: context, type: .pub)
        try pub.secure(security, bus: bus, as: .client)
        // Drops at the mark, never blocks: only reached when the broker (the
        // supervisor) stopped reading; a lost reply is resent by its frontend.
        try pub.setHighWaterMarks(send: HighWaterMarks.events, receive: HighWaterMarks.events)
        try pub.setReconnectInterval(milliseconds: 20)
        // Replies published in the instant before exit must still leave.
        pub.lingerMilliseconds = 1000
        // A lost connection to the broker (it restarted: a frontend host of
        // `run: workers` hosts) closes the gate again, until the echo is back.
        let events = try pub.monitor(name: "pub-\(role.rawValue)-\(shard)-\(getpid())", events: MonitorEvent.disconnected)
        try pub.connect(bus.eventsIn)
        return (pub, events)
    }

    private func openNews(_ topic: String) throws -> Socket {
        let sub = try Socket(context: context, type: .sub)
        try sub.secure(security, bus: bus, as: .client)
        try sub.setConflate()
        try sub.setReconnectInterval(milliseconds: 20)
        try sub.subscribe(topic)
        try sub.connect(bus.eventsOut)
        return sub
    }

    private func serve(
        _ s: Sockets, poller: Poller, beat: Heartbeat, loop: WorkerLoop, shouldStop: () -> Bool, heartbeat: (_ serving: Bool) -> Void
    ) throws {
        // Fault injection for the poison-command test: with this set, a
        // command whose body contains it crashes the worker (a trap, as a
        // bug would). Unset in production: nothing is checked.
        let crashMarker = ProcessInfo.processInfo.environment["CHATD_FAILPOINT_CRASH_ON"].flatMap { $0.isEmpty ? nil : Array($0.utf8) }
        var lastHeartbeat: UInt64 = 0
        var trimmer = IdleTrim()
        let started = monotonicNanos()
        var sequencer = StreamSequencer()
        var lastSweep = monotonicNanos()
        var nudges = NudgeThrottle()
        while !shouldStop() {
            let now = monotonicNanos()
            if let nudge = loop.nudge, nudges.due(now: now) { try s.pub.send([Array(nudge.utf8)]) }
            // Heartbeats tell frontends (healthz) that this role is being served.
            // Every 500 ms; every 25 ms in the first second, because PUB drops
            // what it sends before its connection is up, and the first heartbeat
            // that arrives is what tells frontends to resend what the worker
            // this one replaces took down with it.
            let interval: UInt64 = now - started < 1_000_000_000 ? 25_000_000 : 500_000_000
            if now - lastHeartbeat >= interval {
                try s.pub.send(beat.event.encode())
                heartbeat(true)
                lastHeartbeat = now
            }
            let untilHeartbeat = Int((lastHeartbeat + interval - min(monotonicNanos(), lastHeartbeat + interval)) / 1_000_000)
            let untilNudge = nudges.deadline.map { Int(($0 - min(monotonicNanos(), $0)) / 1_000_000) + 1 } ?? Int.max
            let ready = try poller.poll(timeoutMilliseconds: min(Int(loop.idleInterval()), untilHeartbeat + 1, untilNudge))
            if ready[1] & pollIn != 0 {
                guard try brokerStillThere(s, beat: beat, shouldStop: shouldStop, heartbeat: heartbeat) else { break }
            }
            // Our own heartbeats, echoed: only the gate needs them.
            if ready[2] & pollIn != 0 { while try s.echo.receive(dontWait: true) != nil {} }
            if let news = s.news, ready[3] & pollIn != 0 {
                // Only the wake-up matters, not the events themselves.
                while try news.receive(dontWait: true) != nil {}
                for event in loop.idle() { try s.pub.send(event.encode()) }
            }
            guard ready[0] & pollIn != 0 else {
                for event in loop.idle() { try s.pub.send(event.encode()) }
                trimmer.trimIfBurstEnded(moved: 0, logger: logger)
                continue
            }
            let arrival = monotonicNanos()
            let (batch, received) = try receiveBatch(s.pull, maxBatch: loop.maxBatch, sequencer: &sequencer, now: arrival)
            trimmer.trimIfBurstEnded(moved: received, logger: logger)
            if arrival - lastSweep > 60_000_000_000 {
                sequencer.forget(silentSince: arrival - 60_000_000_000)
                lastSweep = arrival
            }
            guard !batch.isEmpty else { continue }
            if let crashMarker, batch.contains(where: { $0.body.firstRange(of: crashMarker) != nil }) {
                fatalError("failpoint: a command carries CHATD_FAILPOINT_CRASH_ON")
            }
            var wrote = false
            for event in loop.handle(batch) {
                try s.pub.send(event.encode())
                if event.kind == .roomEvent { wrote = true }
            }
            if let nudge = loop.nudge, wrote, nudges.wrote(now: monotonicNanos()) { try s.pub.send([Array(nudge.utf8)]) }
        }
    }

    /// Reads the PUB's monitor. Returns false if told to stop while waiting
    /// for a new broker's echo.
    private func brokerStillThere(_ s: Sockets, beat: Heartbeat, shouldStop: () -> Bool, heartbeat: (_ serving: Bool) -> Void) throws -> Bool {
        guard try lostBroker(s.pubEvents) else { return true }
        // Commands the new broker hands over at once would have their
        // replies and events dropped until it forwards the subscriptions to
        // this PUB: wait for the echo again.
        logger.warning("lost the broker; taking no commands until it echoes")
        guard try awaitEcho(Link(pub: s.pub, pubEvents: s.pubEvents, echo: s.echo), frames: beat.event.encode(), shouldStop: shouldStop, heartbeat: heartbeat)
        else { return false }
        logger.info("broker back")
        return true
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

    /// Sends heartbeats until one comes back through the broker. A PUB socket
    /// drops what it sends until the subscriptions the broker forwards have
    /// reached it (ZeroMQ's slow joiner, seen from the publisher). A command
    /// taken before then would be stored with its reply and room event lost,
    /// and the frontend's resend would find it already published here. The
    /// broker hands a new publisher every subscription it holds at once, so
    /// when our own has arrived, the frontends' arrived before it.
    /// - Returns: false if told to stop first.
    private func awaitEcho(
        _ link: Link, frames echo: [[UInt8]], shouldStop: () -> Bool, heartbeat: (_ serving: Bool) -> Void
    ) throws -> Bool {
        var poller = Poller()
        poller.add(.socket(link.echo))
        var lastAlive: UInt64 = 0
        while !shouldStop() {
            // The supervisor hears that this process lives, waiting.
            if monotonicNanos() - lastAlive >= 500_000_000 {
                heartbeat(false)
                lastAlive = monotonicNanos()
            }
            try link.pub.send(echo)
            // Sends before the subscription reaches the PUB are dropped, so
            // each wait is one more chance missed: 2 ms (not 10) takes a few
            // more tiny sends and answers up to 8 ms sooner, which a worker
            // replacing a dead one spends with its queue waiting.
            guard try poller.poll(timeoutMilliseconds: 2)[0] & pollIn != 0 else { continue }
            while let frames = try link.echo.receive(dontWait: true) {
                // A predecessor of the same name may still be publishing (its pid differs).
                if frames == echo { return true }
            }
        }
        return false
    }

    /// A standby's wait for the supervisor's line on `fd`, saying it is
    /// ready and alive every 500 ms. A broker lost meanwhile (`run: workers`)
    /// is waited for again before the line is taken: a promoted standby
    /// publishes at once. Returns nil when told to stop, at end of file
    /// (the supervisor is gone) or on anything but an assignment.
    private func awaitAssignment(
        _ fd: Int32, link: Link, echo: [[UInt8]], shouldStop: () -> Bool, heartbeat: (_ serving: Bool) -> Void
    ) throws -> StandbyAssignment? {
        var poller = Poller()
        poller.add(.fd(fd))
        poller.add(.socket(link.pubEvents))
        var line: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: StandbyAssignment.maxLineBytes)
        var lastAlive: UInt64 = 0
        while !shouldStop() {
            if monotonicNanos() - lastAlive >= 500_000_000 {
                heartbeat(true)
                lastAlive = monotonicNanos()
            }
            let ready = try poller.poll(timeoutMilliseconds: 500)
            // The PUB takes in the subscriptions the broker forwards only when
            // it is called; unread for days of waiting they would overflow its
            // queue, and the broker drops what no longer fits: once promoted,
            // this worker would filter out the events of those rooms.
            _ = link.pub.events
            if ready[1] & pollIn != 0, try lostBroker(link.pubEvents) {
                logger.warning("lost the broker; a standby until it echoes")
                guard try awaitEcho(link, frames: echo, shouldStop: shouldStop, heartbeat: heartbeat) else { return nil }
            }
            // Readable, hung up or in error: read says which.
            guard ready[0] != 0 else { continue }
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            guard count > 0 else {
                logger.info("the supervisor closed the standby's channel; exiting")
                return nil
            }
            line += buffer[0..<count]
            if let end = line.firstIndex(of: UInt8(ascii: "\n")) {
                let text = String(decoding: line[..<end], as: UTF8.self)
                guard let assignment = StandbyAssignment(line: text) else {
                    logger.error("not an assignment on the standby's channel; exiting", metadata: ["line": "\(text)"])
                    return nil
                }
                return assignment
            }
            guard line.count <= StandbyAssignment.maxLineBytes else {
                logger.error("no assignment on the standby's channel; exiting")
                return nil
            }
        }
        return nil
    }

    /// Reads a PUB's monitor: did the broker's connection drop?
    private func lostBroker(_ monitor: Socket) throws -> Bool {
        var lost = false
        while let frames = try monitor.receive(dontWait: true) {
            if MonitorEvent(frames: frames)?.event == MonitorEvent.disconnected { lost = true }
        }
        return lost
    }
}
