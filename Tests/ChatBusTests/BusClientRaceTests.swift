import ChatBus
import ChatWire
import Testing

/// The races the end-to-end tests stage with processes and sleeps, driven
/// through the bus client's machine one input at a time.
@Suite struct WorkerDeathRaceTests {
    /// A `file.chunk` or `file.read` carries up to 256 KiB: a stalled (not
    /// dead) files worker must not get a copy of each unanswered one every
    /// retry interval, piling up in the broker. Only a replacement (a new
    /// pid in the heartbeat) gets them again, once; unanswered by the
    /// deadline they fail (503), as any command. A small command on the
    /// same queue is still resent on the timer.
    @Test func fileChunksAndReadsAreResentOnlyToAReplacement() {
        let bus = Bus()
        let files0 = WorkerName(.files, 0)
        bus.heartbeat(files0, pid: 100)
        bus.send("chunk", .fileChunk)
        bus.send("read", .fileRead)
        bus.send("open", .fileOpen)
        for _ in 0..<8 { bus.advance(ms: 750) }
        #expect(bus.link.ids(to: "files").filter { $0 != "open" } == ["chunk", "read"], "resent on the timer to a stalled worker")
        #expect(bus.link.ids(to: "files").filter { $0 == "open" }.count > 1, "a small command is still resent on the timer")
        bus.heartbeat(files0, pid: 200)
        #expect(bus.link.ids(to: "files").filter { $0 != "open" }.sorted() == ["chunk", "chunk", "read", "read"])
        bus.advance(ms: 750)
        bus.advance(ms: 750)
        #expect(bus.link.ids(to: "files").filter { $0 != "open" }.count == 4, "the replacement's copies are not on the timer either")
        bus.reply("chunk", .fileChunk)
        #expect(bus.status("chunk") == .ok)
        bus.advance(ms: 10_000)
        #expect(bus.timedOut("read"))
        #expect(bus.link.ids(to: "files").filter { $0 != "open" }.count == 4)
    }

    @Test func aKilledWorkersCommandsGoToItsReplacementAtOnceInTheirPlaceInTheStream() {
        let bus = Bus()
        bus.heartbeat(store0, pid: 100)
        bus.send("a")
        bus.send("b")
        #expect(bus.link.ids(to: "store-0") == ["a", "b"])
        bus.reply("a")
        bus.advance(ms: 100)
        // Killed from outside (SIGKILL): the replacement's first heartbeat.
        bus.heartbeat(store0, pid: 200)
        #expect(bus.link.ids(to: "store-0") == ["a", "b", "b"])
        // Its place in the stream, and a floor above what was answered.
        let stream = bus.link.sent.last?.command.stream
        #expect(stream?.seq == 2 && stream?.floor == 2)
        // The replacement heartbeats on (25 ms apart at first): once is enough.
        for _ in 0..<10 { bus.heartbeat(store0, pid: 200) }
        #expect(bus.link.sent.count == 3)
        bus.reply("b")
        #expect(bus.status("b") == .ok && bus.answerCount("b") == 1)
        bus.advance(ms: 5_000)
        #expect(bus.link.sent.count == 3)
        #expect(bus.machine.outstanding["store-0"] == 0)
    }

    @Test func aCommandInFlightAtTwoCrashesIsAnsweredAsPoisonAndNeverSentAgain() throws {
        let bus = Bus()
        bus.heartbeat(store0, pid: 100)
        bus.send("poison")
        bus.advance(ms: 100)
        bus.heartbeat(store0, pid: 101, failed: true)
        #expect(bus.link.ids(to: "store-0") == ["poison", "poison"])
        #expect(bus.answer("poison") == nil)
        bus.advance(ms: 300)
        // The replacement took it and crashed at once: no heartbeat since.
        bus.heartbeat(store0, pid: 102, failed: true)
        #expect(bus.status("poison") == .internal)
        if case .success(let reply)? = bus.answer("poison") { #expect(try reply.replyError() == .poisonCommand) }
        bus.advance(ms: 20_000)
        #expect(bus.answerCount("poison") == 1)
        #expect(bus.link.ids(to: "store-0").count == 2)
        #expect(bus.machine.outstanding["store-0"] == 0)
        #expect(bus.facts.contains(.poison(requestID: "poison", kind: .messageCreate, worker: store0)))
    }

    /// A worker that takes a copy and dies slowly: the copy is never resent
    /// by the timer while the replacement lives, so it kills no third
    /// process; the next replacement gives it up (two crashes).
    @Test func aSuspectIsResentOnlyToReplacements() {
        let bus = Bus()
        bus.heartbeat(store0, pid: 100)
        bus.send("a")
        bus.advance(ms: 100)
        bus.heartbeat(store0, pid: 101, failed: true)
        #expect(bus.link.ids(to: "store-0").count == 2)
        for _ in 0..<6 {
            bus.advance(ms: 750)
            bus.heartbeat(store0, pid: 101)
        }
        #expect(bus.link.ids(to: "store-0").count == 2)
        #expect(bus.answer("a") == nil)
        bus.heartbeat(store0, pid: 102, failed: true)
        #expect(bus.status("a") == .internal)
        #expect(bus.link.ids(to: "store-0").count == 2)
    }

    /// Review finding: two processes heartbeating under one name (a quick
    /// scale down and up, an old process finishing its batch) looked like a
    /// replacement at every turn: endless resends, and deaths counted twice.
    @Test func twoProcessesUnderOneNameAreNotAReplacementAtEachTurn() {
        let bus = Bus()
        bus.heartbeat(store0, pid: 100)
        bus.send("a")
        bus.heartbeat(store0, pid: 200, failed: true)
        #expect(bus.link.ids(to: "store-0").count == 2)
        for _ in 0..<5 {
            bus.heartbeat(store0, pid: 100)
            bus.heartbeat(store0, pid: 200, failed: true)
        }
        #expect(bus.link.ids(to: "store-0").count == 2)
        #expect(bus.answer("a") == nil)
    }

    /// Review finding (issue 11): with `ctl scale receipts 2`, not counting
    /// a crash while another replica lived let a poison command crash the
    /// replicas in turn until its deadline. Every crash of the queue counts.
    @Test func aPoisonCommandOnASharedQueueIsGivenUpAfterTwoCrashes() {
        let bus = Bus()
        bus.heartbeat(receipts0, pid: 10)
        bus.heartbeat(receipts1, pid: 20)
        bus.send("s", .sessionOpen)
        // It kills receipts.1, then (round robin) receipts.0.
        bus.advance(ms: 100)
        bus.heartbeat(receipts1, pid: 21, failed: true)
        bus.heartbeat(receipts0, pid: 10)
        #expect(bus.answer("s") == nil)
        bus.advance(ms: 100)
        bus.heartbeat(receipts0, pid: 11, failed: true)
        #expect(bus.status("s") == .internal)
        #expect(bus.link.ids(to: "receipts") == ["s", "s"])
        for _ in 0..<10 {
            bus.advance(ms: 750)
            bus.heartbeat(receipts0, pid: 11)
            bus.heartbeat(receipts1, pid: 21)
        }
        #expect(bus.link.ids(to: "receipts") == ["s", "s"])
    }
}

@Suite struct ReshardRaceTests {
    /// Rooms that land on each shard of two.
    static let rooms = (0..<40).map { "room-\($0)" }

    @Test func storeCommandsHeldDuringAShardChangeWaitForTheLastAnswerThenLeaveInOrder() {
        let bus = Bus(shards: 1)
        bus.send("a", room: "room-0")
        bus.receive(ShardCount(2).event)
        #expect(bus.machine.resharding == 2)
        for index in 0..<8 { bus.send("h\(index)", room: Self.rooms[index]) }
        // Other roles are not held.
        bus.send("t", .typingSet)
        #expect(bus.link.ids(to: "receipts") == ["t"])
        #expect(bus.link.ids(to: "store-0") == ["a"])
        #expect(bus.link.ids(to: "store-1").isEmpty)
        bus.advance(ms: 10)
        #expect(bus.machine.outstanding["held"] == 8)
        // The broker repeats the count; "a" is still unanswered.
        bus.receive(ShardCount(2).event)
        bus.advance(ms: 500)
        #expect(bus.machine.resharding == 2)
        #expect(bus.link.sent.count == 2)
        bus.reply("a")
        bus.advance(ms: 1)
        #expect(bus.machine.shards == 2 && bus.machine.resharding == nil)
        let released = bus.link.sent.dropFirst(2)
        #expect(released.map(\.command.requestID) == (0..<8).map { "h\($0)" })
        for (index, outbound) in released.enumerated() {
            #expect(outbound.queue == Endpoints.queue(.store, shard: Shard.of(Self.rooms[index], count: 2)))
        }
        // Each shard's stream goes on in order: shard 0 after "a", shard 1 from 1.
        let zero = released.filter { $0.queue == "store-0" }.compactMap { $0.command.stream?.seq }
        let one = released.filter { $0.queue == "store-1" }.compactMap { $0.command.stream?.seq }
        #expect(!zero.isEmpty && !one.isEmpty)
        #expect(zero == Array(2..<UInt64(2 + zero.count)))
        #expect(one == Array(1..<UInt64(1 + one.count)))
        #expect(bus.machine.outstanding["held"] == nil)
    }

    /// The change waits for the last unanswered store command, but not
    /// past that command's deadline; what was held then goes out.
    @Test func anUnansweredCommandAtItsDeadlineLetsTheChangeGoAhead() {
        let bus = Bus(shards: 1)
        bus.send("a")
        bus.receive(ShardCount(3).event)
        bus.advance(ms: 1_000)
        bus.send("h")
        bus.advance(ms: 9_000)
        // "a" reached its deadline unanswered: the change goes ahead.
        #expect(bus.timedOut("a"))
        #expect(bus.machine.shards == 3)
        #expect(bus.link.ids(to: "store-0").first == "a")
        #expect(bus.answer("h") == nil)
        bus.reply("h")
        #expect(bus.status("h") == .ok)
    }

    @Test func heldPastItsDeadlineFailsAsATimeout() {
        let bus = Bus(shards: 1)
        bus.send("a")
        bus.receive(ShardCount(2).event)
        bus.send("h")
        // Both reach their deadline in the same tick ("a" unanswered holds
        // the change until then): the held one fails as a timeout, never sent.
        bus.advance(ms: 10_000)
        #expect(bus.timedOut("h"))
        #expect(bus.link.sent.allSatisfy { $0.command.requestID == "a" })
    }
}

@Suite struct FullQueueRaceTests {
    @Test func aFullQueueHoldsCommandsInOrderAndSendsThemWhenItHasRoom() {
        let bus = Bus()
        bus.send("r0", .receiptMessage)
        bus.link.refusing = ["receipts"]
        for index in 1...3 { bus.send("r\(index)", .receiptMessage) }
        #expect(bus.machine.fullQueues == ["receipts"])
        #expect(bus.facts.contains(.queueFull(queue: "receipts")))
        // Only the first was tried: nothing overtakes a held command.
        #expect(bus.link.ids(to: "receipts") == ["r0"])
        // Other queues go on.
        bus.send("m")
        #expect(bus.link.ids(to: "store-0") == ["m"])
        bus.reply("m")
        // Resends join the line once; a held command's resend is not a second copy.
        bus.advance(ms: 800)
        bus.link.refusing = []
        bus.writable("receipts")
        #expect(bus.link.ids(to: "receipts") == ["r0", "r1", "r2", "r3", "r0"])
        #expect(bus.machine.fullQueues.isEmpty)
        #expect(bus.facts.contains(.queueHasRoom(queue: "receipts", heldNanos: 800 * Bus.ms)))
    }

    @Test func drainingStopsAtTheFirstRefusalAndKeepsTheRestInOrder() {
        let bus = Bus()
        bus.link.refusing = ["receipts"]
        for index in 0..<4 { bus.send("r\(index)", .receiptMessage) }
        var room = 2
        var sent: [String] = []
        bus.take(bus.machine.writable(queue: "receipts", now: bus.now) { outbound in
            guard room > 0 else { return false }
            room -= 1
            sent.append(outbound.command.requestID)
            return true
        })
        #expect(sent == ["r0", "r1"])
        #expect(bus.machine.fullQueues == ["receipts"])
        bus.link.refusing = []
        bus.writable("receipts")
        #expect(bus.link.ids(to: "receipts") == ["r2", "r3"])
    }

    @Test func commandsStillHeldAtTheirDeadlineFailAndLeaveTheLine() {
        let bus = Bus()
        bus.link.refusing = ["receipts"]
        bus.send("r0", .receiptMessage)
        bus.send("r1", .receiptMessage)
        bus.advance(ms: 10_000)
        #expect(bus.timedOut("r0") && bus.timedOut("r1"))
        #expect(bus.machine.fullQueues.isEmpty)
        #expect(bus.machine.outstanding["receipts"] == 0)
        bus.link.refusing = []
        bus.writable("receipts")
        #expect(bus.link.sent.isEmpty)
    }

    /// The delayed-events report: room events and replies are handed on in
    /// the input that brings them, whatever a full queue holds.
    @Test func roomEventsAndRepliesAreNeverHeldBehindAFullQueue() {
        let bus = Bus()
        bus.send("r0", .sessionOpen)
        bus.link.refusing = ["receipts"]
        bus.send("r1", .sessionClose)
        for index in 0..<100 {
            bus.send("m\(index)")
            bus.roomEvent("r", key: "m:\(index)")
            bus.reply("m\(index)")
            bus.advance(ms: 10)
        }
        bus.roomEvent("r", key: "s:1:joined")
        #expect(bus.delivered.map(\.key) == (0..<100).map { "m:\($0)" } + ["s:1:joined"])
        #expect((0..<100).allSatisfy { bus.status("m\($0)") == .ok })
    }
}

@Suite struct LateAnswerRaceTests {
    /// A reply published before the frontend's subscription reached the
    /// worker is lost (slow joiner): the resend brings another.
    @Test func aReplyLostToALateSubscriptionComesWithTheResend() {
        let bus = Bus()
        bus.send("a")
        bus.advance(ms: 750)
        #expect(bus.link.ids(to: "store-0") == ["a", "a"])
        bus.reply("a")
        bus.reply("a")
        #expect(bus.answerCount("a") == 1 && bus.status("a") == .ok)
    }

    @Test func aReplyAfterTheTimeoutIsDropped() {
        let bus = Bus()
        bus.send("a")
        bus.advance(ms: 10_000)
        #expect(bus.timedOut("a"))
        bus.reply("a")
        #expect(bus.answerCount("a") == 1)
        #expect(bus.machine.outstanding["store-0"] == 0)
    }
}

@Suite struct StopRaceTests {
    @Test func stoppingWaitsForAnswersUntilTheDrainDeadlineThenClosesTheRest() {
        let bus = Bus(shards: 1)
        bus.send("a")
        bus.send("b")
        bus.receive(ShardCount(2).event)
        bus.send("held")
        bus.machine.stop(drainUntil: bus.now + 1_000 * Bus.ms)
        #expect(!bus.machine.isFinished(now: bus.now))
        bus.reply("a")
        bus.advance(ms: 500)
        #expect(!bus.machine.isFinished(now: bus.now))
        bus.advance(ms: 500)
        #expect(bus.machine.isFinished(now: bus.now))
        bus.take(bus.machine.close())
        #expect(bus.status("a") == .ok)
        for id in ["b", "held"] {
            if case .failure(.closed)? = bus.answer(id) {} else { Issue.record("\(id): \(String(describing: bus.answer(id)))") }
        }
        #expect(bus.answers.count == 3)
    }

    @Test func stoppingEndsAsSoonAsNothingIsPending() {
        let bus = Bus()
        bus.send("a")
        bus.machine.stop(drainUntil: bus.now + 5_000 * Bus.ms)
        bus.reply("a")
        #expect(bus.machine.isFinished(now: bus.now))
        bus.take(bus.machine.close())
        #expect(bus.answers.count == 1)
    }
}
