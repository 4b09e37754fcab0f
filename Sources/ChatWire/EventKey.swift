/// The `key` frame of a room event: what a frontend does with the event
/// besides writing its body to the room's sockets. Workers build it, frontends
/// read it, and only this type spells it.
///
///     ""                      .none
///     m:<message id>:new      .message(id, .created)      idempotent
///     m:<message id>:edit<µs> .message(id, .edited(µs))   idempotent
///     m:<message id>:delete   .message(id, .deleted)      idempotent
///     s:<session id>:joined   .session(id, .joined)       idempotent
///     s:<session id>:left     .session(id, .left)         idempotent
///     x:<frontend>/<n>        .except(connection)         everyone but that socket
///     k:<user id>             .removeUser(id)             an order: close that user's sockets
///     k:*                     .removeEveryone             an order: close every socket
///     u:<user id>             .onlyUser(id)               that user's sockets alone (a call signal)
///     v:<user id>/<device id> .onlyDevice(user, device)   that device's sockets alone (an encrypted message)
///
/// Ids never contain `:` (UUIDs), so the last part is unambiguous.
public enum EventKey: Hashable, Sendable, LosslessStringConvertible {
    /// An ordinary event: every member gets it, every copy.
    case none
    /// A change of a message: one key per change, so a re-published copy is
    /// dropped and the next change is not.
    case message(id: String, change: MessageChange)
    /// A session opened or closed (`user_joined` / `user_left`).
    case session(id: String, change: SessionChange)
    /// Every member but this connection (its own typing).
    case except(ConnectionRef)
    /// Not a frame but an order (empty body): the user left or was removed,
    /// so that user's sockets in the room close with 4403.
    case removeUser(String)
    /// The room was deactivated: every socket in it closes with 4403.
    case removeEveryone
    /// A frame for this user's sockets in the room and nobody else's (a
    /// call's `call_signal`, api-contract.md "Calls").
    case onlyUser(String)
    /// A frame for the sockets of one device of this user's in the room (an
    /// encrypted room's message, carrying that device's ciphertext alone).
    case onlyDevice(user: String, device: String)

    public enum MessageChange: Hashable, Sendable {
        case created
        /// Edited at this time (microseconds): each edit is a new key.
        case edited(at: Int64)
        case deleted
    }

    public enum SessionChange: String, Hashable, Sendable {
        case joined, left
    }

    /// Whether a frontend delivers only the first copy of an event with this key.
    public var isIdempotent: Bool {
        switch self {
        case .message, .session: true
        case .none, .except, .removeUser, .removeEveryone, .onlyUser, .onlyDevice: false
        }
    }

    public var description: String {
        switch self {
        case .none: ""
        case .message(let id, .created): "m:\(id):new"
        case .message(let id, .edited(let micros)): "m:\(id):edit\(micros)"
        case .message(let id, .deleted): "m:\(id):delete"
        case .session(let id, let change): "s:\(id):\(change.rawValue)"
        case .except(let connection): "x:\(connection)"
        case .removeUser(let user): "k:\(user)"
        case .removeEveryone: "k:*"
        case .onlyUser(let user): "u:\(user)"
        case .onlyDevice(let user, let device): "v:\(user)/\(device)"
        }
    }

    /// Parses a key frame; nil for one no worker writes.
    public init?(_ description: String) {
        if description.isEmpty { self = .none; return }
        let prefix = description.prefix(2)
        let rest = String(description.dropFirst(2))
        switch prefix {
        case "m:", "s:":
            guard let colon = rest.lastIndex(of: ":"), colon != rest.startIndex else { return nil }
            let id = String(rest[..<colon]), change = rest[rest.index(after: colon)...]
            guard !id.contains(":") else { return nil }
            if prefix == "s:" {
                guard let change = SessionChange(rawValue: String(change)) else { return nil }
                self = .session(id: id, change: change)
            } else if change == "new" {
                self = .message(id: id, change: .created)
            } else if change == "delete" {
                self = .message(id: id, change: .deleted)
            } else if change.hasPrefix("edit"), let micros = Int64(change.dropFirst(4)), String(micros) == change.dropFirst(4) {
                self = .message(id: id, change: .edited(at: micros))
            } else {
                return nil
            }
        case "x:":
            guard let connection = ConnectionRef(rest) else { return nil }
            self = .except(connection)
        case "k:":
            guard !rest.isEmpty else { return nil }
            self = rest == "*" ? .removeEveryone : .removeUser(rest)
        case "u:":
            guard !rest.isEmpty else { return nil }
            self = .onlyUser(rest)
        case "v:":
            let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
            self = .onlyDevice(user: String(parts[0]), device: String(parts[1]))
        default:
            return nil
        }
    }
}

/// One WebSocket connection among all frontends: `<frontend id>/<number>`,
/// the number unique within that frontend process.
public struct ConnectionRef: Hashable, Sendable, LosslessStringConvertible {
    public var frontend: String
    public var number: UInt64

    public init(frontend: String, number: UInt64) {
        self.frontend = frontend
        self.number = number
    }

    public var description: String { "\(frontend)/\(number)" }

    /// Splits at the last `/`, so a frontend id may itself contain one.
    public init?(_ description: String) {
        guard let slash = description.lastIndex(of: "/") else { return nil }
        let frontend = description[..<slash], digits = description[description.index(after: slash)...]
        guard !frontend.isEmpty, let number = UInt64(digits), String(number) == digits else { return nil }
        self.init(frontend: String(frontend), number: number)
    }
}

extension Event {
    /// A room event for every frontend with members in `roomID`.
    public static func room(_ roomID: String, key: EventKey = .none, body: [UInt8]) -> Event {
        Event(topic: Topic.room(roomID), kind: .roomEvent, key: key.description, body: body)
    }
}
