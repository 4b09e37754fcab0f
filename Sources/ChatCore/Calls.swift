import Crypto
import Foundation

// Voice and video calls (api-contract.md "Calls", issue 17): the server keeps
// a call's state and relays its signals; the media flows between clients.
// The lifecycle is a pure function of the stored call, the action, who acts
// and the time, so that every engine applies the same rules inside its write
// transaction and a call outlives any process (it is a row, not a timer).

public enum CallMedia: String, Sendable, Codable, CaseIterable {
    case audio, video
}

public enum CallState: String, Sendable, Codable, CaseIterable {
    case ringing, active, ended, missed

    /// Ended one way or the other: nothing changes it any more.
    public var isOver: Bool { self == .ended || self == .missed }
}

/// Where one user stands in a call. The starter begins `joined`; a member
/// who answers joins, and may leave and join again while the call lasts.
public enum CallPresence: String, Sendable, Codable {
    case joined, left, declined
}

public struct CallParticipant: Sendable, Equatable {
    public var userID: String
    public var presence: CallPresence
    /// The last time this user joined (nil: declined without joining).
    public var joinedAt: Timestamp?

    public init(userID: String, presence: CallPresence, joinedAt: Timestamp?) {
        (self.userID, self.presence, self.joinedAt) = (userID, presence, joinedAt)
    }
}

public struct Call: Sendable, Equatable {
    public var id: String
    public var roomID: String
    public var media: CallMedia
    public var startedBy: String
    public var state: CallState
    /// In the order they first came in; the starter first.
    public var participants: [CallParticipant]
    public var startedAt: Timestamp
    public var endedAt: Timestamp?

    public init(
        id: String, roomID: String, media: CallMedia, startedBy: String, state: CallState, participants: [CallParticipant],
        startedAt: Timestamp, endedAt: Timestamp?
    ) {
        (self.id, self.roomID, self.media, self.startedBy, self.state) = (id, roomID, media, startedBy, state)
        (self.participants, self.startedAt, self.endedAt) = (participants, startedAt, endedAt)
    }

    /// Who is in the call now.
    public var joined: [String] { participants.filter { $0.presence == .joined }.map(\.userID) }

    func index(of user: String) -> Int? { participants.firstIndex { $0.userID == user } }
}

/// What a room member asks of a call (`POST .../calls/{cid}/<action>/`),
/// and `expire`, which the store applies itself when the ringing time passed.
public enum CallAction: String, Sendable, CaseIterable {
    case join, leave, decline, end, expire
}

/// The room events a change sends (api-contract.md: `call_started`,
/// `call_joined`, `call_left`, `call_ended`; a missed call ends too).
public enum CallEvent: String, Sendable, Equatable {
    case started = "call_started"
    case joined = "call_joined"
    case left = "call_left"
    case ended = "call_ended"
}

/// Why an action does not apply; each is a `400` with this text.
public enum CallRefusal: Error, Sendable, Equatable {
    case over
    case notInCall
    case notRinging
    case starterCannotDecline

    public var message: String {
        switch self {
        case .over: "This call has ended"
        case .notInCall: "You are not in this call"
        case .notRinging: "Only a ringing call can be declined"
        case .starterCannotDecline: "You started this call; leave or end it instead"
        }
    }
}

public enum CallRules {
    /// A ringing call nobody joins ends as missed after this long
    /// (api-contract.md); `calls.ringSeconds` may set another.
    public static let ringMicros: Int64 = 45_000_000

    /// A new call: ringing, its starter in it.
    public static func start(id: String, room: String, media: CallMedia, by user: String, at now: Timestamp) -> Call {
        Call(
            id: id, roomID: room, media: media, startedBy: user, state: .ringing,
            participants: [CallParticipant(userID: user, presence: .joined, joinedAt: now)], startedAt: now, endedAt: nil
        )
    }

    /// When a ringing call would be missed: what the store's sweep waits for.
    public static func missedAt(_ call: Call, ring: Int64 = ringMicros) -> Timestamp { Timestamp(micros: call.startedAt.micros + ring) }

    /// `action` by `user` (a member of the call's room: the caller checks
    /// membership) at `now`, for a room of `memberCount` members. The call
    /// as it now is and the events to send, in order; none when nothing
    /// changed (a repeat: a resent command changes nothing twice). A ringing
    /// call past its time is missed first, whatever the action.
    public static func apply(_ action: CallAction, to call: Call, by user: String, memberCount: Int, at now: Timestamp, ring: Int64 = ringMicros) throws(CallRefusal) -> (Call, [CallEvent]) {
        var call = call
        if call.state == .ringing, now.micros >= missedAt(call, ring: ring).micros {
            call.state = .missed
            call.endedAt = now
            for i in call.participants.indices where call.participants[i].presence == .joined { call.participants[i].presence = .left }
            // The expiry is the change; the action itself meets a call that is over.
            if action == .expire || action == .end || action == .leave { return (call, [.ended]) }
            throw .over
        }
        if call.state.isOver {
            // Ending or leaving what is over is a repeat, not a fault.
            if action == .end || action == .leave || action == .expire { return (call, []) }
            throw .over
        }
        switch action {
        case .expire:
            return (call, [])
        case .join:
            if let i = call.index(of: user) {
                if call.participants[i].presence == .joined { return (call, []) }
                call.participants[i].presence = .joined
                call.participants[i].joinedAt = now
            } else {
                call.participants.append(CallParticipant(userID: user, presence: .joined, joinedAt: now))
            }
            // The first to answer makes it active (the starter was in it from the start).
            if call.state == .ringing, user != call.startedBy { call.state = .active }
            return (call, [.joined])
        case .leave:
            guard let i = call.index(of: user), call.participants[i].joinedAt != nil else { throw .notInCall }
            if call.participants[i].presence != .joined { return (call, []) }
            call.participants[i].presence = .left
            guard call.joined.isEmpty else { return (call, [.left]) }
            finish(&call, at: now)
            return (call, [.left, .ended])
        case .decline:
            guard user != call.startedBy else { throw .starterCannotDecline }
            guard call.state == .ringing else { throw .notRinging }
            if let i = call.index(of: user) {
                if call.participants[i].presence == .declined { return (call, []) }
                call.participants[i].presence = .declined
            } else {
                call.participants.append(CallParticipant(userID: user, presence: .declined, joinedAt: nil))
            }
            // Everyone the call could reach said no: nobody is left to answer.
            let declined = call.participants.filter { $0.presence == .declined }.count
            guard declined >= memberCount - 1 else { return (call, []) }
            finish(&call, at: now)
            return (call, [.ended])
        case .end:
            guard let i = call.index(of: user), call.participants[i].presence == .joined else { throw .notInCall }
            finish(&call, at: now)
            return (call, [.ended])
        }
    }

    private static func finish(_ call: inout Call, at now: Timestamp) {
        call.state = .ended
        call.endedAt = now
        for i in call.participants.indices where call.participants[i].presence == .joined { call.participants[i].presence = .left }
    }
}

/// Time-limited TURN credentials in the TURN REST API form that coturn's
/// `use-auth-secret` checks: the username is `<expiry>:<user id>` (Unix
/// seconds), the credential the base64 HMAC-SHA1 of the username under the
/// secret shared with the TURN server. The server checks both on its own; no
/// call to chatd.
public enum TurnCredentials {
    public static func make(user: String, secret: String, now: Date, lifetime: TimeInterval) -> (username: String, credential: String) {
        let expiry = Int64((now.timeIntervalSince1970 + lifetime).rounded(.down))
        let username = "\(expiry):\(user)"
        let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Array(username.utf8), using: SymmetricKey(data: Array(secret.utf8)))
        return (username, Data(mac).base64EncodedString())
    }
}
