/// A room event some members must not get (issue 16, blocks): the new
/// message of a user they blocked. The key frame then carries them after a
/// `|`, which neither an `EventKey` nor a user id contains:
///
///     m:<message id>:new|<user id>,<user id>
///
/// (and the message's later `edit`/`delete` keys, from the blocks then).
///
/// Frontends skip those users' sockets; the client JSON is the same for
/// everyone else, and the blocked sender is told nothing.
extension EventKey {
    /// Splits a key frame into its key and the users it is hidden from
    /// (empty for nearly every event); nil for a key no worker writes.
    public static func parse(_ frame: String) -> (key: EventKey, hiddenFrom: [String])? {
        guard let bar = frame.utf8.firstIndex(of: UInt8(ascii: "|")) else { return EventKey(frame).map { ($0, []) } }
        guard let key = EventKey(String(frame[..<bar])) else { return nil }
        let users = frame[frame.index(after: bar)...].split(separator: ",").map(String.init)
        return (key, users)
    }

    /// The key frame of an event hidden from `users`.
    public func frame(hiddenFrom users: [String]) -> String {
        users.isEmpty ? description : description + "|" + users.joined(separator: ",")
    }
}

extension Event {
    /// A room event every member's sockets get but those of `hiddenFrom`.
    public static func room(_ roomID: String, key: EventKey, hiddenFrom: [String], body: [UInt8]) -> Event {
        Event(topic: Topic.room(roomID), kind: .roomEvent, key: key.frame(hiddenFrom: hiddenFrom), body: body)
    }
}
