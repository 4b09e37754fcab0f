import ChatWire
import Testing

@testable import ChatFrontend

/// The handover's races, with time as an input: who says what when, a
/// socket's pending commands, a peer that refuses, dies or is slow.
@Suite struct HandoverMachineTests {
    typealias Sender = HandoverSender<Int>
    static let ms: UInt64 = 1_000_000
    static let timing = Sender.Timing(readyTimeout: 5_000 * ms, drainBound: 2_000 * ms, window: 2)

    func offered(_ sockets: [(Int, pending: Int)]) -> Sender {
        var sender = Sender(timing: Self.timing)
        let actions = sender.start(sockets: sockets, rooms: ["r"], now: 0)
        #expect(actions == [.send(.offer(rooms: ["r"], connections: sockets.count))])
        return sender
    }

    /// The old stops no socket until the successor says the delivered keys
    /// are in force: no socket's pause holds their parse.
    @Test func nothingStopsBeforeTheSuccessorSeededTheKeys() {
        var sender = offered([(1, 0), (2, 0)])
        #expect(sender.received(.ready, now: 1) == [.sendDelivered])
        #expect(sender.state == .seeding(deadline: 5_000 * Self.ms), "the ready deadline holds on")
        #expect(sender.nextWakeup == 5_000 * Self.ms)
        #expect(sender.tick(now: 4_999 * Self.ms) == [])
        #expect(sender.received(.seeded, now: 2) == [.stopReading(1), .stopReading(2)])
        #expect(sender.state == .moving)
    }

    @Test func aSuccessorThatDoesNotSeedInTimeOrDiesLeavesTheOldServing() {
        var slow = offered([(1, 0)])
        _ = slow.received(.ready, now: 1)
        #expect(slow.tick(now: 5_000 * Self.ms) == [.resumeServing(reason: "the new frontend did not seed the delivered keys in time")])
        #expect(slow.state == .idle)
        #expect(slow.received(.seeded, now: 5_001 * Self.ms) == [], "a late seeded stops nothing")

        var dead = offered([(1, 0)])
        _ = dead.received(.ready, now: 1)
        #expect(dead.peerGone(now: 2) == [.resumeServing(reason: "the new frontend is gone")])

        var refusing = offered([(1, 0)])
        _ = refusing.received(.ready, now: 1)
        #expect(refusing.received(.refuse(reason: "no"), now: 2) == [.resumeServing(reason: "refused: no")])

        var early = offered([(1, 0)])
        #expect(early.received(.seeded, now: 1) == [.resumeServing(reason: "the new frontend is gone")], "seeded before ready is out of turn")
    }

    @Test func socketsMoveAWindowAtATime() {
        var sender = offered([(1, 0), (2, 0), (3, 0)])
        #expect(sender.readyAndSeeded(now: 1) == [.stopReading(1), .stopReading(2)])
        #expect(sender.stopped(1, now: 2) == [.handOver(1)])
        #expect(sender.stopped(2, now: 2) == [.handOver(2)])
        #expect(sender.handedOver(1, ok: true, now: 3) == [.stopReading(3)])
        #expect(sender.stopped(3, now: 4) == [.handOver(3)])
        #expect(sender.handedOver(2, ok: true, now: 5) == [])
        #expect(sender.handedOver(3, ok: false, now: 5) == [.send(.done(connections: 2)), .finished(moved: 2, closed: 1)])
        #expect(sender.state == .handedOver)
    }

    @Test func aSocketWaitsForItsRepliesBeforeItMoves() {
        var sender = offered([(1, 2)])
        sender.sent(1)
        #expect(sender.readyAndSeeded(now: 0) == [.stopReading(1)])
        #expect(sender.stopped(1, now: 10) == [])
        #expect(sender.replied(1, now: 11) == [])
        #expect(sender.replied(1, now: 12) == [])
        #expect(sender.replied(1, now: 13) == [.handOver(1)])
        // A late duplicate reply does not hand it over twice.
        #expect(sender.replied(1, now: 14) == [])
        #expect(sender.tick(now: 10 + 3_000 * Self.ms) == [])
    }

    @Test func theDrainIsBounded() {
        var sender = offered([(1, 1)])
        _ = sender.readyAndSeeded(now: 0)
        _ = sender.stopped(1, now: 100)
        #expect(sender.nextWakeup == 100 + 2_000 * Self.ms)
        #expect(sender.tick(now: 100 + 1_999 * Self.ms) == [])
        #expect(sender.tick(now: 100 + 2_000 * Self.ms) == [.handOver(1)])
        #expect(sender.tick(now: 100 + 4_000 * Self.ms) == [])
        #expect(sender.replied(1, now: 100 + 4_000 * Self.ms) == [], "the reply came too late to matter")
    }

    @Test func theWakeupFollowsOnlyTheSocketsStillDraining() {
        var sender = offered([(1, 1), (2, 1)])
        _ = sender.readyAndSeeded(now: 0)
        _ = sender.stopped(1, now: 100)
        _ = sender.stopped(2, now: 200)
        #expect(sender.nextWakeup == 100 + 2_000 * Self.ms)
        #expect(sender.replied(1, now: 300) == [.handOver(1)])
        #expect(sender.nextWakeup == 200 + 2_000 * Self.ms, "a socket handed over no longer wakes the machine")
        #expect(sender.gone(2, now: 400) == [])
        #expect(sender.nextWakeup == nil, "nor one its client closed")
        #expect(sender.tick(now: 200 + 2_000 * Self.ms) == [])
    }

    @Test func repliesBeforeTheStopCountToo() {
        var sender = offered([(1, 1)])
        #expect(sender.replied(1, now: 0) == [])
        _ = sender.readyAndSeeded(now: 0)
        #expect(sender.stopped(1, now: 1) == [.handOver(1)])
    }

    @Test func aRefusalOrSilenceLeavesTheOldServing() {
        var refused = offered([(1, 0)])
        #expect(refused.received(.refuse(reason: "state version 2"), now: 1) == [.resumeServing(reason: "refused: state version 2")])
        #expect(refused.state == .idle)
        #expect(refused.received(.ready, now: 2) == [], "a late ready moves nothing")

        var silent = offered([(1, 0)])
        #expect(silent.nextWakeup == 5_000 * Self.ms)
        #expect(silent.tick(now: 4_999 * Self.ms) == [])
        #expect(silent.tick(now: 5_000 * Self.ms) == [.resumeServing(reason: "the new frontend did not subscribe in time")])

        var dead = offered([(1, 0)])
        #expect(dead.peerGone(now: 1) == [.resumeServing(reason: "the new frontend is gone")])
    }

    @Test func aPeerDyingMidwayClosesWhatIsLeft() {
        var sender = offered([(1, 0), (2, 0), (3, 0)])
        _ = sender.readyAndSeeded(now: 0)
        _ = sender.stopped(1, now: 1)
        _ = sender.handedOver(1, ok: true, now: 2)
        let actions = sender.peerGone(now: 3)
        #expect(Set(actions.compactMap { if case .closeForRestart(let c) = $0 { c } else { nil } }) == [2, 3])
        #expect(actions.suffix(2) == [
            .finished(moved: 1, closed: 2), .resumeServing(reason: "the new frontend is gone midway (1 moved, 2 closed with 1012)"),
        ])
        #expect(sender.state == .idle)
        // What was under way for the closed sockets comes back late and moves nothing.
        #expect(sender.stopped(2, now: 4) == [])
        #expect(sender.handedOver(2, ok: true, now: 4) == [])
        #expect(sender.tick(now: 10_000 * Self.ms) == [] && sender.nextWakeup == nil)
    }

    /// Sockets never stopped still read and get their events: a successor
    /// dying midway leaves them serving here, untouched; only what was
    /// stopped (reads paused, room left) and did not move closes.
    @Test func aPeerDyingMidwayClosesOnlyWhatWasStopped() {
        // Window 2: 1 is being handed over, 2 waits for a reply, 3 is told to stop, 4 still reads.
        var sender = offered([(1, 0), (2, 1), (3, 0), (4, 0)])
        #expect(sender.readyAndSeeded(now: 0) == [.stopReading(1), .stopReading(2)])
        #expect(sender.stopped(1, now: 1) == [.handOver(1)])
        #expect(sender.stopped(2, now: 1) == [.stopReading(3)])
        let actions = sender.peerGone(now: 3)
        #expect(Set(actions.compactMap { if case .closeForRestart(let c) = $0 { c } else { nil } }) == [1, 2, 3], "not 4: it still reads")
        #expect(actions.suffix(2) == [
            .finished(moved: 0, closed: 3), .resumeServing(reason: "the new frontend is gone midway (0 moved, 3 closed with 1012)"),
        ])
        #expect(sender.state == .idle && sender.sockets.isEmpty, "the readers are forgotten: nothing of theirs is under way")
    }

    @Test func aSuccessorDyingAfterItTookEverythingLeavesTheOldServing() {
        var sender = offered([(1, 0)])
        _ = sender.readyAndSeeded(now: 0)
        _ = sender.stopped(1, now: 1)
        #expect(sender.handedOver(1, ok: true, now: 2) == [.send(.done(connections: 1)), .finished(moved: 1, closed: 0)])
        #expect(sender.state == .handedOver, "waits to be retired: not serving")
        #expect(sender.received(.ready, now: 3) == [], "nothing after done is its business")
        #expect(sender.peerGone(now: 4) == [
            .resumeServing(reason: "the new frontend is gone after it took 1 WebSockets, before this process was retired"),
        ])
        #expect(sender.state == .idle)
        #expect(sender.peerGone(now: 5) == [], "resumed once")
    }

    @Test func everyEndLetsTheNextHandoverStartAndOnlyOneRunsAtATime() {
        let offer = [Sender.Action.send(.offer(rooms: ["r"], connections: 1))]
        // Failed midway.
        var sender = offered([(1, 0), (2, 0)])
        #expect(sender.start(sockets: [(9, 0)], rooms: ["r"], now: 0) == [], "one at a time: offered")
        _ = sender.readyAndSeeded(now: 0)
        #expect(sender.start(sockets: [(9, 0)], rooms: ["r"], now: 0) == [], "one at a time: moving")
        _ = sender.stopped(1, now: 1)
        _ = sender.handedOver(1, ok: true, now: 2)
        _ = sender.peerGone(now: 3)
        #expect(sender.start(sockets: [(3, 0)], rooms: ["r"], now: 4) == offer)
        // The next one counts its own sockets only.
        #expect(sender.readyAndSeeded(now: 5) == [.stopReading(3)])
        _ = sender.stopped(3, now: 6)
        #expect(sender.handedOver(3, ok: true, now: 7) == [.send(.done(connections: 1)), .finished(moved: 1, closed: 0)])
        #expect(sender.start(sockets: [(4, 0)], rooms: ["r"], now: 8) == [], "one at a time: handed over, its successor alive")
        // Its successor died before the retirement: the next one may start.
        _ = sender.peerGone(now: 9)
        #expect(sender.start(sockets: [(4, 0)], rooms: ["r"], now: 10) == offer)
        // Refused, then silent: each time the next one starts.
        _ = sender.received(.refuse(reason: "no"), now: 11)
        #expect(sender.start(sockets: [(4, 0)], rooms: ["r"], now: 12) == offer)
        _ = sender.tick(now: 12 + 5_000 * Self.ms)
        #expect(sender.start(sockets: [(4, 0)], rooms: ["r"], now: 13 + 5_000 * Self.ms) == offer)
    }

    @Test func socketsClosedByTheirClientsAreSkipped() {
        var sender = offered([(1, 0), (2, 0), (3, 0)])
        #expect(sender.gone(3, now: 0) == [])
        #expect(sender.readyAndSeeded(now: 1) == [.stopReading(1), .stopReading(2)])
        #expect(sender.gone(1, now: 2) == [])
        #expect(sender.stopped(2, now: 2) == [.handOver(2)])
        #expect(sender.handedOver(2, ok: true, now: 3) == [.send(.done(connections: 1)), .finished(moved: 1, closed: 0)])
    }

    /// A hung store shard: every socket waits its drain bound for replies
    /// that never come. Waiting sockets hold no place in the window, so
    /// all of them wait at once and the handover takes one bound, not one
    /// per window (1,000 / 32 windows of 2 s would outlast the supervisor).
    @Test func aHungStoreDelaysTheWholeHandoverByOneDrainBound() {
        var sender = Sender(timing: Sender.Timing(readyTimeout: 5_000 * Self.ms, drainBound: 2_000 * Self.ms, window: 32))
        _ = sender.start(sockets: (0..<1_000).map { ($0, pending: 1) }, rooms: ["r"], now: 0)
        var actions = sender.readyAndSeeded(now: 0)
        var stopped = 0
        // Each stop answers at once; its command is never answered.
        while let next = actions.first {
            actions.removeFirst()
            guard case .stopReading(let socket) = next else { continue }
            stopped += 1
            actions += sender.stopped(socket, now: 1)
        }
        #expect(stopped == 1_000, "every socket stopped before any bound passed")
        #expect(sender.nextWakeup == 1 + 2_000 * Self.ms)
        #expect(sender.tick(now: 2_000 * Self.ms) == [])
        let handing = sender.tick(now: 1 + 2_000 * Self.ms)
        #expect(handing.count == 1_000 && handing.allSatisfy { if case .handOver = $0 { true } else { false } })
        var last: [Sender.Action] = []
        for socket in 0..<1_000 { last = sender.handedOver(socket, ok: true, now: 2 + 2_000 * Self.ms) }
        #expect(last == [.send(.done(connections: 1_000)), .finished(moved: 1_000, closed: 0)])
    }

    /// Waiting sockets free their place; one handed over after its reply takes one again.
    @Test func aSocketWaitingForRepliesHoldsNoPlaceInTheWindow() {
        var sender = offered([(1, 1), (2, 0), (3, 0)])
        #expect(sender.readyAndSeeded(now: 0) == [.stopReading(1), .stopReading(2)])
        #expect(sender.stopped(1, now: 1) == [.stopReading(3)], "1 waits: 3 takes its place")
        #expect(sender.stopped(2, now: 2) == [.handOver(2)])
        #expect(sender.stopped(3, now: 2) == [.handOver(3)])
        #expect(sender.replied(1, now: 3) == [.handOver(1)])
        _ = sender.handedOver(2, ok: true, now: 4)
        _ = sender.handedOver(3, ok: true, now: 4)
        #expect(sender.gone(1, now: 5) == [.send(.done(connections: 2)), .finished(moved: 2, closed: 0)])
    }

    @Test func nothingToMoveFinishesAtOnce() {
        var sender = offered([])
        #expect(sender.readyAndSeeded(now: 0) == [.send(.done(connections: 0)), .finished(moved: 0, closed: 0)])
    }

    @Test func theReceiverSaysSeededOnceEveryLoopHasTheKeys() {
        var receiver = HandoverReceiver(timeout: 1_000, now: 0)
        _ = receiver.received(.success(.offer(rooms: ["a"], connections: 1)), now: 1)
        _ = receiver.roomReady("a", now: 2)
        _ = receiver.bufferingBegan(now: 3)
        let keys: [EventKey] = [.message(id: "m1", change: .created), .session(id: "s1", change: .left)]
        #expect(receiver.received(.success(.delivered(keys: keys)), now: 4) == [.seed(keys)], "not seeded before the loops have them")
        #expect(receiver.keysSeeded(now: 5) == [.send(.seeded)])
        #expect(receiver.received(.success(.connection(Self.connection)), now: 6) == [.adopt(Self.connection)])

        var early = HandoverReceiver(timeout: 1_000, now: 0)
        #expect(early.keysSeeded(now: 1) == [], "nothing to say before adopting")
    }

    static let connection = HandoverConnection(
        frontendID: "old", number: 1, identityJSON: [], expiresMicros: 0, roomID: "a", sessionJSON: [], idleMillis: 0,
        pinged: false, eventTokens: nil, written: [], logTruncated: false, unread: []
    )

    @Test func theReceiverSubscribesBeforeItSaysReady() {
        var receiver = HandoverReceiver(timeout: 1_000, now: 0)
        #expect(receiver.received(.success(.offer(rooms: ["b", "a", "b"], connections: 3)), now: 1) == [.subscribe(["a", "b"])])
        #expect(receiver.roomReady("a", now: 2) == [])
        // In force, but buffering begins only past a barrier after the offer (a room held already is in force at once).
        #expect(receiver.roomReady("b", now: 3) == [.beginBuffering])
        #expect(receiver.received(.success(.connection(Self.connection)), now: 3) != [.adopt(Self.connection)], "nothing before ready")
    }

    @Test func theReceiverSaysReadyOnlyOnceBufferingBeganPastTheBarrier() {
        var receiver = HandoverReceiver(timeout: 1_000, now: 0)
        _ = receiver.received(.success(.offer(rooms: ["a", "b"], connections: 3)), now: 1)
        _ = receiver.roomReady("a", now: 2)
        #expect(receiver.roomReady("b", now: 3) == [.beginBuffering])
        #expect(receiver.bufferingBegan(now: 4) == [.send(.ready)])
        #expect(receiver.bufferingBegan(now: 4) == [], "once")
        #expect(receiver.received(.success(.connection(Self.connection)), now: 4) == [.adopt(Self.connection)])
        #expect(receiver.received(.success(.done(connections: 1)), now: 5) == [.release(["a", "b"]), .finished(adopted: 1, refused: nil)])
    }

    @Test func theReceiverRefusesAnotherVersionBeforeAnything() {
        var receiver = HandoverReceiver(timeout: 1_000, now: 0)
        let actions = receiver.received(.failure(.version(2)), now: 1)
        #expect(actions.first == .send(.refuse(reason: "state version 2; this frontend reads \(HandoverMessage.version)")))
        #expect(!actions.contains { if case .subscribe = $0 { true } else { false } })
        #expect(receiver.received(.success(.connection(Self.connection)), now: 2) == [], "nothing is adopted once refused")
    }

    @Test func theReceiverGivesUpOnSlowRoomsAndReleasesThem() {
        var receiver = HandoverReceiver(timeout: 1_000, now: 0)
        _ = receiver.received(.success(.offer(rooms: ["a"], connections: 1)), now: 10)
        #expect(receiver.nextWakeup == 1_010)
        #expect(receiver.tick(now: 1_009) == [])
        let actions = receiver.tick(now: 1_010)
        #expect(actions.contains(.release(["a"])) && actions.first == .send(.refuse(reason: "the rooms were not subscribed in time")))

        var failing = HandoverReceiver(timeout: 1_000, now: 0)
        _ = failing.received(.success(.offer(rooms: ["a"], connections: 1)), now: 10)
        #expect(failing.roomFailed("a", now: 11).contains(.release(["a"])))
        #expect(failing.roomReady("a", now: 12) == [])
    }

    @Test func aBarrierThatDoesNotPassRefusesAndReleasesTheRooms() {
        var failing = HandoverReceiver(timeout: 1_000, now: 0)
        _ = failing.received(.success(.offer(rooms: ["a"], connections: 1)), now: 10)
        _ = failing.roomReady("a", now: 11)
        #expect(failing.bufferingFailed(now: 12) == [
            .send(.refuse(reason: "the buffering barrier did not pass")), .release(["a"]),
            .finished(adopted: 0, refused: "the buffering barrier did not pass"),
        ])
        #expect(failing.bufferingBegan(now: 13) == [])

        var slow = HandoverReceiver(timeout: 1_000, now: 0)
        _ = slow.received(.success(.offer(rooms: ["a"], connections: 1)), now: 10)
        _ = slow.roomReady("a", now: 11)
        #expect(slow.nextWakeup == 1_010)
        #expect(slow.tick(now: 1_010).first == .send(.refuse(reason: "the buffering barrier did not pass in time")))
    }

    @Test func theReceiverEndsWhenTheOldDies() {
        var adopting = HandoverReceiver(timeout: 1_000, now: 0)
        _ = adopting.received(.success(.offer(rooms: ["a"], connections: 1)), now: 0)
        _ = adopting.roomReady("a", now: 0)
        _ = adopting.bufferingBegan(now: 0)
        _ = adopting.received(.success(.connection(Self.connection)), now: 1)
        #expect(adopting.peerGone(now: 2) == [.release(["a"]), .finished(adopted: 1, refused: nil)])

        var waiting = HandoverReceiver(timeout: 1_000, now: 0)
        #expect(waiting.peerGone(now: 1).last == .finished(adopted: 0, refused: "the old frontend is gone"))
    }
}


extension HandoverSender {
    /// `ready`, the delivered keys sent, then `seeded`: what the stops follow.
    mutating func readyAndSeeded(now: UInt64) -> [Action] {
        #expect(received(.ready, now: now) == [.sendDelivered])
        return received(.seeded, now: now)
    }
}
