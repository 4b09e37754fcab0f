@testable import ChatBus
import ChatWire
import NIOCore
import Testing

@testable import ChatFrontend

/// The delivery plan while a handover runs (`DeliveryPlan.init(_:recent:handover:)`):
/// the sockets get what they get without one, and the loops get each room's
/// whole stream to log or buffer.
@Suite struct HandoverDeliveryTests {
    static let batch = [
        DeliveryPlanTests.event("a", "", "1"), DeliveryPlanTests.event("b", "m:1:new", "b1"),
        DeliveryPlanTests.event("a", "x:front-1/7", "typing"), DeliveryPlanTests.event("a", "m:2:new", "2"),
        DeliveryPlanTests.event("a", "m:2:new", "2"), DeliveryPlanTests.event("a", "?:junk", "j"),
        DeliveryPlanTests.event("a", "k:user-5", ""), DeliveryPlanTests.event("a", "s:9:joined", "3"),
    ]

    @Test(arguments: [HandoverMode.log, .buffer])
    func theSocketsGetWhatTheyGetWithoutAHandover(mode: HandoverMode) {
        var plain = RecentKeys(), recording = RecentKeys()
        let without = DeliveryPlan(Self.batch, recent: &plain)
        let with = DeliveryPlan(Self.batch, recent: &recording, handover: HandoverFanOut(mode: mode))
        #expect(with.rooms.map(\.roomID) == without.rooms.map(\.roomID))
        #expect(with.rooms.map(\.steps) == without.rooms.map(\.steps))
        #expect(without.rooms.allSatisfy { $0.recorded.isEmpty })
    }

    @Test func everyEventWithAKnownKeyIsRecordedRepeatsIncluded() {
        var recent = RecentKeys()
        let logged = DeliveryPlan(Self.batch, recent: &recent, handover: HandoverFanOut(mode: .log))
        let a = logged.rooms[0].recorded
        #expect(a.map(\.key.description) == ["", "x:front-1/7", "m:2:new", "m:2:new", "k:user-5", "s:9:joined"])
        #expect(a.map(\.fresh) == [true, true, true, false, true, true])
        #expect(a.map(\.hash) == [("", "1"), ("x:front-1/7", "typing"), ("m:2:new", "2"), ("m:2:new", "2"), ("k:user-5", ""), ("s:9:joined", "3")].map {
            HandoverLog.hash(key: Array($0.0.utf8), body: Array($0.1.utf8))
        })
        // A log needs no frames; a buffer replays each event's own.
        #expect(a.allSatisfy { $0.frame.readableBytes == 0 })
        var again = RecentKeys()
        let buffered = DeliveryPlan(Self.batch, recent: &again, handover: HandoverFanOut(mode: .buffer))
        #expect(buffered.rooms[1].recorded.map(\.frame) == [DeliveryPlanTests.framed([Array("b1".utf8)])])
    }

    @Test func aKeyTheOldProcessDeliveredSkipsTheMovedSocketsOnly() throws {
        var recent = RecentKeys()
        let delivered = try #require(EventKey("m:2:new"))
        let plan = DeliveryPlan(
            [
                DeliveryPlanTests.event("a", "", "1"), DeliveryPlanTests.event("a", "m:2:new", "2"),
                DeliveryPlanTests.event("a", "m:2:new", "2"), DeliveryPlanTests.event("a", "m:3:new", "3"),
            ],
            recent: &recent, handover: HandoverFanOut(delivered: [delivered])
        )
        #expect(plan.rooms[0].steps == [
            .frames(DeliveryPlanTests.framed([Array("1".utf8)]), excluded: nil),
            .notToAdopted(DeliveryPlanTests.framed([Array("2".utf8)])),
            .frames(DeliveryPlanTests.framed([Array("3".utf8)]), excluded: nil),
        ])
        // Nothing recorded: no handover logs or buffers now, it only remembers.
        #expect(plan.rooms[0].recorded.isEmpty)
    }

    @Test func theLastKeysComeOldestFirstAcrossTheRing() {
        var recent = RecentKeys(capacity: 3)
        let keys = (1...5).map { EventKey.message(id: "\($0)", change: .created) }
        for key in keys { _ = recent.firstDelivery(of: key) }
        _ = recent.firstDelivery(of: .none)  // not idempotent: not kept
        #expect(recent.last(2) == Array(keys[3...]))
        #expect(recent.last(10) == Array(keys[2...]))
    }
}
