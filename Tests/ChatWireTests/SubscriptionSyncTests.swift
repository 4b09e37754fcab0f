import ChatWire
import Testing

@Suite struct SubscriptionSyncTests {
    @Test func roundTrips() throws {
        let sync = SubscriptionSync(frontendID: "fe-123-abc", number: 42)
        #expect(sync.topic == "sync.fe-123-abc.42")
        #expect(SubscriptionSync(topic: sync.topic) == sync)
        let event = try Event(frames: sync.event.encode())
        #expect(event.kind == .synced && event.topic == sync.topic)
        #expect(SubscriptionSync(event) == sync)
    }

    @Test func refusesWhatIsNotOne() {
        for topic in ["sync.fe-1", "sync.fe-1.", "sync..4", "sync.fe-1.x", "sync.fe-1.-1", "room.fe-1.4", "sync"] {
            #expect(SubscriptionSync(topic: topic) == nil, "\(topic)")
        }
        let good = SubscriptionSync(frontendID: "fe-1", number: 4).event
        var kind = good
        kind.kind = .roomEvent
        var key = good
        key.key = "5"
        for event in [kind, key] { #expect(SubscriptionSync(event) == nil, "\(event)") }
    }

    /// What the broker does with each message XPUB hands up.
    @Test func theBrokerKeepsRoomSubscriptionsAndAnswersSyncs() {
        func message(_ flag: UInt8, _ topic: String) -> [UInt8] { [flag] + Array(topic.utf8) }
        #expect(UpstreamMessage(message(1, "room.abc")) == .room)
        #expect(UpstreamMessage(message(0, "room.abc")) == .room)
        #expect(UpstreamMessage(message(1, "room.")) == .room)
        #expect(UpstreamMessage(message(1, "sync.fe-1.7")) == .sync(SubscriptionSync(frontendID: "fe-1", number: 7)))
        #expect(UpstreamMessage(message(0, "sync.fe-1.7")) == .drop)
        #expect(UpstreamMessage(message(1, "sync.nonsense")) == .drop)
        for topic in ["reply.fe-1", "hb.", "hb.store.0", "ctl.shards", "nudge.search", ""] {
            #expect(UpstreamMessage(message(1, topic)) == .forward, "\(topic)")
            #expect(UpstreamMessage(message(0, topic)) == .forward, "\(topic)")
        }
        // Not a subscription at all (XSUB peers may send messages up).
        #expect(UpstreamMessage(Array("room.abc".utf8)) == .forward)
        #expect(UpstreamMessage([]) == .forward)
        #expect(UpstreamMessage.allRooms == message(1, "room."))
    }
}
