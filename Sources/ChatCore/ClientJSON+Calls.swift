/// Calls as clients see them (api-contract.md "Calls").
extension ClientJSON {
    /// `{id, room, media, started_by, state, participants, started_at,
    /// ended_at}`; a participant is `{user_id, state, joined_at}`.
    public static func encode(_ call: Call) -> [UInt8] {
        var w = JSONWriter(capacity: 256 + 96 * call.participants.count)
        write(call, to: &w)
        return w.bytes
    }

    static func write(_ call: Call, to w: inout JSONWriter) {
        w.beginObject()
        w.field("id", call.id)
        w.field("room", call.roomID)
        w.field("media", call.media.rawValue)
        w.field("started_by", call.startedBy)
        w.field("state", call.state.rawValue)
        w.key("participants")
        w.beginArray()
        for participant in call.participants {
            w.beginObject()
            w.field("user_id", participant.userID)
            w.field("state", participant.presence.rawValue)
            w.field("joined_at", participant.joinedAt)
            w.endObject()
        }
        w.endArray()
        w.field("started_at", call.startedAt)
        w.field("ended_at", call.endedAt)
        w.endObject()
    }

    /// A room event of a call's change: `{"type": "call_joined", "call",
    /// "user_id"}`, the user who acted (nil: the server, a missed call).
    public static func callEvent(_ event: CallEvent, _ call: Call, by user: String?) -> [UInt8] {
        var w = JSONWriter(capacity: 320 + 96 * call.participants.count)
        w.beginObject()
        w.field("type", event.rawValue)
        w.key("call"); write(call, to: &w)
        w.field("user_id", user)
        w.endObject()
        return w.bytes
    }

    /// `{"type": "call_signal", "call_id", "from", "signal"}`: `signal` is
    /// JSON the frontend encoded, written as it is.
    public static func callSignalEvent(callID: String, from user: String, signal: [UInt8]) -> [UInt8] {
        var w = JSONWriter(capacity: 128 + signal.count)
        w.beginObject()
        w.field("type", "call_signal")
        w.field("call_id", callID)
        w.field("from", user)
        w.key("signal"); w.raw(signal)
        w.endObject()
        return w.bytes
    }
}
