import ChatCore
import Foundation
import Testing

/// The call lifecycle (ChatCore/Calls.swift) as a pure function: every
/// transition, every refusal, the 45 s ring, and repeats that change nothing.
@Suite struct CallsTests {
    let t0 = Timestamp(micros: 1_800_000_000_000_000)
    func at(_ seconds: Double) -> Timestamp { Timestamp(micros: t0.micros + Int64(seconds * 1_000_000)) }
    func ringing() -> Call { CallRules.start(id: "c1", room: "r1", media: .video, by: "ann", at: t0) }

    func apply(_ action: CallAction, _ call: Call, by user: String, members: Int = 3, at seconds: Double) throws(CallRefusal) -> (Call, [CallEvent]) {
        try CallRules.apply(action, to: call, by: user, memberCount: members, at: at(seconds))
    }

    @Test func aCallRingsWithItsStarterIn() {
        let call = ringing()
        #expect(call.state == .ringing && call.joined == ["ann"] && call.endedAt == nil && call.media == .video)
        #expect(CallRules.missedAt(call).micros == t0.micros + 45_000_000)
    }

    @Test func theFirstAnswerMakesItActiveAndTheLastToLeaveEndsIt() throws {
        var (call, events) = try apply(.join, ringing(), by: "bob", at: 3)
        #expect(call.state == .active && call.joined == ["ann", "bob"] && events == [.joined])
        (call, events) = try apply(.join, call, by: "cy", at: 4)
        #expect(call.joined == ["ann", "bob", "cy"] && events == [.joined])
        (call, events) = try apply(.leave, call, by: "ann", at: 10)
        #expect(call.state == .active && call.joined == ["bob", "cy"] && events == [.left])
        // Left, then back: a rejoin is a join.
        (call, events) = try apply(.join, call, by: "ann", at: 11)
        #expect(call.joined == ["ann", "bob", "cy"] && events == [.joined] && call.participants[0].joinedAt == at(11))
        for user in ["ann", "bob"] { (call, _) = try apply(.leave, call, by: user, at: 20) }
        (call, events) = try apply(.leave, call, by: "cy", at: 21)
        #expect(call.state == .ended && call.endedAt == at(21) && call.joined.isEmpty && events == [.left, .ended])
    }

    @Test func theStarterAloneLeavingARingingCallEndsIt() throws {
        let (call, events) = try apply(.leave, ringing(), by: "ann", at: 5)
        #expect(call.state == .ended && events == [.left, .ended])
    }

    @Test func endingEndsItForEveryone() throws {
        var (call, _) = try apply(.join, ringing(), by: "bob", at: 1)
        (call, _) = try apply(.join, call, by: "cy", at: 2)
        let (ended, events) = try apply(.end, call, by: "cy", at: 30)
        #expect(ended.state == .ended && ended.endedAt == at(30) && ended.joined.isEmpty && events == [.ended])
        #expect(ended.participants.map(\.presence) == [.left, .left, .left])
    }

    @Test func aRingingCallNobodyAnswersIsMissedAt45Seconds() throws {
        let call = ringing()
        // Not yet: the sweep's expiry changes nothing.
        let (early, none) = try apply(.expire, call, by: "ann", at: 44.9)
        #expect(early == call && none.isEmpty)
        let (missed, events) = try apply(.expire, call, by: "ann", at: 45)
        #expect(missed.state == .missed && missed.endedAt == at(45) && missed.joined.isEmpty && events == [.ended])
        // An answer that comes too late finds it over, whoever sweeps first.
        #expect(throws: CallRefusal.over) { try apply(.join, call, by: "bob", at: 46) }
        #expect(throws: CallRefusal.over) { try apply(.join, missed, by: "bob", at: 46) }
        // A missed call's expiry, leave or end again is a repeat, not a fault.
        for action in [CallAction.expire, .leave, .end] {
            let (again, more) = try apply(action, missed, by: "ann", at: 50)
            #expect(again == missed && more.isEmpty)
        }
    }

    @Test func anAnsweredCallIsNeverMissed() throws {
        let (call, _) = try apply(.join, ringing(), by: "bob", at: 2)
        let (later, events) = try apply(.expire, call, by: "ann", at: 600)
        #expect(later == call && events.isEmpty)
    }

    @Test func declinesEndTheCallOnlyWhenEveryoneElseDeclined() throws {
        // A direct room: the one other member declines, and the call ends.
        let (direct, directEvents) = try apply(.decline, ringing(), by: "bob", members: 2, at: 2)
        #expect(direct.state == .ended && directEvents == [.ended] && direct.participants.last?.presence == .declined)
        // A room of three: one decline leaves the call ringing for the third.
        var (call, events) = try apply(.decline, ringing(), by: "bob", members: 3, at: 2)
        #expect(call.state == .ringing && events.isEmpty)
        (call, events) = try apply(.decline, call, by: "bob", members: 3, at: 3)
        #expect(call.state == .ringing && events.isEmpty, "a repeated decline counts once")
        (call, events) = try apply(.decline, call, by: "cy", members: 3, at: 4)
        #expect(call.state == .ended && events == [.ended])
    }

    @Test func refusals() throws {
        let call = ringing()
        #expect(throws: CallRefusal.starterCannotDecline) { try apply(.decline, call, by: "ann", at: 1) }
        #expect(throws: CallRefusal.notInCall) { try apply(.leave, call, by: "bob", at: 1) }
        #expect(throws: CallRefusal.notInCall) { try apply(.end, call, by: "bob", at: 1) }
        let (active, _) = try apply(.join, call, by: "bob", at: 1)
        #expect(throws: CallRefusal.notRinging) { try apply(.decline, active, by: "cy", at: 2) }
        // One who declined never joined: leaving is not theirs to do.
        let (declined, _) = try apply(.decline, call, by: "cy", at: 1)
        #expect(throws: CallRefusal.notInCall) { try apply(.leave, declined, by: "cy", at: 2) }
        let (ended, _) = try apply(.end, active, by: "bob", at: 3)
        #expect(throws: CallRefusal.over) { try apply(.join, ended, by: "cy", at: 4) }
        #expect(throws: CallRefusal.over) { try apply(.decline, ended, by: "cy", at: 4) }
    }

    @Test func repeatsChangeNothing() throws {
        let (call, _) = try apply(.join, ringing(), by: "bob", at: 1)
        let (again, events) = try apply(.join, call, by: "bob", at: 2)
        #expect(again == call && events.isEmpty)
        let (left, _) = try apply(.leave, call, by: "bob", at: 3)
        let (leftAgain, none) = try apply(.leave, left, by: "bob", at: 4)
        #expect(leftAgain == left && none.isEmpty)
    }

    @Test func turnCredentialsAreWhatCoturnChecks() {
        // Python: base64(hmac.new(b"north wind", b"1700003600:<id>", sha1).digest())
        let (username, credential) = TurnCredentials.make(
            user: "0192f0a4-7b3c-7d2e-8f10-123456789abc", secret: "north wind",
            now: Date(timeIntervalSince1970: 1_700_000_000.7), lifetime: 3_600)
        #expect(username == "1700003600:0192f0a4-7b3c-7d2e-8f10-123456789abc")
        #expect(credential == "Iym5FeYbSbqexQddw/0SpW4LjOE=")
    }
}
