import ChatWire
import Testing

@Suite struct WireTests {
    @Test func commandRoundTrip() throws {
        let command = Command(kind: .messageCreate, requestID: "r1", origin: "fe-1", user: Array(#"{"id":"u"}"#.utf8), body: Array("{}".utf8))
        #expect(try Command(frames: command.encode()) == command)
        var sequenced = command
        sequenced.stream = (42, 40)
        sequenced.deadline = 123_456_789
        let decoded = try Command(frames: sequenced.encode())
        #expect(decoded == sequenced)
        #expect(decoded.stream?.seq == 42 && decoded.stream?.floor == 40 && decoded.deadline == 123_456_789)
        var bad = sequenced.encode()
        bad[6] = Array("5/9".utf8)
        #expect(throws: WireError.self) { try Command(frames: bad) }
    }

    @Test func eventRoundTrip() throws {
        let event = Event(topic: Topic.room("abc"), kind: .roomEvent, key: "m1", status: .ok, body: [0, 1, 2])
        #expect(try Event(frames: event.encode()) == event)
        let reply = Event.reply(to: Command(kind: .roomGet, requestID: "9", origin: "fe-2", user: [], body: []), status: .forbidden, body: [])
        #expect(reply.topic == "reply.fe-2")
        #expect(try Event(frames: reply.encode()) == reply)
    }

    @Test func malformedFramesAreRejected() {
        let good = Command(kind: .roomGet, requestID: "1", origin: "fe", user: [], body: []).encode()
        #expect(throws: WireError.frameCount(7)) { try Command(frames: Array(good.dropLast())) }
        var badVersion = good
        badVersion[0] = Array("chat/0".utf8)
        #expect(throws: WireError.version("chat/0")) { try Command(frames: badVersion) }
        var badKind = good
        badKind[1] = Array("room.explode".utf8)
        #expect(throws: WireError.unknownKind("room.explode")) { try Command(frames: badKind) }
        var noID = good
        noID[2] = []
        #expect(throws: WireError.emptyField("requestID")) { try Command(frames: noID) }

        var event = Event(topic: "room.x", kind: .reply, key: "1", body: []).encode()
        event[4] = Array("teapot".utf8)
        #expect(throws: WireError.unknownStatus("teapot")) { try Event(frames: event) }
        #expect(throws: WireError.frameCount(0)) { try Event(frames: []) }
    }

    @Test func shardingIsStableAndSpreads() {
        #expect(Shard.of("room-1", count: 1) == 0)
        #expect(Shard.of("room-1", count: 4) == Shard.of("room-1", count: 4))
        let shards = Set((0..<100).map { Shard.of("room-\($0)", count: 4) })
        #expect(shards == [0, 1, 2, 3])
    }
}

@Suite struct IdleTrimTests {
    let second: UInt64 = 1_000_000_000

    @Test func trimsOnceWhenABurstEnds() {
        var trim = IdleTrim()
        var now: UInt64 = 10 * second
        let first = trim.observe(moved: 0, now: now)
        #expect(!first)
        // A burst: 10,000 messages a second for three seconds.
        var trims = 0
        for _ in 0..<30 {
            now += second / 10
            if trim.observe(moved: 1_000, now: now) { trims += 1 }
        }
        #expect(trims == 0)
        // Then heartbeats only (a few a second): one trim, then no more.
        for _ in 0..<50 {
            now += second / 10
            if trim.observe(moved: 1, now: now) { trims += 1 }
        }
        #expect(trims == 1)
    }

    @Test func heartbeatsAloneNeverTrim() {
        var trim = IdleTrim()
        var now: UInt64 = 0
        for _ in 0..<100 {
            now += second / 10
            let trimmed = trim.observe(moved: 2, now: now)
            #expect(!trimmed)
        }
    }
}
