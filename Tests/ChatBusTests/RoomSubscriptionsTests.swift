import ChatBus
import ChatWire
import Testing

/// A frontend's room subscriptions, driven by hand: time moves only when a
/// test says so. Waiters are names; what the machine did to the events
/// socket is kept as the socket would hold it.
final class Subscriptions {
    typealias Rooms = RoomSubscriptions<String>
    static let ms: UInt64 = 1_000_000
    var machine: Rooms
    var now: UInt64 = 1_000 * ms
    /// The events socket's room subscriptions, in the order made.
    var log: [String] = []
    var subscribed: Set<String> = []
    /// Sync topics subscribed now, by number.
    var syncs: Set<UInt64> = []
    var requested: [UInt64] = []
    var ready: [String] = []
    var failed: [(String, BusFailure)] = []

    init(resyncMilliseconds: UInt64 = 750) {
        machine = Rooms(frontendID: "fe-1", timing: .init(linger: 5_000 * Self.ms, resync: resyncMilliseconds * Self.ms, deadline: 10_000 * Self.ms))
    }

    func take(_ actions: [Rooms.Action]) {
        for action in actions {
            switch action {
            case .subscribe(let room):
                #expect(subscribed.insert(room).inserted, "subscribed twice to \(room)")
                log.append("+\(room)")
            case .unsubscribe(let room):
                #expect(subscribed.remove(room) != nil, "unsubscribed from \(room), not subscribed")
                log.append("-\(room)")
            case .requestSync(let sync):
                #expect(sync.frontendID == "fe-1")
                syncs.insert(sync.number)
                requested.append(sync.number)
                log.append("sync \(sync.number)")
            case .endSync(let sync):
                #expect(syncs.remove(sync.number) != nil, "ended sync \(sync.number) twice")
            case .ready(let waiter): ready.append(waiter)
            case .failed(let waiter, let failure): failed.append((waiter, failure))
            }
        }
    }

    func acquire(_ room: String, _ waiter: String) { take(machine.acquire(room, waiter: waiter, now: now)) }
    func release(_ room: String) { take(machine.release(room, now: now)) }
    func synced(_ number: UInt64, frontend: String = "fe-1") {
        take(machine.synced(SubscriptionSync(frontendID: frontend, number: number), now: now))
    }
    func advance(ms: UInt64) {
        now += ms * Self.ms
        take(machine.tick(now: now))
    }
    func timedOut(_ waiter: String) -> Bool {
        failed.contains { $0.0 == waiter && { if case .timedOut = $0 { true } else { false } }($0.1) }
    }
}

@Suite struct RoomSubscriptionsTests {
    @Test func aHandshakeWaitsForASyncRequestedAfterItsRoomsSubscription() {
        let s = Subscriptions()
        s.acquire("a", "w1")
        s.acquire("b", "w2")
        #expect(s.ready.isEmpty)
        // One sync for every room subscribed in the batch, after them.
        s.advance(ms: 0)
        #expect(s.log == ["+a", "+b", "sync 1"])
        // Another frontend's sync, or one of a number not asked, says nothing.
        s.synced(1, frontend: "fe-2")
        #expect(s.ready.isEmpty)
        s.synced(1)
        #expect(s.ready.sorted() == ["w1", "w2"])
        #expect(s.syncs.isEmpty, "an answered sync's topic is dropped")
        #expect(s.machine.nextWakeup == nil)
    }

    @Test func aRoomInForceIsReadyAtOnceAndSubscribedOnceHoweverManySockets() {
        let s = Subscriptions()
        s.acquire("a", "w1")
        s.acquire("a", "w2")
        s.advance(ms: 0)
        s.synced(1)
        s.acquire("a", "w3")
        #expect(s.ready == ["w1", "w2", "w3"])
        #expect(s.log == ["+a", "sync 1"])
        // Three holders: the room stays until the last lets go, and the linger after.
        s.release("a")
        s.release("a")
        s.advance(ms: 60_000)
        #expect(s.subscribed == ["a"])
        s.release("a")
        s.advance(ms: 4_999)
        #expect(s.subscribed == ["a"])
        s.advance(ms: 1)
        #expect(s.subscribed.isEmpty && s.log.last == "-a")
        #expect(s.machine.count == 0)
        // A release with nothing held changes nothing.
        s.release("a")
        s.advance(ms: 10_000)
        #expect(s.log.last == "-a")
    }

    @Test func aRoomTakenAgainDuringItsLingerStaysSubscribedAndReady() {
        let s = Subscriptions()
        s.acquire("a", "w1")
        s.advance(ms: 0)
        s.synced(1)
        s.release("a")
        s.advance(ms: 4_000)
        s.acquire("a", "w2")
        #expect(s.ready == ["w1", "w2"])
        s.advance(ms: 2_000)
        // The linger of the first release is over, but the room is held.
        #expect(s.subscribed == ["a"])
        s.release("a")
        s.advance(ms: 4_999)
        #expect(s.subscribed == ["a"])
        s.advance(ms: 1)
        #expect(s.log == ["+a", "sync 1", "-a"])
    }

    /// An answer to a sync requested before an unsubscribe proves nothing
    /// about the subscription made after it: events in between were lost.
    @Test func aStaleSyncDoesNotConfirmASubscriptionMadeAfterAnUnsubscribe() {
        // No resends meanwhile: sync 2 is the one in flight.
        let s = Subscriptions(resyncMilliseconds: 60_000)
        s.acquire("a", "w1")
        s.advance(ms: 0)
        s.acquire("b", "w2")
        s.advance(ms: 0)
        #expect(s.requested == [1, 2])
        s.synced(1)
        #expect(s.ready == ["w1"])
        s.release("a")
        s.advance(ms: 5_000)
        #expect(s.log.last == "-a")
        s.acquire("a", "w3")
        s.advance(ms: 0)
        #expect(s.log.suffix(2) == ["+a", "sync 3"])
        // Sync 2 was asked before `a` was subscribed again: it answers for `b` only.
        s.synced(2)
        #expect(s.ready == ["w1", "w2"])
        s.synced(3)
        #expect(s.ready == ["w1", "w2", "w3"])
        #expect(s.syncs.isEmpty)
    }

    @Test func aLostSyncIsAskedAgainAndAnyLaterAnswerConfirms() {
        let s = Subscriptions()
        s.acquire("a", "w1")
        s.advance(ms: 0)
        s.advance(ms: 749)
        #expect(s.requested == [1])
        s.advance(ms: 1)
        #expect(s.requested == [1, 2])
        s.synced(2)
        #expect(s.ready == ["w1"])
        // Sync 1 may never come: its topic is dropped all the same.
        #expect(s.syncs.isEmpty)
        s.advance(ms: 10_000)
        #expect(s.requested == [1, 2])
    }

    @Test func whileNoSyncIsAnsweredTheSyncTopicsStayBounded() {
        let s = Subscriptions()
        s.acquire("a", "w1")
        s.advance(ms: 0)
        // The broker is out of reach: resyncs every 750 ms, none answered;
        // a sync a whole deadline (10 s) old ends.
        for _ in 0..<13 { s.advance(ms: 750) }
        #expect(s.requested == Array(1...14))
        #expect(s.syncs == Set(1...14))
        // 10.5 s: sync 1 is past the deadline, and so is the waiter (no resync).
        s.advance(ms: 750)
        #expect(s.timedOut("w1"))
        #expect(s.syncs == Set(2...14))
        s.synced(14)
        #expect(s.syncs.isEmpty)
    }

    /// The review's starvation: a new room every bus-loop pass (a sibling's
    /// clients reconnecting) must not cancel the sync in flight, or no
    /// answer survives while the storm lasts.
    @Test func aStormOfNewRoomsCostsOneSyncPerRoundTripAndStarvesNoHandshake() {
        let s = Subscriptions()
        s.acquire("r0", "w0")
        s.advance(ms: 0)
        for i in 1...50 {
            s.acquire("r\(i)", "w\(i)")
            s.advance(ms: 0)
        }
        #expect(s.requested == [1, 2], "two syncs in flight while the rooms arrive")
        s.synced(1)
        #expect(s.ready == ["w0"])
        s.advance(ms: 0)
        #expect(s.requested == [1, 2, 3])
        s.synced(2)
        #expect(s.ready == ["w0", "w1"])
        s.synced(3)
        #expect(s.ready.count == 51 && s.syncs.isEmpty)
    }

    /// A frontend whose events socket is behind (its answer queued behind
    /// events for longer than the resync) still gets its handshakes through.
    @Test func anAnswerSlowerThanTheResyncStillConfirms() {
        let s = Subscriptions()
        s.acquire("a", "w1")
        s.advance(ms: 0)
        s.advance(ms: 750)
        s.advance(ms: 750)
        #expect(s.requested == [1, 2, 3] && s.syncs == [1, 2, 3])
        s.synced(1)
        #expect(s.ready == ["w1"])
        // Nothing awaits any more: the later syncs' topics end.
        s.advance(ms: 0)
        #expect(s.syncs.isEmpty)
    }

    @Test func aWaiterTimesOutHoldingNothingAndTheRoomGoesAfterItsLinger() {
        let s = Subscriptions()
        s.acquire("a", "w1")
        s.advance(ms: 0)
        s.advance(ms: 5_000)
        s.acquire("a", "w2")
        s.advance(ms: 5_000)
        #expect(s.timedOut("w1") && s.failed.count == 1)
        // w2 still waits; resends went on meanwhile.
        #expect(s.requested.count > 2)
        s.advance(ms: 5_000)
        #expect(s.timedOut("w2") && s.ready.isEmpty)
        // A failed waiter gives nothing back: the release below is ignored,
        // and the room goes after the linger.
        s.release("a")
        s.advance(ms: 4_999)
        #expect(s.subscribed == ["a"])
        s.advance(ms: 1)
        #expect(s.subscribed.isEmpty && s.syncs.isEmpty)
        #expect(s.machine.nextWakeup == nil)
    }

    @Test func aLateSyncStillConfirmsARoomWhoseWaitersTimedOut() {
        let s = Subscriptions()
        s.acquire("a", "w1")
        s.advance(ms: 0)
        s.advance(ms: 10_000)
        #expect(s.timedOut("w1"))
        s.acquire("a", "w2")
        let last = s.requested.last!
        s.synced(last)
        #expect(s.ready == ["w2"])
        s.acquire("a", "w3")
        #expect(s.ready == ["w2", "w3"])
    }

    @Test func closingFailsEveryWaiter() {
        let s = Subscriptions()
        s.acquire("a", "w1")
        s.acquire("b", "w2")
        s.advance(ms: 0)
        s.take(s.machine.close())
        #expect(s.failed.map(\.0).sorted() == ["w1", "w2"])
        #expect(s.failed.allSatisfy { if case .closed = $0.1 { true } else { false } })
    }

    @Test func wakesForTheNextDeadlineResyncAndLinger() {
        let s = Subscriptions()
        #expect(s.machine.nextWakeup == nil)
        s.acquire("a", "w1")
        #expect(s.machine.nextWakeup == 0, "a sync is due")
        s.advance(ms: 0)
        #expect(s.machine.nextWakeup == s.now + 750 * Subscriptions.ms)
        s.synced(1)
        #expect(s.machine.nextWakeup == nil)
        s.release("a")
        #expect(s.machine.nextWakeup == s.now + 5_000 * Subscriptions.ms)
    }
}
