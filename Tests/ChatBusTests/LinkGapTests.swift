import ChatBus
import ChatWire
import Testing

/// A worker's link to this frontend's broker drops while both processes
/// live (docs/protocol.md, "Several frontend hosts"): its heartbeats come
/// back under the same pid with another link generation.
@Suite struct LinkGapTests {
    @Test func anotherGenerationUnderTheSamePidIsAGapAndResendsAtOnce() {
        let bus = Bus(shards: 2)
        bus.heartbeat(store0, pid: 100)
        bus.send("a", room: "r")
        let queue = bus.link.sent[0].queue
        let worker = WorkerName(.store, queue == "store-0" ? 0 : 1)
        bus.heartbeat(worker, pid: 100)
        for _ in 0..<3 { bus.heartbeat(worker, pid: 100) }
        #expect(bus.gaps.isEmpty && bus.link.sent.count == 1, "the same generation again is no gap")

        bus.advance(ms: 100)
        bus.heartbeat(worker, pid: 100, link: 1)
        #expect(bus.gaps == [LinkGap(worker: worker, shardCounts: [2])])
        #expect(bus.link.ids(to: queue) == ["a", "a"], "what the dropped connection held is resent now, not at the timeout")
        #expect(bus.facts.contains(.linkRestored(worker: worker, generation: 1, resent: 1)))
        // Heard again with that generation: nothing more.
        for _ in 0..<5 { bus.heartbeat(worker, pid: 100, link: 1) }
        #expect(bus.gaps.count == 1 && bus.link.sent.count == 2)
        // No death counted: the command is still answered normally.
        bus.reply("a")
        #expect(bus.status("a") == .ok && bus.answerCount("a") == 1)
        bus.heartbeat(worker, pid: 100, link: 2)
        #expect(bus.gaps.count == 2)
    }

    /// Resent in the stream's order, whatever the pending table's order: a
    /// resend below the worker's expected position runs at once, and two
    /// edits of one message run out of order would store the older content.
    @Test func aGapResendsInStreamOrder() {
        let bus = Bus()
        bus.heartbeat(store0, pid: 100)
        let ids = (0..<40).map { "c\($0)" }
        for id in ids { bus.send(id) }
        bus.heartbeat(store0, pid: 100, link: 1)
        #expect(Array(bus.link.ids(to: "store-0").dropFirst(ids.count)) == ids)
        bus.heartbeat(store0, pid: 200)
        #expect(Array(bus.link.ids(to: "store-0").dropFirst(2 * ids.count)) == ids, "a replacement's resends too")
        // And the retry timer's.
        let timed = Bus()
        timed.heartbeat(store0, pid: 100)
        for id in ids { timed.send(id) }
        timed.advance(ms: 800)
        #expect(Array(timed.link.ids(to: "store-0").dropFirst(ids.count)) == ids)
    }

    /// A frontend that starts while a link is at generation 3 has missed
    /// nothing of it; a new pid is a replacement (resent as before), not a gap.
    @Test func aFirstHeardGenerationOrANewPidIsNoGap() {
        let bus = Bus()
        bus.heartbeat(store0, pid: 100, link: 3)
        bus.send("a")
        bus.heartbeat(store0, pid: 200, link: 0)
        #expect(bus.gaps.isEmpty)
        #expect(bus.link.ids(to: "store-0") == ["a", "a"])
        // The old pid, still finishing its batch, with its own generation.
        bus.heartbeat(store0, pid: 100, link: 3)
        #expect(bus.gaps.isEmpty)
    }

    @Test func storeGapsAffectTheirShardsRoomsOnly() {
        let rooms = (0..<40).map { "room-\($0)" }
        let gap = LinkGap(worker: WorkerName(.store, 1), shardCounts: [3])
        for room in rooms { #expect(gap.affects(room: room) == (Shard.of(room, count: 3) == 1), "\(room)") }
        #expect(rooms.contains { gap.affects(room: $0) } && rooms.contains { !gap.affects(room: $0) })
        // While the count changes, a room of the shard under either count.
        let changing = LinkGap(worker: WorkerName(.store, 1), shardCounts: [3, 4])
        for room in rooms { #expect(changing.affects(room: room) == (Shard.of(room, count: 3) == 1 || Shard.of(room, count: 4) == 1)) }
        // The receipts worker's events are not in history: nothing to resume.
        #expect(!rooms.contains { LinkGap(worker: receipts0, shardCounts: [3]).affects(room: $0) })
    }
}
