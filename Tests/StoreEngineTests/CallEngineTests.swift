import ChatCore
import ChatStore
import Foundation
import Testing

/// Calls in the store (Store+Calls.swift), on each engine: a call is rows
/// that any engine instance reads back, CallRules applied to them, access
/// for members only, one call a room, the 45 s sweep, and two writers at once.
@Suite struct CallEngineTests {
    let t0 = Timestamp(micros: 1_800_000_000_000_000)
    func at(_ seconds: Int64) -> Timestamp { Timestamp(micros: t0.micros + seconds * 1_000_000) }
    var alice: String { identity("alice").id }
    var bob: String { identity("bob").id }

    @Test(arguments: EngineKind.available)
    func aWholeCallIsStoredAndReadBack(_ kind: EngineKind) throws {
        let (engine, makeAnother) = try kind.make()
        let room = try groupRoom(engine)
        let id = IDs.uuid7()
        let (started, startEvents) = try engine.write { try $0.startCall(id: id, room: room, media: .video, user: alice, now: t0) }
        #expect(started.state == .ringing && startEvents == [.started])
        // A resend of the start is the stored call, no second event.
        let (again, none) = try engine.write { try $0.startCall(id: id, room: room, media: .video, user: alice, now: at(1)) }
        #expect(again == started && none.isEmpty)
        let (joined, joinEvents) = try engine.write { try $0.callAction(.join, call: id, user: bob, now: at(2)) }
        #expect(joined.state == .active && joined.joined == [alice, bob] && joinEvents == [.joined])
        // Another engine instance (another worker's connections) reads the same call.
        let other = try makeAnother()
        #expect(try other.read { try $0.call(id, viewer: bob) } == joined)
        let (ended, endEvents) = try other.write { try $0.callAction(.end, call: id, user: bob, now: at(60)) }
        #expect(ended.state == .ended && ended.endedAt == at(60) && endEvents == [.ended])
        #expect(try engine.read { try $0.call(id, viewer: alice) } == ended)
        let page = try engine.read { try $0.callPage(Requests.RoomPage(roomID: room, page: page1), viewer: bob) }
        #expect(page.count == 1 && page.calls == [ended])
    }

    @Test(arguments: EngineKind.available)
    func onlyMembersAndOneCallARoom(_ kind: EngineKind) throws {
        let (engine, _) = try kind.make()
        let room = try groupRoom(engine)
        let mallory = identity("mallory").id
        #expect(throws: StoreError.forbidden()) { try engine.write { try $0.startCall(id: IDs.uuid7(), room: room, media: .audio, user: mallory, now: t0) } }
        let id = IDs.uuid7()
        _ = try engine.write { try $0.startCall(id: id, room: room, media: .audio, user: alice, now: t0) }
        #expect(throws: StoreError.forbidden()) { try engine.write { try $0.callAction(.join, call: id, user: mallory, now: at(1)) } }
        #expect(throws: StoreError.forbidden()) { try engine.read { try $0.call(id, viewer: mallory) } }
        #expect(throws: StoreError.forbidden()) { try engine.read { try $0.callPage(Requests.RoomPage(roomID: room, page: page1), viewer: mallory) } }
        #expect(throws: StoreError.notFound("Call not found")) { try engine.write { try $0.callAction(.join, call: IDs.uuid7(), user: bob, now: at(1)) } }
        #expect(throws: StoreError.badRequest(error: CallStore.busy)) {
            try engine.write { try $0.startCall(id: IDs.uuid7(), room: room, media: .video, user: bob, now: at(2)) }
        }
        #expect(throws: StoreError.badRequest(error: CallRefusal.notInCall.message)) {
            try engine.write { try $0.callAction(.end, call: id, user: bob, now: at(3)) }
        }
        // Once it is over, the room may call again.
        _ = try engine.write { try $0.callAction(.leave, call: id, user: alice, now: at(4)) }
        #expect(try engine.write { try $0.startCall(id: IDs.uuid7(), room: room, media: .video, user: bob, now: at(5)) }.0.state == .ringing)
    }

    @Test(arguments: EngineKind.available)
    func theSweepMissesARingingCallAfter45Seconds(_ kind: EngineKind) throws {
        let (engine, _) = try kind.make()
        let room = try groupRoom(engine)
        let id = IDs.uuid7()
        _ = try engine.write { try $0.startCall(id: id, room: room, media: .audio, user: alice, now: t0) }
        #expect(try engine.write { try $0.expireCalls(now: at(44)) }.isEmpty)
        // What a frontend's sweep asks: the due calls and their rooms, to route each expiry.
        #expect(try engine.read { try $0.dueCalls(now: at(44)) }.isEmpty)
        #expect(try engine.read { try $0.dueCalls(now: at(45)) }.map { [$0.id, $0.roomID] } == [[id, room]])
        let missed = try engine.write { try $0.expireCalls(now: at(45)) }
        #expect(missed.map(\.0.id) == [id] && missed.first?.0.state == .missed && missed.first?.1 == [.ended])
        #expect(try engine.write { try $0.expireCalls(now: at(90)) }.isEmpty, "swept once")
        #expect(try engine.read { try $0.call(id, viewer: bob) }.state == .missed)
        #expect(throws: StoreError.badRequest(error: CallRefusal.over.message)) {
            try engine.write { try $0.callAction(.join, call: id, user: bob, now: at(91)) }
        }
    }

    /// A member who leaves the room leaves its call: the last one out ends it.
    @Test(arguments: EngineKind.available)
    func leavingTheRoomLeavesItsCall(_ kind: EngineKind) throws {
        let (engine, _) = try kind.make()
        let room = try groupRoom(engine)
        let id = IDs.uuid7()
        _ = try engine.write { try $0.startCall(id: id, room: room, media: .audio, user: alice, now: .now()) }
        _ = try engine.write { try $0.callAction(.join, call: id, user: bob, now: .now()) }
        let (left, events) = try #require(try engine.write { try $0.leaveOpenCall(room: room, user: bob) })
        #expect(left.state == .active && left.joined == [alice] && events == [.left])
        #expect(try engine.write { try $0.leaveOpenCall(room: room, user: bob) } == nil, "not in it any more")
        let (ended, last) = try #require(try engine.write { try $0.leaveOpenCall(room: room, user: alice) })
        #expect(ended.state == .ended && last == [.left, .ended])
    }

    /// A signal goes between two users in the call, in the call's room:
    /// 404 for a call of another room, 400 for anyone not in it.
    @Test(arguments: EngineKind.available)
    func aSignalIsBetweenTwoInTheCall(_ kind: EngineKind) throws {
        let (engine, _) = try kind.make()
        let room = try groupRoom(engine)
        let other = try groupRoom(engine)
        let id = IDs.uuid7()
        _ = try engine.write { try $0.startCall(id: id, room: room, media: .audio, user: alice, now: .now()) }
        // Bob has not answered: nothing may reach him yet, nor come from him.
        #expect(throws: StoreError.badRequest(error: "The addressee is not in this call")) {
            try engine.read { try $0.checkSignal(call: id, room: room, from: alice, to: bob) }
        }
        #expect(throws: StoreError.badRequest(error: CallRefusal.notInCall.message)) {
            try engine.read { try $0.checkSignal(call: id, room: room, from: bob, to: alice) }
        }
        _ = try engine.write { try $0.callAction(.join, call: id, user: bob, now: .now()) }
        try engine.read { try $0.checkSignal(call: id, room: room, from: alice, to: bob) }
        try engine.read { try $0.checkSignal(call: id, room: room, from: bob, to: alice) }
        #expect(throws: StoreError.notFound("Call not found")) { try engine.read { try $0.checkSignal(call: id, room: other, from: alice, to: bob) } }
        #expect(throws: StoreError.badRequest(error: "A signal goes to another participant")) {
            try engine.read { try $0.checkSignal(call: id, room: room, from: alice, to: alice) }
        }
        _ = try engine.write { try $0.callAction(.end, call: id, user: bob, now: .now()) }
        #expect(throws: StoreError.badRequest(error: CallRefusal.over.message)) {
            try engine.read { try $0.checkSignal(call: id, room: room, from: alice, to: bob) }
        }
    }

    /// Two workers act on one call at once (PostgreSQL: two connections;
    /// SQLite serialises them): the last two members leave together, and
    /// the call must end. Written from the same stale read, each leave
    /// would see the other still in the call and neither would end it; the
    /// version check makes the second read again. Rounds, so that the two
    /// transactions overlap in some of them.
    @Test(arguments: EngineKind.available)
    func theLastTwoLeavingAtOnceEndTheCall(_ kind: EngineKind) async throws {
        let (engine, makeAnother) = try kind.make()
        let cy = identity("cy").id
        let room = IDs.uuid7()
        try engine.write { tx in
            for sub in ["alice", "bob", "cy"] { try tx.upsert(identity(sub)) }
            _ = try tx.createRoom(Requests.RoomCreate(id: room, name: "Three", roomType: "group", participantIDs: [bob, cy]),
                                  creator: alice, maxParticipants: 100)
        }
        let engines = [try makeAnother(), try makeAnother()]
        for round in 0..<10 {
            let id = IDs.uuid7()
            let base = Int64(round) * 100
            try engine.write { tx in
                _ = try tx.startCall(id: id, room: room, media: .video, user: alice, now: at(base))
                for user in [bob, cy] { _ = try tx.callAction(.join, call: id, user: user, now: at(base + 1)) }
                _ = try tx.callAction(.leave, call: id, user: alice, now: at(base + 2))
            }
            let now = at(base + 3)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (engine, user) in zip(engines, [bob, cy]) {
                    group.addTask { _ = try engine.write { try $0.callAction(.leave, call: id, user: user, now: now) } }
                }
                try await group.waitForAll()
            }
            let call = try engine.read { try $0.call(id, viewer: alice) }
            #expect(call.state == .ended && call.joined.isEmpty, "round \(round): \(call.state), \(call.joined)")
        }
    }
}
