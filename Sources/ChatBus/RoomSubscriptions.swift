import ChatWire

/// Which rooms' events this frontend receives: one subscription per room its
/// WebSockets are in, however many sockets on however many event loops, held
/// by reference count. The logic of it, without sockets or clocks: every
/// input comes with the time (monotonic nanoseconds), every effect is an
/// `Action` returned, and `BusClient` carries them out on its bus thread.
///
/// A handshake waits (`acquire`) until the room's subscription is known to
/// be in force at the broker: a sync (`SubscriptionSync`) requested after
/// the room's subscribe has been answered. From then on every event of the
/// room the broker forwards reaches this frontend, so the socket it accepts
/// misses none. A room nobody holds stays subscribed for `linger`, so a
/// client that reconnects (a page reload) finds it ready; after that it is
/// unsubscribed, and subscribing again needs a newer sync: an answer to one
/// requested before the unsubscribe proves nothing about the new one.
///
/// Syncs are pipelined: at most two unanswered at a time, and rooms
/// subscribed meanwhile wait for the next, requested when one answers, so a
/// storm of new rooms (clients of a restarted sibling reconnecting) costs
/// about one sync per round trip and each answer releases every room
/// subscribed before it; the second in flight means one lost answer does
/// not hold up the rooms behind it until the resync. An unanswered sync is
/// asked again after `resync` but stays subscribed until answered or past
/// the `deadline`: its answer may only be queued behind events, and
/// dropping its topic would drop the answer with it.
/// `Waiter` is what the owner needs to answer a handshake.
public struct RoomSubscriptions<Waiter> {
    public enum Action {
        /// Subscribe the events socket to the room's topic.
        case subscribe(room: String)
        /// Unsubscribe the events socket from it.
        case unsubscribe(room: String)
        /// Subscribe to this sync's topic: the broker answers on it.
        case requestSync(SubscriptionSync)
        /// Unsubscribe from this sync's topic: answered, or no longer needed.
        case endSync(SubscriptionSync)
        /// The room's events reach this frontend from now on. The waiter
        /// holds one reference to the room, given back with `release`.
        case ready(Waiter)
        /// No answer in time (or the bus is closing): the waiter holds nothing.
        case failed(Waiter, BusFailure)
    }

    public struct Timing: Sendable {
        /// How long a room nobody holds stays subscribed.
        public var linger: UInt64
        /// A sync not answered this long is requested again: the broker
        /// dropped the answer because this frontend's pipe was at its mark.
        public var resync: UInt64
        /// How long a waiter waits before it fails with `.timedOut`.
        public var deadline: UInt64

        public init(linger: UInt64, resync: UInt64, deadline: UInt64) {
            self.linger = linger
            self.resync = resync
            self.deadline = deadline
        }
    }

    struct Room {
        /// References handed out, plus the waiters (each will hold one).
        var holders = 0
        /// Oldest first: they all wait the same `deadline`.
        var waiters: [(waiter: Waiter, deadline: UInt64)] = []
        /// The lowest sync whose answer proves the subscription in force;
        /// nil once one has.
        var needs: UInt64?
        /// When the last holder let go: the linger runs from here.
        var idleSince: UInt64?
    }

    public let frontendID: String
    public let timing: Timing
    var rooms: [String: Room] = [:]
    /// Rooms whose `needs` is set.
    var awaiting: Set<String> = []
    /// Syncs requested and not yet ended, with when each was requested.
    var syncs: [UInt64: UInt64] = [:]
    /// Unanswered syncs beyond which a due one waits for an answer (or the resync).
    static var inFlight: Int { 2 }
    /// The number of the next sync requested; a new room needs it.
    var nextSync: UInt64 = 1
    /// A room needs `nextSync`, not requested yet.
    var syncDue = false
    var lastRequest: UInt64 = 0
    /// Rooms as they went idle, oldest first (the linger is the same for
    /// all); an entry whose room was taken again since is skipped.
    var idle: [(room: String, since: UInt64)] = []
    var idleHead = 0
    var actions: [Action] = []

    public init(frontendID: String, timing: Timing) {
        self.frontendID = frontendID
        self.timing = timing
    }

    /// Rooms subscribed now, lingering ones included.
    public var count: Int { rooms.count }

    // MARK: Inputs

    /// A handshake for `room`: `.ready` at once if its subscription is in
    /// force, otherwise once a sync answers (`tick` requests it).
    public mutating func acquire(_ room: String, waiter: Waiter, now: UInt64) -> [Action] {
        var entry = rooms[room] ?? subscribe(room)
        entry.holders += 1
        entry.idleSince = nil
        if entry.needs == nil {
            actions.append(.ready(waiter))
        } else {
            entry.waiters.append((waiter, now + timing.deadline))
        }
        rooms[room] = entry
        return takeActions()
    }

    /// One reference given back (a socket of the room closed). A room no
    /// longer held is unsubscribed after the linger.
    public mutating func release(_ room: String, now: UInt64) -> [Action] {
        guard var entry = rooms[room], entry.holders > entry.waiters.count else { return [] }
        entry.holders -= 1
        rooms[room] = entry
        if entry.holders == 0 { wentIdle(room, now: now) }
        return takeActions()
    }

    /// The broker answered sync `number`: every room that needs it or an
    /// older one is in force, and its waiters are ready.
    public mutating func synced(_ sync: SubscriptionSync, now: UInt64) -> [Action] {
        guard sync.frontendID == frontendID else { return [] }
        for room in awaiting {
            guard var entry = rooms[room], let needs = entry.needs, needs <= sync.number else { continue }
            entry.needs = nil
            for (waiter, _) in entry.waiters { actions.append(.ready(waiter)) }
            entry.waiters.removeAll()
            rooms[room] = entry
            awaiting.remove(room)
        }
        for number in syncs.keys.sorted() where number <= sync.number { endSync(number) }
        return takeActions()
    }

    /// Time passed: syncs to request or request again, waiters out of time,
    /// rooms whose linger ended, syncs nobody needs any more.
    public mutating func tick(now: UInt64) -> [Action] {
        expireWaiters(now: now)
        endStaleSyncs(now: now)
        if (syncDue && syncs.count < Self.inFlight) || (hasWaiters && now >= lastRequest + timing.resync) { requestSync(now: now) }
        unsubscribeLingering(now: now)
        if awaiting.isEmpty && !syncs.isEmpty {
            for number in syncs.keys.sorted() { endSync(number) }
        }
        return takeActions()
    }

    /// The end: every waiter fails with `.closed`.
    public mutating func close() -> [Action] {
        for room in awaiting {
            for (waiter, _) in rooms[room]?.waiters ?? [] { actions.append(.failed(waiter, .closed)) }
            rooms[room]?.waiters.removeAll()
        }
        return takeActions()
    }

    /// When `tick` next has work; nil when only an input can bring any.
    public var nextWakeup: UInt64? {
        var wake: UInt64? = idleHead < idle.count ? idle[idleHead].since + timing.linger : nil
        for room in awaiting {
            guard let first = rooms[room]?.waiters.first else { continue }
            wake = min(wake ?? .max, first.deadline, lastRequest + timing.resync)
        }
        if (syncDue && syncs.count < Self.inFlight) || (awaiting.isEmpty && !syncs.isEmpty) { wake = 0 }
        return wake
    }

    // MARK: Steps

    /// A room not subscribed before: subscribed now, in force once a sync
    /// requested after this answers.
    mutating func subscribe(_ room: String) -> Room {
        actions.append(.subscribe(room: room))
        awaiting.insert(room)
        syncDue = true
        return Room(needs: nextSync)
    }

    /// Unanswered for a whole deadline, a sync's answer would come too late
    /// for any waiter: its topic ends, so a broker out of reach leaves at
    /// most deadline / resync sync topics, not one per resync.
    mutating func endStaleSyncs(now: UInt64) {
        for (number, requested) in syncs where requested + timing.deadline <= now { endSync(number) }
    }

    mutating func requestSync(now: UInt64) {
        let sync = SubscriptionSync(frontendID: frontendID, number: nextSync)
        nextSync += 1
        syncDue = false
        lastRequest = now
        syncs[sync.number] = now
        actions.append(.requestSync(sync))
    }

    mutating func endSync(_ number: UInt64) {
        syncs[number] = nil
        actions.append(.endSync(SubscriptionSync(frontendID: frontendID, number: number)))
    }

    var hasWaiters: Bool { awaiting.contains { rooms[$0]?.waiters.isEmpty == false } }

    /// Waiters past their deadline fail and let go of the room.
    mutating func expireWaiters(now: UInt64) {
        for room in awaiting {
            guard var entry = rooms[room], let first = entry.waiters.first, first.deadline <= now else { continue }
            let expired = entry.waiters.prefix { $0.deadline <= now }
            for (waiter, _) in expired { actions.append(.failed(waiter, .timedOut)) }
            entry.waiters.removeFirst(expired.count)
            entry.holders -= expired.count
            rooms[room] = entry
            if entry.holders == 0 { wentIdle(room, now: now) }
        }
    }

    mutating func wentIdle(_ room: String, now: UInt64) {
        rooms[room]?.idleSince = now
        idle.append((room, now))
    }

    /// Rooms idle for the whole linger are unsubscribed; entries of rooms
    /// taken again since are skipped.
    mutating func unsubscribeLingering(now: UInt64) {
        while idleHead < idle.count, idle[idleHead].since + timing.linger <= now {
            let (room, since) = idle[idleHead]
            idleHead += 1
            guard let entry = rooms[room], entry.holders == 0, entry.idleSince == since else { continue }
            rooms[room] = nil
            awaiting.remove(room)
            actions.append(.unsubscribe(room: room))
        }
        // Compacted once the consumed part dominates, so it stays bounded.
        if idleHead > 1_024 && idleHead * 2 > idle.count {
            idle.removeFirst(idleHead)
            idleHead = 0
        }
    }

    mutating func takeActions() -> [Action] {
        defer { actions.removeAll(keepingCapacity: true) }
        return actions
    }
}
