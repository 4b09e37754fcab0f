import ChatWire

/// The old frontend's side of a handover (docs/protocol.md, "Frontend
/// handover"), without sockets or clocks: inputs come with the time
/// (monotonic nanoseconds), effects are returned as actions. `Connection`
/// names a WebSocket (its number).
///
///     IDLE        --start-->          OFFERED (send offer)
///     OFFERED     --ready-->          SEEDING (catch up, send delivered)
///     SEEDING     --seeded-->         MOVING  (stop reading: a window of sockets at a time)
///     OFFERED, SEEDING --refuse, peer gone, the ready deadline--> IDLE (nothing was handed over: resume)
///     MOVING      --stopped, its pending commands answered (or the drain bound)--> hand over
///     MOVING      --all handed over or gone--> HANDED OVER (send done; wait to be retired)
///     MOVING      --peer gone--> IDLE (what was stopped closes with 1012: its clients
///                                      reconnect; what still reads serves on; resume)
///     HANDED OVER --peer gone--> IDLE (the successor died before this process was retired: resume)
///
/// Every way a handover ends leads back to IDLE, so the next successor's
/// `start` is taken; one runs at a time (`start` anywhere else does nothing).
/// The successor keeps its end open for its life: its end closing once
/// everything moved means it died, and nobody else serves this slot's
/// listening socket for it.
///
/// A socket is stopped at a frame boundary (its reads paused) before its
/// state is taken, and handed over only once the commands it sent are
/// answered, so no reply is lost with the process: the bound keeps a
/// worker that does not answer from holding the handover up (the command
/// is still resent and stored; only a refusal's `error` event could go).
/// A socket waiting for replies holds no place in the window: with a hung
/// store shard every socket waits its bound at the same time, so the whole
/// MOVING phase takes about one drain bound more, not one per window.
struct HandoverSender<Connection: Hashable> {
    enum State: Equatable {
        case idle
        case offered(deadline: UInt64)
        /// `ready` came; the delivered keys went (or go, once caught up):
        /// waits for `seeded`, by the same deadline.
        case seeding(deadline: UInt64)
        case moving
        /// Every socket went (or was gone): the supervisor retires this
        /// process now, unless the successor dies first.
        case handedOver
    }

    enum Action: Equatable {
        case send(HandoverMessage)
        /// Catch up to where the successor's buffers begin, then send the
        /// delivered keys (`HandoverMessage.delivered`).
        case sendDelivered
        /// Pause its reads at a frame boundary and finish its writes; answer `stopped`.
        case stopReading(Connection)
        /// Send its state and descriptor; answer `handedOver` (or `failed`).
        case handOver(Connection)
        /// Close it with 1012: it could not be handed over.
        case closeForRestart(Connection)
        /// The handover is over and this process serves on: accept again,
        /// leave handover mode.
        case resumeServing(reason: String)
        /// No socket is left to move: sockets moved, sockets closed.
        case finished(moved: Int, closed: Int)
    }

    struct Timing: Equatable {
        /// How long the new frontend may take to subscribe to every room.
        var readyTimeout: UInt64
        /// How long a stopped socket waits for its commands' replies.
        var drainBound: UInt64
        /// Sockets told to stop or being handed over, at most (those
        /// waiting for replies do not count): each socket's pause is its
        /// own trip, not the whole handover's.
        var window: Int
    }

    struct Socket {
        enum Phase: Equatable {
            case reading
            /// Told to stop; its `stopped` not come yet.
            case stopping
            /// Stopped at this time; waits for its commands' replies.
            case stopped(at: UInt64)
            /// `handOver` was said; its `handedOver` not come yet.
            case handing
        }

        /// Commands it sent and has no reply to.
        var pending: Int
        var phase = Phase.reading
    }

    let timing: Timing
    private(set) var state = State.idle
    private(set) var sockets: [Connection: Socket] = [:]
    /// Sockets not stopped yet, in the order they go.
    private var queue: [Connection] = []
    private var queueHead = 0
    /// Sockets `.stopping` or `.handing`: the window's count.
    private var inFlight = 0
    /// When each socket in `.stopped` (waiting for replies) stopped: the
    /// only ones `tick` and `nextWakeup` look at, so neither walks every
    /// socket left after each event.
    private var draining: [Connection: UInt64] = [:]
    private(set) var moved = 0
    private(set) var closed = 0

    init(timing: Timing) { self.timing = timing }

    /// Offers every socket now open (`pending`: commands each awaits).
    /// Nothing unless IDLE: one handover at a time.
    mutating func start(sockets open: [(Connection, pending: Int)], rooms: [String], now: UInt64) -> [Action] {
        guard state == .idle else { return [] }
        reset()
        for (connection, pending) in open {
            sockets[connection] = Socket(pending: pending)
            queue.append(connection)
        }
        // IDLE -> OFFERED
        state = .offered(deadline: now + timing.readyTimeout)
        return [.send(.offer(rooms: rooms, connections: open.count))]
    }

    /// A message from the new frontend.
    mutating func received(_ message: HandoverMessage, now: UInt64) -> [Action] {
        switch (state, message) {
        case (.offered(let deadline), .ready):
            // OFFERED -> SEEDING
            state = .seeding(deadline: deadline)
            return [.sendDelivered]
        case (.seeding, .seeded):
            // SEEDING -> MOVING
            state = .moving
            return stopNext() + finishIfDone()
        case (.offered, .refuse(let reason)), (.seeding, .refuse(let reason)):
            return giveUp("refused: \(reason)")
        case (.offered, _), (.seeding, _), (.moving, _):
            return peerGone(now: now)
        default:
            return []
        }
    }

    /// The new frontend's end closed (it died, or spoke out of turn).
    mutating func peerGone(now: UInt64) -> [Action] {
        switch state {
        case .offered, .seeding: return giveUp("the new frontend is gone")
        case .moving:
            // MOVING -> IDLE: what was stopped and has not moved closes; its
            // clients reconnect and resume. What never stopped still reads
            // and gets its events: it serves on here, untouched.
            let actions = sockets.filter { $0.value.phase != .reading }.map { Action.closeForRestart($0.key) }
            closed += actions.count
            let (moved, closed) = (moved, closed)
            state = .idle
            reset()
            return actions + [
                .finished(moved: moved, closed: closed),
                .resumeServing(reason: "the new frontend is gone midway (\(moved) moved, \(closed) closed with 1012)"),
            ]
        case .handedOver:
            // HANDED OVER -> IDLE: its sockets are lost with it; new ones come here.
            state = .idle
            let moved = moved
            reset()
            return [.resumeServing(reason: "the new frontend is gone after it took \(moved) WebSockets, before this process was retired")]
        case .idle:
            return []
        }
    }

    /// A socket's reads are paused and its writes done; `pending`: its
    /// commands unanswered, as it counts them itself.
    mutating func stopped(_ connection: Connection, pending: Int? = nil, now: UInt64) -> [Action] {
        guard state == .moving, sockets[connection]?.phase == .stopping else { return [] }
        sockets[connection]?.phase = .stopped(at: now)
        // Its place in the window is free while it waits for replies.
        inFlight -= 1
        draining[connection] = now
        if let pending { sockets[connection]?.pending = pending }
        return handOverIfDrained(connection) + stopNext()
    }

    /// One of the socket's commands was answered; `pending`: those left,
    /// as the socket counts them now (the latest count wins over arithmetic).
    mutating func replied(_ connection: Connection, pending: Int? = nil, now: UInt64) -> [Action] {
        guard var socket = sockets[connection] else { return [] }
        socket.pending = pending ?? max(0, socket.pending - 1)
        sockets[connection] = socket
        return handOverIfDrained(connection)
    }

    /// The socket sent a command (before it stopped reading).
    mutating func sent(_ connection: Connection) {
        sockets[connection]?.pending += 1
    }

    /// Its state and descriptor went to the new frontend (`ok`), or could
    /// not (it was closed with 1012 instead).
    mutating func handedOver(_ connection: Connection, ok: Bool, now: UInt64) -> [Action] {
        guard sockets.removeValue(forKey: connection) != nil else { return [] }
        if ok { moved += 1 } else { closed += 1 }
        inFlight -= 1
        return stopNext() + finishIfDone()
    }

    /// The client closed it meanwhile: nothing to hand over.
    mutating func gone(_ connection: Connection, now: UInt64) -> [Action] {
        guard let socket = sockets.removeValue(forKey: connection) else { return [] }
        draining[connection] = nil
        if socket.phase == .stopping || socket.phase == .handing { inFlight -= 1 }
        guard state == .moving else { return [] }
        return stopNext() + finishIfDone()
    }

    /// Time passed: the ready deadline, drain bounds.
    mutating func tick(now: UInt64) -> [Action] {
        switch state {
        case .offered(let deadline) where now >= deadline:
            return giveUp("the new frontend did not subscribe in time")
        case .seeding(let deadline) where now >= deadline:
            return giveUp("the new frontend did not seed the delivered keys in time")
        case .moving:
            let overdue = draining.filter { now >= $0.value + timing.drainBound }.map(\.key)
            return overdue.flatMap { connection in
                // Its replies come too late for it: handed over without them.
                sockets[connection]?.pending = 0
                return handOverIfDrained(connection)
            }
        default:
            return []
        }
    }

    /// When `tick` next has work.
    var nextWakeup: UInt64? {
        switch state {
        case .offered(let deadline), .seeding(let deadline): return deadline
        case .moving:
            return draining.values.min().map { $0 + timing.drainBound }
        default: return nil
        }
    }

    // MARK: Steps

    private mutating func giveUp(_ reason: String) -> [Action] {
        // OFFERED, SEEDING -> IDLE
        state = .idle
        reset()
        return [.resumeServing(reason: reason)]
    }

    /// Forgets the last handover's sockets and counts.
    private mutating func reset() {
        sockets.removeAll()
        draining.removeAll()
        queue.removeAll()
        queueHead = 0
        inFlight = 0
        moved = 0
        closed = 0
    }

    private mutating func handOverIfDrained(_ connection: Connection) -> [Action] {
        guard state == .moving, let socket = sockets[connection], case .stopped = socket.phase, socket.pending == 0 else { return [] }
        sockets[connection]?.phase = .handing
        inFlight += 1
        draining[connection] = nil
        return [.handOver(connection)]
    }

    /// Stops the next sockets, up to the window.
    private mutating func stopNext() -> [Action] {
        var actions: [Action] = []
        while inFlight < timing.window, queueHead < queue.count {
            let connection = queue[queueHead]
            queueHead += 1
            guard sockets[connection] != nil else { continue }
            sockets[connection]?.phase = .stopping
            inFlight += 1
            actions.append(.stopReading(connection))
        }
        return actions
    }

    private mutating func finishIfDone() -> [Action] {
        guard state == .moving, sockets.isEmpty else { return [] }
        // MOVING -> HANDED OVER
        state = .handedOver
        return [.send(.done(connections: moved)), .finished(moved: moved, closed: closed)]
    }
}
