import ChatWire
import NIOCore

/// What one event loop keeps for a handover, beside its registry: the old
/// frontend's log of each room's events (hashes, from the offer on), or the
/// new one's buffer of them (from its subscriptions on). Touched only on
/// the loop. Every loop receives every event batch (`ConnectionRegistry.fanOut`),
/// so each loop's log and buffer are each room's whole stream.
struct HandoverLoopState {
    struct Buffered {
        let hash: UInt64
        let key: EventKey
        let frame: ByteBuffer
        /// The first copy of its key here (`LoopRegistry.firstDelivery`):
        /// a repeated copy is not replayed either.
        let fresh: Bool
    }

    /// Old side: each room's hashes, oldest first, and whether older ones were dropped.
    var logs: [String: (hashes: [UInt64], truncated: Bool)] = [:]
    /// New side: each room's events, and whether its start was dropped.
    var buffers: [String: (events: [Buffered], cut: Bool)] = [:]
    /// New side: keys the old process delivered everywhere: no copy of one
    /// is replayed or written to a socket it moved (`WebSocketConnection.adopted`).
    /// Kept `deliveredMemory` past the handover, the window of a worker's resends.
    var delivered = Set<EventKey>()
    static let deliveredMemory = TimeAmount.seconds(15)

    /// A room busier than this during a handover loses its buffer's start:
    /// its sockets are then closed with 1012 rather than risk a gap.
    static let bufferCapacity = 4 * HandoverLog.capacity

    mutating func record(room: String, hash: UInt64, key: EventKey, frame: ByteBuffer, fresh: Bool, mode: HandoverMode) {
        if mode.contains(.log) {
            var log = logs[room] ?? ([], false)
            if log.hashes.count == HandoverLog.capacity {
                log.hashes.removeFirst(HandoverLog.capacity / 2)
                log.truncated = true
            }
            log.hashes.append(hash)
            logs[room] = log
        }
        if mode.contains(.buffer) {
            var buffer = buffers[room] ?? ([], false)
            if buffer.events.count == Self.bufferCapacity {
                buffer.events.removeFirst(Self.bufferCapacity / 2)
                buffer.cut = true
            }
            buffer.events.append(Buffered(hash: hash, key: key, frame: frame, fresh: fresh))
            buffers[room] = buffer
        }
    }
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
        let buffer = handover.buffers[connection.roomID] ?? ([], false)
        guard let overlap = HandoverLog.overlap(written: written, truncated: truncated, buffered: buffer.events.map(\.hash)),
            overlap > 0 || !buffer.cut || buffer.events.isEmpty
        else { return nil }
        var replayed = 0
        for event in buffer.events[overlap...] where event.fresh && !handover.delivered.contains(event.key) {
            switch event.key {
            case .removeUser(let user) where user == connection.identity.id:
                connection.membershipEnded()
                return replayed
            case .removeEveryone:
                connection.membershipEnded()
                return replayed
            case .except(let excluded) where excluded == connection.key:
                continue
            case .removeUser:
                continue
            default:
                connection.write(text: event.frame)
                replayed += 1
            }
        }
        connection.flush()
        add(connection, room: connection.roomID)
        return replayed
    }

    /// New side: keys the old process delivered on every loop count as
    /// delivered to the sockets it moves (before any is adopted on this loop).
    func seedDelivered(_ keys: [EventKey]) {
        loop.preconditionInEventLoop()
        // Not into the dedup set: this process's own sockets may still need
        // a first copy that has not reached it yet.
        handover.delivered.formUnion(keys)
        loop.scheduleTask(in: HandoverLoopState.deliveredMemory) { self.handover.delivered.removeAll() }
    }

    /// Old side: keys every loop has delivered, for `HandoverMessage.delivered`.
    static func deliveredEverywhere(_ registries: [LoopRegistry], count: Int) -> EventLoopFuture<[String]> {
        let lists = registries.map { registry in registry.loop.submit { registry.recentlyDelivered(count).map(\.description) } }
        return EventLoopFuture.whenAllSucceed(lists, on: registries[0].loop).map { lists in
            guard var common = lists.first.map(Set.init) else { return [] }
            for list in lists.dropFirst() { common.formIntersection(list) }
            // In the first loop's order, oldest first.
            return lists[0].filter(common.contains)
        }
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
        handoverMode.store(mode.rawValue, ordering: .sequentiallyConsistent)
        guard mode.isEmpty else { return }
        for registry in registries.values { registry.loop.execute { registry.endHandover() } }
    }
}
