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

    /// The new side's buffer of room "a", recorded as the loops record it.
    static func buffered(_ events: [RoomEvent]) -> HandoverLoopState {
        var recent = RecentKeys()
        let plan = DeliveryPlan(events, recent: &recent, handover: HandoverFanOut(mode: .buffer))
        var state = HandoverLoopState()
        for room in plan.rooms { state.record(room: room.roomID, room.recorded, mode: .buffer) }
        return state
    }

    static func hash(_ key: String, _ body: String) -> UInt64 { HandoverLog.hash(key: Array(key.utf8), body: Array(body.utf8)) }

    static func frame(_ body: String) -> DeliveryPlan.Step { .frames(DeliveryPlanTests.framed([Array(body.utf8)]), excluded: nil) }

    /// An adopted socket's replay (`LoopRegistry.adopt`): a buffer that began
    /// before the old process's log (a room the new process held already)
    /// replays only what follows the log, not the whole buffer.
    @Test func aSocketIsReplayedOnlyWhatFollowsItsLog() throws {
        let state = Self.buffered([
            DeliveryPlanTests.event("a", "m:1:new", "1"), DeliveryPlanTests.event("a", "m:2:new", "2"),
            DeliveryPlanTests.event("a", "m:3:new", "3"), DeliveryPlanTests.event("a", "m:4:new", "4"),
        ])
        let me = try #require(ConnectionRef("old/7"))
        let written = [Self.hash("m:2:new", "2"), Self.hash("m:3:new", "3")]
        let replay = try #require(state.replay(room: "a", written: written, truncated: false, user: "u1", connection: me))
        #expect(replay.steps == [Self.frame("4")] && replay.replayed == 1 && !replay.removed)
        // Its log began after the buffer's last event: nothing owed.
        let none = try #require(state.replay(room: "a", written: [Self.hash("m:4:new", "4")], truncated: false, user: "u1", connection: me))
        #expect(none.steps.isEmpty)
    }

    /// The replay skips what the old process delivered (a worker's resend:
    /// the live copy's `.notToAdopted`), repeats and the socket's own
    /// typing, and ends with its user's removal.
    @Test func theReplaySkipsWhatTheOldProcessDeliveredAndEndsAtARemoval() throws {
        var state = Self.buffered([
            DeliveryPlanTests.event("a", "m:1:new", "1"), DeliveryPlanTests.event("a", "m:1:new", "1"),
            DeliveryPlanTests.event("a", "m:2:new", "2"), DeliveryPlanTests.event("a", "x:old/7", "typing"),
            DeliveryPlanTests.event("a", "k:u2", ""), DeliveryPlanTests.event("a", "s:9:joined", "3"),
            DeliveryPlanTests.event("a", "k:u1", ""), DeliveryPlanTests.event("a", "m:5:new", "5"),
        ])
        state.delivered = [try #require(EventKey("m:2:new"))]
        let me = try #require(ConnectionRef("old/7"))
        let replay = try #require(state.replay(room: "a", written: [], truncated: false, user: "u1", connection: me))
        #expect(replay.steps == [Self.frame("1"), Self.frame("3"), .remove(user: nil)])
        #expect(replay.replayed == 2 && replay.removed)
    }

    /// A buffer that lost its start, with nothing in common with the log:
    /// where the socket stopped is not known (it is closed with 1012).
    @Test func aCutBufferWithNothingInCommonIsNotReplayed() throws {
        var state = HandoverLoopState()
        var recent = RecentKeys()
        let events = (0..<(HandoverLoopState.bufferCapacity + 1)).map { DeliveryPlanTests.event("a", "m:\($0):new", "\($0)") }
        let plan = DeliveryPlan(events, recent: &recent, handover: HandoverFanOut(mode: .buffer))
        state.record(room: "a", plan.rooms[0].recorded, mode: .buffer)
        let me = try #require(ConnectionRef("old/7"))
        #expect(state.replay(room: "a", written: [Self.hash("m:x:new", "x")], truncated: false, user: "u1", connection: me) == nil)
        #expect(state.replay(room: "a", written: [], truncated: false, user: "u1", connection: me) == nil, "nor with an empty log")
        let last = HandoverLoopState.bufferCapacity
        let known = state.replay(room: "a", written: [Self.hash("m:\(last):new", "\(last)")], truncated: false, user: "u1", connection: me)
        #expect(known?.steps.isEmpty == true, "its last event in common: nothing owed")
    }
}
