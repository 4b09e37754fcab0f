import ChatWire
import NIOCore

/// What one event loop keeps for a handover, beside its registry: the old
/// frontend's log of each room's events (hashes, from the offer on), or the
/// new one's buffer of them (from its subscriptions on). Touched only on
/// the loop, and written in the same turn as the delivery of the same batch
/// (`LoopRegistry.deliver`), so a log stands exactly for what this loop's
/// sockets were written. Every loop receives every event batch
/// (`ConnectionRegistry.fanOut`), so each loop's log and buffer are each
/// room's whole stream.
struct HandoverLoopState {
    /// Old side: each room's hashes, oldest first, and whether older ones were dropped.
    var logs: [String: (hashes: [UInt64], truncated: Bool)] = [:]
    /// New side: each room's events (their `fresh` is the bus thread's
    /// duplicate check: a repeated copy is not replayed either), and whether
    /// its start was dropped.
    var buffers: [String: (events: [DeliveryPlan.Recorded], cut: Bool)] = [:]
    /// New side: keys the old process delivered: no copy of one is replayed
    /// to a socket it moved (live copies: `HandoverFanOut.delivered`).
    /// Kept `deliveredMemory` past the handover, the window of a worker's resends.
    var delivered = Set<EventKey>()
    static let deliveredMemory = TimeAmount.seconds(15)

    /// A room busier than this during a handover loses its buffer's start:
    /// its sockets are then closed with 1012 rather than risk a gap.
    static let bufferCapacity = 4 * HandoverLog.capacity

    /// New side: what a socket adopted into `room` is owed, as delivery
    /// steps: the buffered events after the overlap with its log, in order,
    /// but no copy of a key its old process delivered (`delivered`: a
    /// worker's resend), no repeat, not its own typing, and a removal of its
    /// user (or everyone) as the last step; `replayed` counts the frames.
    /// Nil when where it stopped cannot be told: its buffer lost its start
    /// and nothing in common is known, or its log was cut and is not found.
    func replay(room: String, written: [UInt64], truncated: Bool, user: String, device: String? = nil, connection: ConnectionRef)
        -> (steps: [DeliveryPlan.Step], replayed: Int, removed: Bool)?
    {
        let buffer = buffers[room] ?? ([], false)
        guard let overlap = HandoverLog.overlap(written: written, truncated: truncated, buffered: buffer.events.map(\.hash)),
            overlap > 0 || !buffer.cut || buffer.events.isEmpty
        else { return nil }
        var steps: [DeliveryPlan.Step] = []
        var removed = false
        for event in buffer.events[overlap...] where event.fresh && !delivered.contains(event.key) {
            switch event.key {
            case .removeUser(let removedUser) where removedUser == user:
                removed = true
            case .removeEveryone:
                removed = true
            case .except(let excluded) where excluded == connection:
                continue  // its own typing
            case .removeUser:
                continue
            case _ where event.hiddenFrom.contains(user):
                continue  // its user blocked the sender
            case .onlyUser(let addressee) where addressee != user:
                continue  // a call signal for someone else
            case .onlyDevice(let owner, let target) where owner != user || target != device:
                continue  // another device's ciphertext
            default:
                steps.append(.frames(event.frame, excluded: nil))
            }
            if removed { break }
        }
        let replayed = steps.count
        if removed { steps.append(.remove(user: nil)) }
        return (steps, replayed, removed)
    }

    mutating func record(room: String, _ events: [DeliveryPlan.Recorded], mode: HandoverMode) {
        guard !events.isEmpty else { return }
        if mode.contains(.log) {
            var log = logs[room] ?? ([], false)
            for event in events {
                if log.hashes.count == HandoverLog.capacity {
                    log.hashes.removeFirst(HandoverLog.capacity / 2)
                    log.truncated = true
                }
                log.hashes.append(event.hash)
            }
            logs[room] = log
        }
        if mode.contains(.buffer) {
            var buffer = buffers[room] ?? ([], false)
            for event in events {
                if buffer.events.count == Self.bufferCapacity {
                    buffer.events.removeFirst(Self.bufferCapacity / 2)
                    buffer.cut = true
                }
                buffer.events.append(event)
            }
            buffers[room] = buffer
        }
    }
}

/// A handover's part of the fan-out, kept by the bus thread beside the
/// recent keys (`ConnectionRegistry.fanOutState`). Idle (no handover, none
/// within `deliveredMemory`), the delivery plan takes main's path: no
/// hashing, no per-event records.
struct HandoverFanOut: Sendable {
    /// What the loops record of each event.
    var mode: HandoverMode = []
    /// New side: keys the old process delivered (`HandoverMessage.delivered`):
    /// a live copy of one is written to every socket but those it moved.
    var delivered = Set<EventKey>()

    var isIdle: Bool { mode.isEmpty && delivered.isEmpty }
}

/// Which handover records a frontend keeps now (`ConnectionRegistry.handoverMode`).
struct HandoverMode: OptionSet, Sendable {
    let rawValue: Int
    /// Old side: log each room's event hashes.
    static let log = HandoverMode(rawValue: 1)
    /// New side: buffer each room's events.
    static let buffer = HandoverMode(rawValue: 2)
}

extension LoopRegistry {
    /// Old side: takes `connection` out of its room (nothing more is
    /// written to it) and returns the room's log as it stands: every event
    /// of the room this loop received since the offer, up to now.
    func detachForHandover(_ connection: WebSocketConnection) -> (written: [UInt64], truncated: Bool) {
        loop.preconditionInEventLoop()
        remove(connection, room: connection.roomID)
        let log = handover.logs[connection.roomID] ?? ([], false)
        return (log.hashes, log.truncated)
    }

    /// New side: writes an adopted socket the buffered events of its room
    /// it did not get from its old process, in order, then registers it for
    /// what comes next: on this loop, so nothing falls between the two.
    /// Returns how many it replayed; nil when where it stopped cannot be told
    /// (the socket is not registered; the caller closes it with 1012).
    func adopt(_ connection: WebSocketConnection, written: [UInt64], truncated: Bool) -> Int? {
        loop.preconditionInEventLoop()
        guard
            let (steps, replayed, removed) = handover.replay(
                room: connection.roomID, written: written, truncated: truncated, user: connection.identity.id, device: connection.session.deviceID,
                connection: connection.key
            )
        else { return nil }
        // Frames in order, one flush; a removal closes it with 4403 after them.
        connection.deliver(steps)
        if !removed { add(connection, room: connection.roomID) }
        return replayed
    }

    /// New side: keys the old process delivered count as delivered to the
    /// sockets it moves (before any is adopted on this loop).
    func seedDelivered(_ keys: [EventKey]) {
        loop.preconditionInEventLoop()
        // Not into the duplicate check: this process's own sockets may still
        // need a first copy that has not reached it yet.
        handover.delivered.formUnion(keys)
        loop.scheduleTask(in: HandoverLoopState.deliveredMemory) { self.handover.delivered.removeAll() }
    }

    /// The handover is over: logs and buffers go (the delivered keys stay for `deliveredMemory`).
    func endHandover() {
        loop.preconditionInEventLoop()
        handover.logs = [:]
        handover.buffers = [:]
    }
}

extension ConnectionRegistry {
    /// Starts (or ends, with `[]`) logging or buffering on every loop, from
    /// the next event batch on; ending also drops what each loop kept.
    func setHandoverMode(_ mode: HandoverMode) {
        fanOutState.withLock { $0.handover.mode = mode }
        guard mode.isEmpty else { return }
        for registry in registries.values { registry.loop.execute { registry.endHandover() } }
    }

    /// Old side: the last `count` idempotency keys this process delivered,
    /// oldest first, for `HandoverMessage.delivered`. Each one's batch went
    /// to every loop before it was kept (`fanOut`), so a socket stopped
    /// after this got it (or a removal closed it).
    func recentlyDelivered(_ count: Int) -> [EventKey] {
        fanOutState.withLock { $0.recent.last(count) }
    }

    /// New side: keys the old process delivered count as delivered to the
    /// sockets it moves, for `HandoverLoopState.deliveredMemory`: seeded in
    /// every loop (the replay) and in the fan-out (live copies) before any
    /// socket is adopted. `then` once every loop has them.
    func seedDelivered(_ keys: [EventKey], then: @escaping @Sendable () -> Void) {
        guard !keys.isEmpty, let first = registries.values.first else { return then() }
        fanOutState.withLock { $0.handover.delivered.formUnion(keys) }
        let seeded = registries.values.map { registry in registry.loop.submit { registry.seedDelivered(keys) } }
        EventLoopFuture.andAllComplete(seeded, on: first.loop).whenComplete { _ in then() }
        first.loop.scheduleTask(in: HandoverLoopState.deliveredMemory) {
            // Back on main's path once the resend window has passed.
            self.fanOutState.withLock { $0.handover.delivered.removeAll() }
        }
    }
}
