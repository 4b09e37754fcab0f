import ChatWire
import Testing

@Suite struct HeartbeatTests {
    @Test func roundTrips() throws {
        for beat in [Heartbeat(worker: WorkerName(.store, 2), pid: 4242), Heartbeat(worker: WorkerName(.receipts, 1), pid: 7, failed: true),
                          Heartbeat(worker: WorkerName(.store, 0), pid: 5, link: 3), Heartbeat(worker: WorkerName(.store, 1), pid: 5, failed: true, link: 1)] {
            #expect(beat.topic == "hb.\(beat.worker)")
            #expect(Heartbeat(try Event(frames: beat.event.encode())) == beat)
        }
        #expect(Heartbeat(worker: WorkerName(.receipts, 1), pid: 7, failed: true).body == Array("receipts 1 7 failed".utf8))
        // Generation 0 is left out: a link that never dropped says what it always said.
        #expect(Heartbeat(worker: WorkerName(.store, 0), pid: 7, failed: true, link: 2).body == Array("store 0 7 failed link=2".utf8))
    }

    @Test func refusesWhatIsNotOne() {
        let good = Heartbeat(worker: WorkerName(.store, 0), pid: 9).event
        var cases: [Event] = []
        for body in ["store 0", "store 0 x", "store 1 9", "search 0 9", "store 0 9 crashed", "store 0 9 failed extra", "",
                     "store 0 9 link=0", "store 0 9 link=x", "store 0 9 link=-1", "store 0 9 link=2 failed", "store 0 9 link=1 link=2"] {
            var event = good
            event.body = Array(body.utf8)
            cases.append(event)
        }
        var topic = good
        topic.topic = "hb.frontend.0"
        var kind = good
        kind.kind = .roomEvent
        for event in cases + [topic, kind] { #expect(Heartbeat(event) == nil, "\(event)") }
    }

    @Test func shardCountRoundTripsAndRefusesNonsense() throws {
        #expect(ShardCount(try Event(frames: ShardCount(3).event.encode())) == ShardCount(3))
        for body in ["0", "-1", "two", "", "1025", "1000000000", "99999999999999999999"] {
            var event = ShardCount(1).event
            event.body = Array(body.utf8)
            #expect(ShardCount(event) == nil, "\(body)")
        }
    }
}
