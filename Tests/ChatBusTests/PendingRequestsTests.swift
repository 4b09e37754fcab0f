import ChatBus
import ChatWire
import Testing

@Suite struct PendingRequestsTests {
    let policy = RetryPolicy(retryInterval: 100, deadline: 350)

    @Test func replyCompletesOnce() {
        var pending = PendingRequests<String>(policy: policy)
        pending.add(id: "a", payload: "A", now: 0)
        #expect(pending.complete(id: "a") == "A")
        // A second reply (to a resend) is dropped.
        #expect(pending.complete(id: "a") == nil)
        #expect(pending.count == 0)
        #expect(pending.nextWakeup == nil)
    }

    @Test func resendsUntilTheDeadlineThenFails() {
        var pending = PendingRequests<String>(policy: policy)
        pending.add(id: "a", payload: "A", now: 0)
        #expect(pending.nextWakeup == 100)
        #expect(pending.tick(now: 50).isEmpty)
        var resends: [Int] = []
        var failed = false
        for now in stride(from: UInt64(100), through: 400, by: 50) {
            for action in pending.tick(now: now) {
                switch action {
                case .resend(_, _, let attempt): resends.append(attempt)
                case .fail(let id, let payload):
                    #expect(id == "a" && payload == "A")
                    failed = true
                }
            }
        }
        #expect(resends == [2, 3, 4])
        #expect(failed)
        #expect(pending.count == 0)
    }

    /// The bus thread ticks at every wake-up: before the earliest retry a
    /// tick has nothing to do. An answered command may leave its retry time
    /// as the next wake-up; that tick finds nothing due and sets the next
    /// wake-up from what is still pending.
    @Test func anAnsweredCommandOnlyMakesTheNextWakeupEarly() {
        var pending = PendingRequests<String>(policy: policy)
        pending.add(id: "a", payload: "A", now: 0)
        pending.add(id: "b", payload: "B", now: 50)
        #expect(pending.tick(now: 99).isEmpty)
        #expect(pending.complete(id: "a") == "A")
        #expect(pending.nextWakeup.map { $0 <= 150 } == true)
        #expect(pending.tick(now: 100).isEmpty)
        #expect(pending.nextWakeup == 150)
        let due = pending.tick(now: 150)
        #expect(due.count == 1)
        if case .resend(let id, let payload, let attempt) = due.first {
            #expect(id == "b" && payload == "B" && attempt == 2)
        } else {
            Issue.record("expected a resend of b")
        }
        #expect(pending.nextWakeup == 250)
    }

    /// Many pending, a few due: only those are resent, each once.
    @Test func onlyTheDueAmongManyAreResent() {
        var pending = PendingRequests<String>(policy: policy)
        for n in 0..<1_000 { pending.add(id: "c\(n)", payload: "\(n)", now: UInt64(n % 10 == 0 ? 0 : 80)) }
        let ids = pending.tick(now: 100).compactMap { action -> String? in
            if case .resend(let id, _, _) = action { return id } else { return nil }
        }
        #expect(ids.sorted() == (0..<100).map { "c\($0 * 10)" }.sorted())
        #expect(pending.count == 1_000 && pending.nextWakeup == 180)
        #expect(pending.tick(now: 150).isEmpty)
    }

    @Test func replyAfterResendStopsFurtherResends() {
        var pending = PendingRequests<String>(policy: policy)
        pending.add(id: "a", payload: "A", now: 0)
        pending.add(id: "b", payload: "B", now: 60)
        let first = pending.tick(now: 100)
        #expect(first.count == 1)
        #expect(pending.complete(id: "a") == "A")
        let second = pending.tick(now: 200)
        #expect(second.count == 1)
        if case .resend(let id, _, _) = second.first { #expect(id == "b") } else { Issue.record("expected a resend of b") }
    }

    @Test func aCommandThatWaitedBeforeSendingKeepsItsDeadline() {
        // Held back during a shard switch: sent at 300, due to fail at 350.
        var pending = PendingRequests<String>(policy: policy)
        pending.add(id: "a", payload: "A", now: 300, deadline: 350)
        #expect(pending.nextWakeup == 350)
        let actions = pending.tick(now: 350)
        if case .fail(let id, _) = actions.first { #expect(id == "a") } else { Issue.record("expected a failure at the original deadline") }
    }

    @Test func removeAllReturnsEverything() {
        var pending = PendingRequests<Int>(policy: policy)
        for i in 0..<5 { pending.add(id: "\(i)", payload: i, now: 0) }
        #expect(pending.removeAll().sorted() == [0, 1, 2, 3, 4])
        #expect(pending.count == 0)
    }
}

@Suite struct StreamSequencerTests {
    func command(_ seq: UInt64, floor: UInt64, origin: String = "fe") -> Command {
        Command(kind: .messageCreate, requestID: "r\(seq)", origin: origin, user: [], body: [], stream: (seq, floor))
    }

    func seqs(_ commands: [Command]) -> [UInt64] { commands.compactMap { $0.stream?.seq } }

    @Test func inOrderPassesStraightThrough() {
        var sequencer = StreamSequencer()
        for seq in UInt64(1)...5 { #expect(seqs(sequencer.accept(command(seq, floor: 1), now: 0)) == [seq]) }
        #expect(sequencer.heldCount == 0)
    }

    @Test func aResentEarlierCommandGoesBeforeLaterOnes() {
        // A fresh worker: 2 died with the old one; 3 and 4 arrive first, 2 is resent.
        var sequencer = StreamSequencer()
        #expect(seqs(sequencer.accept(command(3, floor: 2), now: 0)).isEmpty)
        #expect(seqs(sequencer.accept(command(4, floor: 2), now: 0)).isEmpty)
        #expect(seqs(sequencer.accept(command(2, floor: 2), now: 0)) == [2, 3, 4])
        #expect(seqs(sequencer.accept(command(5, floor: 5), now: 0)) == [5])
    }

    @Test func resendsOfHandledCommandsPassAtOnce() {
        var sequencer = StreamSequencer()
        _ = sequencer.accept(command(1, floor: 1), now: 0)
        _ = sequencer.accept(command(2, floor: 1), now: 0)
        #expect(seqs(sequencer.accept(command(1, floor: 1), now: 0)) == [1])
    }

    @Test func aGapTheFrontendGaveUpOnIsSkipped() {
        var sequencer = StreamSequencer()
        _ = sequencer.accept(command(1, floor: 1), now: 0)
        #expect(seqs(sequencer.accept(command(3, floor: 2), now: 0)).isEmpty)
        // 2 timed out at the frontend: its floor moves past it, 3 is released.
        #expect(seqs(sequencer.accept(command(3, floor: 3), now: 0)) == [3])
        #expect(sequencer.heldCount == 0)
    }

    @Test func aFloorRaisedByALaterCommandReleasesTheHeldOnes() {
        // 7 waits for 5 (a poison command the frontend then failed); 8 comes
        // with the floor past 5 and 6: 7 and 8 go, in order, at once.
        var sequencer = StreamSequencer()
        #expect(seqs(sequencer.accept(command(7, floor: 5), now: 0)).isEmpty)
        #expect(seqs(sequencer.accept(command(8, floor: 7), now: 0)) == [7, 8])
        #expect(sequencer.heldCount == 0)
    }

    @Test func streamsAreIndependentAndUnsequencedCommandsPass() {
        var sequencer = StreamSequencer()
        #expect(seqs(sequencer.accept(command(7, floor: 6, origin: "a"), now: 0)).isEmpty)
        #expect(seqs(sequencer.accept(command(1, floor: 1, origin: "b"), now: 0)) == [1])
        let plain = Command(kind: .roomGet, requestID: "x", origin: "a", user: [], body: [])
        #expect(sequencer.accept(plain, now: 0).count == 1)
        sequencer.forget(silentSince: 1)
        #expect(sequencer.heldCount == 0)
    }

    @Test func holdingIsBounded() {
        var sequencer = StreamSequencer(maxHeld: 3)
        for seq in UInt64(2)...4 { #expect(sequencer.accept(command(seq, floor: 1), now: 0).isEmpty) }
        #expect(seqs(sequencer.accept(command(5, floor: 1), now: 0)) == [2, 3, 4, 5])
    }
}

@Suite struct PoisonCommandTests {
    let policy = RetryPolicy(retryInterval: 100, deadline: 10_000)

    @Test func aCommandPendingAtTwoDeathsIsPoisonAndNeverResentAgain() {
        var pending = PendingRequests<String>(policy: policy)
        pending.add(id: "a", payload: "store-0", now: 0)
        // First death: resent once, to the replacement.
        let first = pending.workerReplaced(now: 10) { $0 == "store-0" }
        #expect(first.resend.map(\.id) == ["a"])
        #expect(first.poisoned.isEmpty)
        // The timer no longer resends a suspect: only the deadline is left.
        #expect(pending.tick(now: 500).isEmpty)
        #expect(pending.nextWakeup == 10_000)
        // Second death: given up, removed, nothing left to resend.
        let second = pending.workerReplaced(now: 600) { $0 == "store-0" }
        #expect(second.resend.isEmpty)
        #expect(second.poisoned.map(\.id) == ["a"])
        #expect(second.poisoned.map(\.payload) == ["store-0"])
        #expect(!pending.contains(id: "a"))
        #expect(pending.count == 0)
        // A late reply to an earlier copy is dropped.
        #expect(pending.complete(id: "a") == nil)
    }

    @Test func deathsOfOtherQueuesDoNotCount() {
        var pending = PendingRequests<String>(policy: policy)
        pending.add(id: "a", payload: "store-0", now: 0)
        pending.add(id: "b", payload: "store-1", now: 0)
        let first = pending.workerReplaced(now: 10) { $0 == "store-1" }
        #expect(first.resend.map(\.id) == ["b"])
        let second = pending.workerReplaced(now: 20) { $0 == "store-0" }
        #expect(second.resend.map(\.id) == ["a"])
        #expect(second.poisoned.isEmpty)
        #expect(pending.count == 2)
    }

    @Test func aCommandAnsweredAfterOneDeathIsNotPoison() {
        var pending = PendingRequests<String>(policy: policy)
        pending.add(id: "a", payload: "q", now: 0)
        _ = pending.workerReplaced(now: 10) { _ in true }
        #expect(pending.complete(id: "a") == "q")
        pending.add(id: "b", payload: "q", now: 20)
        // b was not pending at the first death: this is its first.
        let second = pending.workerReplaced(now: 30) { _ in true }
        #expect(second.resend.map(\.id) == ["b"])
        #expect(second.poisoned.isEmpty)
    }

    @Test func aSuspectStillFailsAtItsDeadline() {
        var pending = PendingRequests<String>(policy: policy)
        pending.add(id: "a", payload: "q", now: 0)
        _ = pending.workerReplaced(now: 10) { _ in true }
        let actions = pending.tick(now: 10_000)
        if case .fail(let id, _) = actions.first { #expect(id == "a") } else { Issue.record("expected a failure at the deadline") }
    }

    /// A suspect's copy may be what kills workers: copies on the timer
    /// would pile up in the broker while the worker is down, each waiting
    /// to kill the next replacement. Only a replacement sends it again.
    @Test func aSuspectIsNotResentByTheTimer() {
        var pending = PendingRequests<String>(policy: policy)
        pending.add(id: "a", payload: "q", now: 0)
        pending.add(id: "b", payload: "q", now: 0)
        _ = pending.workerReplaced(now: 10) { $0 == "q" }
        _ = pending.complete(id: "b")
        pending.add(id: "c", payload: "r", now: 10)
        var resent: [String] = []
        for now in stride(from: UInt64(100), to: 9_999, by: 100) {
            for case .resend(let id, _, _) in pending.tick(now: now) { resent.append(id) }
        }
        #expect(!resent.contains("a"))
        // Answered before the timer came: never resent.
        #expect(!resent.contains("b"))
        #expect(resent.contains("c"))
    }

    @Test func theThresholdIsThePolicys() {
        var pending = PendingRequests<String>(policy: RetryPolicy(retryInterval: 100, deadline: 10_000, poisonDeaths: 3))
        pending.add(id: "a", payload: "q", now: 0)
        #expect(pending.workerReplaced(now: 1) { _ in true }.poisoned.isEmpty)
        #expect(pending.workerReplaced(now: 2) { _ in true }.poisoned.isEmpty)
        #expect(pending.workerReplaced(now: 3) { _ in true }.poisoned.map(\.id) == ["a"])
    }
}

@Suite struct ExternalKillTests {
    /// A kill from outside after a crash resends the suspect to the new
    /// worker, but does not put it back on the timer (review, issue 11).
    @Test func aSuspectStaysOffTheTimerAfterAnExternalKill() {
        var pending = PendingRequests<String>(policy: RetryPolicy(retryInterval: 100, deadline: 10_000))
        pending.add(id: "a", payload: "q", now: 0)
        _ = pending.workerReplaced(now: 10) { _ in true }
        #expect(pending.resendNow(now: 20) { _ in true }.map(\.id) == ["a"])
        #expect(pending.nextWakeup == 10_000)
        for now in stride(from: UInt64(100), to: 9_999, by: 100) { #expect(pending.tick(now: now).isEmpty) }
    }

    @Test func resendNowCountsNoDeath() {
        var pending = PendingRequests<String>(policy: RetryPolicy(retryInterval: 100, deadline: 10_000))
        pending.add(id: "a", payload: "q", now: 0)
        // Killed from outside, twice: resent each time, never poison.
        #expect(pending.resendNow(now: 10) { _ in true }.map(\.id) == ["a"])
        #expect(pending.resendNow(now: 20) { _ in true }.map(\.id) == ["a"])
        // Then one crash: the first death that counts.
        let crash = pending.workerReplaced(now: 30) { _ in true }
        #expect(crash.resend.map(\.id) == ["a"] && crash.poisoned.isEmpty)
    }
}
