/// Command bodies of calls (issue 17, api-contract.md "Calls").
extension Requests {
    /// `call.start`: `callID` is the frontend's, so that a resend finds the call it made.
    public struct CallStart: Codable, Sendable {
        public var roomID: String
        public var callID: String
        public var media: String

        public init(roomID: String, callID: String, media: String) {
            (self.roomID, self.callID, self.media) = (roomID, callID, media)
        }
    }

    /// `call.action` (`CallAction`'s raw value; `roomID` the call's, which
    /// routed it), `call.get` and `call.expire` (`action` unused).
    public struct CallRef: Codable, Sendable {
        public var callID: String
        public var roomID: String?
        public var action: String?

        public init(callID: String, roomID: String? = nil, action: String? = nil) {
            (self.callID, self.roomID, self.action) = (callID, roomID, action)
        }
    }

    /// `call.signal`: `signal` is the client's JSON object, re-encoded by
    /// the frontend (so it is JSON, and no larger than the limit), passed on
    /// as it is.
    public struct CallSignal: Codable, Sendable {
        public var roomID: String
        public var callID: String
        public var to: String
        public var signal: String

        public init(roomID: String, callID: String, to: String, signal: String) {
            (self.roomID, self.callID, self.to, self.signal) = (roomID, callID, to, signal)
        }
    }

    /// `call.due`'s answer: ringing calls past their time, and their rooms.
    public struct DueCalls: Codable, Sendable {
        public var calls: [CallRef]

        public init(calls: [CallRef]) { self.calls = calls }
    }
}
