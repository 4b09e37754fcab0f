import ChatWire

/// The logic of `BusClient`'s bus thread, without sockets or clocks: every
/// input comes with the time (monotonic nanoseconds), every effect is an
/// `Action` returned, except the one whose outcome it needs at once, whether
/// a queue took a command, which is the `push` function each input gets.
///
/// It numbers each store shard's stream and keeps its floor, holds store
/// commands while the shard count changes, holds a full queue's commands in
/// order until it has room, resends on timeouts and worker replacements,
/// gives up on poison commands and answers every command exactly once.
/// `Ticket` is what the owner needs to answer a command (`BusClient` keeps
/// its completion there).
public struct BusClientMachine<Ticket> {
    /// A command handed to the bus.
    public struct Submission {
        public var destination: Destination
        public var command: Command
        public var ticket: Ticket
        /// When its sender gives up on it (monotonic nanoseconds).
        public var deadline: UInt64

        public init(destination: Destination, command: Command, ticket: Ticket, deadline: UInt64) {
            self.destination = destination
            self.command = command
            self.ticket = ticket
            self.deadline = deadline
        }
    }

    /// A command to queue, as `push` gets it.
    public struct Outbound {
        public var command: Command
        /// `Endpoints.queue` name: `store-1`, `receipts`.
        public var queue: String
        /// When its sender gives up on it (monotonic); the owner writes it
        /// into `command.deadline` in wall-clock time, for the worker.
        public var deadline: UInt64
    }

    /// Queues a command without waiting; false when its queue is at its
    /// high-water mark (the machine holds it and what follows it).
    public typealias Push = (Outbound) -> Bool

    /// What the owner must do.
    public enum Action {
        /// Answer a command's sender.
        case complete(Ticket, Result<Event, BusFailure>)
        /// Hand a room event to the frontend.
        case deliver(RoomEvent)
        /// A worker is alive.
        case heartbeat(Heartbeat)
        /// A worker's link to this broker was down: close the sockets of the
        /// rooms it says with 1012, so their clients resume with `after`.
        case linkGap(LinkGap)
        case log(Fact)
    }

    /// Things worth a log line.
    public enum Fact: Equatable, Sendable {
        case queueFull(queue: String)
        case queueHasRoom(queue: String, heldNanos: UInt64)
        case poison(requestID: String, kind: CommandKind, worker: WorkerName)
        /// A command of `queue` was answered this long after it was first sent
        /// (resends included): `chatd_bus_command_duration_seconds`, not a log line.
        case answered(queue: String, nanos: UInt64)
        case workerReplaced(worker: WorkerName, resent: Int)
        /// The worker's link to this broker dropped and is back (same pid).
        case linkRestored(worker: WorkerName, generation: UInt32, resent: Int)
        case resending(requestID: String, attempt: Int, kind: CommandKind)
        case timedOut(requestID: String, kind: CommandKind)
        case shardsChanging(from: Int, to: Int)
        case shardsChanged(to: Int, heldCommands: Int)
        case malformed(topic: String)
    }

    /// A command on its way, pending its reply.
    struct Outgoing {
        var destination: Destination
        var command: Command
        var ticket: Ticket
        var deadline: UInt64
        /// The store shard it went to (-1 for other roles), set when admitted.
        var shard = -1
        /// Its position in the stream to that shard.
        var seq: UInt64 = 0
        /// The queue it goes to, named once (set with `shard` for a store
        /// command): every send, settle and count would otherwise build it.
        var queue = ""
        /// When it was first sent (admitted), for its answer's latency.
        var sentAt: UInt64 = 0
    }

    /// This frontend's stream to one store shard (see `StreamSequencer`).
    struct Stream {
        var next: UInt64 = 1
        /// Positions sent and not yet answered.
        var awaiting: Set<UInt64> = []
        /// A lower bound of `awaiting`, raised lazily.
        var lowest: UInt64 = 1

        mutating func floor() -> UInt64 {
            while lowest < next && !awaiting.contains(lowest) { lowest += 1 }
            return lowest
        }
    }

    /// A queue whose PUSH is at its mark: what waits for room, in the order
    /// it was to leave (nothing overtakes it), and since when.
    struct Waiting {
        var commands: [Outgoing]
        var ids: Set<String>
        var since: UInt64
    }

    /// Whether `kind` is resent every `retryInterval`. Not `file.chunk` and
    /// `file.read`, of up to 256 KiB (`FileTransfer.chunkBytes`): resent on
    /// the timer, a stalled files worker's unanswered chunks would pile up in
    /// the broker, a copy each per interval, up to the queue's mark (1,000
    /// a socket, ~250 MiB). A live worker answers them in turn; a dead one's
    /// replacement gets them again (its heartbeat's new pid).
    static func resendsOnTimer(_ kind: CommandKind) -> Bool { kind != .fileChunk && kind != .fileRead }

    /// Pids remembered per worker name: enough for two processes briefly
    /// sharing a name (a quick scale down and up, a rolling restart) and the
    /// replacements around them, so alternating pids are not replacements.
    static var pidMemory: Int { 4 }

    public let policy: RetryPolicy
    var pending: PendingRequests<Outgoing>
    /// How many store shards commands are spread over now.
    public private(set) var shards: Int
    /// The count announced and not yet switched to.
    public private(set) var resharding: Int?
    var streams: [Stream]
    /// Store commands that arrived while the count changes, in order.
    var held: [Outgoing] = []
    var full: [String: Waiting] = [:]
    /// Commands sent and not yet answered, per queue, plus `held`.
    public private(set) var outstanding: [String: Int] = [:]
    var outstandingChanged = true
    var pids: [WorkerName: [Int32]] = [:]
    /// The link generation last heard from each remembered pid.
    var generations: [WorkerName: [Int32: UInt32]] = [:]
    var stopDeadline: UInt64?
    var actions: [Action] = []

    public init(policy: RetryPolicy, shards: Int) {
        self.policy = policy
        self.pending = PendingRequests(policy: policy)
        self.shards = shards
        self.streams = Array(repeating: Stream(), count: shards)
        for role in Role.allCases where role != .store && role.hasQueue { outstanding[Endpoints.queue(role)] = 0 }
        for shard in 0..<shards { outstanding[Endpoints.queue(.store, shard: shard)] = 0 }
    }

    // MARK: Inputs

    /// A command to send.
    public mutating func submit(_ submission: Submission, now: UInt64, push: Push) -> [Action] {
        let outgoing = Outgoing(destination: submission.destination, command: submission.command, ticket: submission.ticket, deadline: submission.deadline)
        if resharding != nil, case .store = outgoing.destination {
            held.append(outgoing)
        } else {
            admit(outgoing, now: now, push: push)
        }
        return takeActions()
    }

    /// Something arrived on the events socket.
    public mutating func receive(_ event: Event, now: UInt64, push: Push) -> [Action] {
        switch event.kind {
        case .reply:
            if let outgoing = pending.complete(id: event.key) {
                settled(outgoing)
                actions.append(.complete(outgoing.ticket, .success(event)))
                actions.append(.log(.answered(queue: outgoing.queue, nanos: now &- min(now, outgoing.sentAt))))
            }
        case .roomEvent:
            actions.append(.deliver(RoomEvent(roomID: String(event.topic.dropFirst(Topic.roomPrefix.count)), key: event.key, body: event.body)))
        case .heartbeat:
            guard let beat = Heartbeat(event) else {
                actions.append(.log(.malformed(topic: event.topic)))
                break
            }
            heard(beat, now: now, push: push)
            actions.append(.heartbeat(beat))
        case .storeShards:
            guard let news = ShardCount(event) else {
                actions.append(.log(.malformed(topic: event.topic)))
                break
            }
            announced(news.count)
        case .synced, .metrics, .hostStatus:
            // Room subscriptions' business (`RoomSubscriptions`) and the
            // metrics document's (`Callbacks.metrics`): `BusClient` hands them
            // on. Host statuses are the supervisors' (frontends do not subscribe).
            break
        }
        return takeActions()
    }

    /// A full queue can take commands again.
    public mutating func writable(queue: String, now: UInt64, push: Push) -> [Action] {
        drain(queue, now: now, push: push)
        return takeActions()
    }

    /// Time passed: resends, timeouts, the end of a shard count change.
    public mutating func tick(now: UInt64, push: Push) -> [Action] {
        var failedAny = false
        // Suspects are not on the timer (`PendingRequests`): only a
        // replacement sends them again.
        let due = pending.tick(now: now)
        var resends: [Outgoing] = []
        for action in due {
            switch action {
            case .resend(let id, let outgoing, let attempt):
                actions.append(.log(.resending(requestID: id, attempt: attempt, kind: outgoing.command.kind)))
                resends.append(outgoing)
            case .fail(let id, let outgoing):
                actions.append(.log(.timedOut(requestID: id, kind: outgoing.command.kind)))
                settled(outgoing)
                actions.append(.complete(outgoing.ticket, .failure(.timedOut)))
                failedAny = true
            }
        }
        for outgoing in Self.inStreamOrder(resends) { transmit(outgoing, now: now, push: push) }
        if failedAny { dropAnsweredFromFullQueues() }
        expireHeld(now: now)
        finishResharding(now: now, push: push)
        let heldNow = held.isEmpty ? nil : held.count
        if outstanding["held"] != heldNow {
            outstanding["held"] = heldNow
            outstandingChanged = true
        }
        return takeActions()
    }

    /// Stop: what is pending may still be answered until `drainUntil`.
    public mutating func stop(drainUntil: UInt64) {
        if stopDeadline == nil { stopDeadline = drainUntil }
    }

    /// Stopping, and nothing left to wait for (or no more time to).
    public func isFinished(now: UInt64) -> Bool {
        guard let stopDeadline else { return false }
        return (pending.count == 0 && held.isEmpty) || now >= stopDeadline
    }

    /// The end: everything still unanswered fails with `.closed`.
    public mutating func close() -> [Action] {
        for outgoing in pending.removeAll() + held { actions.append(.complete(outgoing.ticket, .failure(.closed))) }
        held.removeAll()
        full.removeAll()
        return takeActions()
    }

    // MARK: What the owner polls for

    /// Queues at their mark: poll their PUSH for room (`writable`).
    public var fullQueues: [String] { full.keys.sorted() }
    /// When `tick` next has work; nil when only an input can bring any.
    public var nextWakeup: UInt64? {
        [pending.nextWakeup, held.lazy.map(\.deadline).min(), stopDeadline].compactMap { $0 }.min()
    }
    /// The new `outstanding`, once per change.
    public mutating func takeOutstandingChange() -> [String: Int]? {
        guard outstandingChanged else { return nil }
        outstandingChanged = false
        return outstanding
    }

    mutating func takeActions() -> [Action] {
        defer { actions.removeAll(keepingCapacity: true) }
        return actions
    }
}

// MARK: Sending

extension BusClientMachine {
    mutating func admit(_ outgoing: Outgoing, now: UInt64, push: Push) {
        var outgoing = outgoing
        outgoing.sentAt = now
        outgoing.queue = Endpoints.queue(outgoing.command.kind.role)
        if case .store(let key) = outgoing.destination {
            let shard = Shard.of(key, count: shards)
            outgoing.shard = shard
            outgoing.queue = Endpoints.queue(.store, shard: shard)
            outgoing.seq = streams[shard].next
            streams[shard].next += 1
            streams[shard].awaiting.insert(outgoing.seq)
        }
        pending.add(id: outgoing.command.requestID, payload: outgoing, now: now, deadline: outgoing.deadline,
                    onTimer: Self.resendsOnTimer(outgoing.command.kind))
        outstanding[outgoing.queue, default: 0] += 1
        outstandingChanged = true
        transmit(outgoing, now: now, push: push)
    }

    /// Answered, failed or given up: no longer awaited.
    mutating func settled(_ outgoing: Outgoing) {
        if outgoing.shard >= 0 { streams[outgoing.shard].awaiting.remove(outgoing.seq) }
        outstanding[outgoing.queue, default: 1] -= 1
        outstandingChanged = true
    }

    /// Sends a command, or holds it behind what its full queue holds.
    mutating func transmit(_ outgoing: Outgoing, now: UInt64, push: Push) {
        let queue = outgoing.queue
        if full[queue] != nil {
            // Already waiting (a resend of a held command): once is enough.
            guard full[queue]!.ids.insert(outgoing.command.requestID).inserted else { return }
            full[queue]!.commands.append(outgoing)
            return
        }
        if !send(outgoing, push: push) {
            actions.append(.log(.queueFull(queue: queue)))
            full[queue] = Waiting(commands: [outgoing], ids: [outgoing.command.requestID], since: now)
        }
    }

    mutating func send(_ outgoing: Outgoing, push: Push) -> Bool {
        var command = outgoing.command
        if outgoing.shard >= 0 { command.stream = (outgoing.seq, streams[outgoing.shard].floor()) }
        return push(Outbound(command: command, queue: outgoing.queue, deadline: outgoing.deadline))
    }

    /// Sends what a full queue held, in order, while it takes them; drops
    /// those answered or failed meanwhile.
    mutating func drain(_ queue: String, now: UInt64, push: Push) {
        guard var waiting = full[queue] else { return }
        var sent = 0
        while sent < waiting.commands.count {
            let outgoing = waiting.commands[sent]
            if pending.contains(id: outgoing.command.requestID) {
                guard send(outgoing, push: push) else { break }
            }
            sent += 1
        }
        waiting.commands.removeFirst(sent)
        if waiting.commands.isEmpty {
            full[queue] = nil
            actions.append(.log(.queueHasRoom(queue: queue, heldNanos: now - min(now, waiting.since))))
        } else {
            waiting.ids = Set(waiting.commands.map(\.command.requestID))
            full[queue] = waiting
        }
    }

    /// What a full queue still held for commands that failed goes too.
    mutating func dropAnsweredFromFullQueues() {
        for queue in full.keys {
            full[queue]!.commands.removeAll { !pending.contains(id: $0.command.requestID) }
            full[queue]!.ids = Set(full[queue]!.commands.map(\.command.requestID))
            if full[queue]!.commands.isEmpty { full[queue] = nil }
        }
    }
}

// MARK: Shard count changes

extension BusClientMachine {
    /// The broker repeats the count every half second: only a new one counts.
    /// The owner has connected to every shard below `count` before this.
    mutating func announced(_ count: Int) {
        guard count != (resharding ?? shards) else { return }
        actions.append(.log(.shardsChanging(from: shards, to: count)))
        resharding = count
        while streams.count < count {
            outstanding[Endpoints.queue(.store, shard: streams.count)] = 0
            streams.append(Stream())
        }
        outstandingChanged = true
    }

    /// Held past their deadline: their senders are told, as for any timeout.
    mutating func expireHeld(now: UInt64) {
        guard !held.isEmpty else { return }
        for outgoing in held where outgoing.deadline <= now {
            actions.append(.log(.timedOut(requestID: outgoing.command.requestID, kind: outgoing.command.kind)))
            actions.append(.complete(outgoing.ticket, .failure(.timedOut)))
        }
        held.removeAll { $0.deadline <= now }
    }

    /// The new count applies once no store command is unanswered: a room's
    /// writes never run on two shards at once, and the held commands leave
    /// in the order they came.
    mutating func finishResharding(now: UInt64, push: Push) {
        guard let target = resharding, streams.allSatisfy(\.awaiting.isEmpty) else { return }
        shards = target
        resharding = nil
        actions.append(.log(.shardsChanged(to: target, heldCommands: held.count)))
        let waiting = held
        held.removeAll()
        for outgoing in waiting { admit(outgoing, now: now, push: push) }
    }
}

// MARK: Workers

extension BusClientMachine {
    /// A heartbeat. A pid not seen before under a name that had one is a
    /// replacement: what the old process held in its queue died with it.
    /// A pid seen before is not: two processes may briefly share a name
    /// (the old one finishing its batch), and their alternating heartbeats
    /// must not resend everything at each turn.
    mutating func heard(_ beat: Heartbeat, now: UInt64, push: Push) {
        var known = pids[beat.worker] ?? []
        guard !known.contains(beat.pid) else { return relinked(beat, now: now, push: push) }
        let replacement = !known.isEmpty
        known.append(beat.pid)
        if known.count > Self.pidMemory { generations[beat.worker]?[known.removeFirst()] = nil }
        pids[beat.worker] = known
        generations[beat.worker, default: [:]][beat.pid] = beat.link
        if replacement { replaced(beat, now: now, push: push) }
    }

    /// A known process with another link generation: its link to this
    /// broker dropped and is back. What it published meanwhile (room events,
    /// replies) and what this broker had handed its queue's dropped
    /// connection are lost: the rooms' sockets are told to resume
    /// (`linkGap`), and its queue's commands are resent now, not at the
    /// timeout. No death is counted: the process lived on.
    mutating func relinked(_ beat: Heartbeat, now: UInt64, push: Push) {
        guard let previous = generations[beat.worker]?[beat.pid], previous != beat.link else { return }
        generations[beat.worker]?[beat.pid] = beat.link
        let queue = beat.worker.queue
        let lost = pending.resendNow(now: now, matching: { $0.queue == queue })
        actions.append(.log(.linkRestored(worker: beat.worker, generation: beat.link, resent: lost.count)))
        actions.append(.linkGap(LinkGap(worker: beat.worker, shardCounts: [shards] + (resharding.map { [$0] } ?? []))))
        for outgoing in Self.inStreamOrder(lost.map(\.payload)) { transmit(outgoing, now: now, push: push) }
    }

    /// Resends in each shard's stream order. A resend below the worker's
    /// expected position runs at once, so resends sent in the pending
    /// table's (hash) order would run a room's edits out of order: writes
    /// are idempotent, not commutative.
    static func inStreamOrder(_ outgoing: [Outgoing]) -> [Outgoing] {
        outgoing.sorted { ($0.shard, $0.seq) < ($1.shard, $1.seq) }
    }

    /// Resends now rather than at the timeout. Only a crash or a hang counts
    /// toward poison (a SIGKILL from outside says nothing about the
    /// commands). On a shared queue (receipts, search, files scaled past
    /// one) a crash counts against every command pending on the queue,
    /// though another replica may have held some of them: not counting it
    /// would let a poison command crash the replicas in turn until its
    /// deadline. The cost is that a command pending at two real crashes of
    /// its queue's replicas is answered 500 even if it was innocent.
    mutating func replaced(_ beat: Heartbeat, now: UInt64, push: Push) {
        let queue = beat.worker.queue
        let mine = { (outgoing: Outgoing) in outgoing.queue == queue }
        let lost: [(id: String, payload: Outgoing)]
        var poisoned: [(id: String, payload: Outgoing)] = []
        if beat.failed {
            (lost, poisoned) = pending.workerReplaced(now: now, matching: mine)
        } else {
            lost = pending.resendNow(now: now, matching: mine)
        }
        // Poisoned commands are settled before anything is resent, so the
        // resends carry a floor above them: the new worker must not wait for
        // a command that will never come again.
        for (id, outgoing) in poisoned {
            actions.append(.log(.poison(requestID: id, kind: outgoing.command.kind, worker: beat.worker)))
            settled(outgoing)
            actions.append(.complete(outgoing.ticket, .success(.reply(to: outgoing.command, status: .internal, body: ReplyError.poisonCommand.encode()))))
        }
        if !lost.isEmpty { actions.append(.log(.workerReplaced(worker: beat.worker, resent: lost.count))) }
        for outgoing in Self.inStreamOrder(lost.map(\.payload)) { transmit(outgoing, now: now, push: push) }
    }
}

extension BusClientMachine.Submission: Sendable where Ticket: Sendable {}
