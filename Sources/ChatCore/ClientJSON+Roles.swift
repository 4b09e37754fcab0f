/// The JSON of roles and pins: members, and the `role_changed`,
/// `message_pinned` and `message_unpinned` events.
extension ClientJSON {
    /// One entry of a members list: `{user, role, joined_at}`.
    public static func member(user: User, role: String, joinedAt: Timestamp) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.key("user"); write(user, to: &w)
        w.field("role", role)
        w.field("joined_at", joinedAt)
        w.endObject()
        return w.bytes
    }

    /// `{"type": "role_changed", "user", "role", "by"}`, users as objects.
    public static func roleChangedEvent(user: User, role: String, by: User) -> [UInt8] {
        var w = JSONWriter(capacity: 384)
        w.beginObject()
        w.field("type", "role_changed")
        w.key("user"); write(user, to: &w)
        w.field("role", role)
        w.key("by"); write(by, to: &w)
        w.endObject()
        return w.bytes
    }

    /// `{"type": "message_pinned", "message", "pinned_by"}`.
    public static func pinnedEvent(_ message: Message, by: User) -> [UInt8] {
        var w = JSONWriter(capacity: 1024)
        w.beginObject()
        w.field("type", "message_pinned")
        w.key("message"); write(message, to: &w)
        w.key("pinned_by"); write(by, to: &w)
        w.endObject()
        return w.bytes
    }

    /// `{"type": "message_unpinned", "message_id", "by"}`.
    public static func unpinnedEvent(messageID: String, by: User) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.field("type", "message_unpinned")
        w.field("message_id", messageID)
        w.key("by"); write(by, to: &w)
        w.endObject()
        return w.bytes
    }
}
