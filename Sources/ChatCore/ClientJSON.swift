/// The client-facing JSON of users, rooms and messages: the one place these
/// shapes are written, for REST and WebSocket alike (seed `chat-api.md`).
public enum ClientJSON {
    public static func write(_ user: User, to w: inout JSONWriter) {
        w.beginObject()
        w.field("id", user.id)
        w.field("email", user.email)
        w.field("display_name", user.displayName)
        w.field("profile_picture", user.profilePicture)
        w.field("clerk_profile_image_url", user.clerkProfileImageURL)
        w.endObject()
    }

    public static func write(_ user: User?, to w: inout JSONWriter) {
        if let user { write(user, to: &w) } else { w.null() }
    }

    public static func write(_ message: Message, to w: inout JSONWriter) {
        w.beginObject()
        w.field("id", message.id)
        w.field("room", message.roomID)
        w.key("sender"); write(message.sender, to: &w)
        w.field("content", message.content)
        w.field("message_type", message.messageType.rawValue)
        // The viewer's device's own entry only (api-contract.md "End-to-end encrypted rooms").
        if message.messageType == .encrypted { w.field("ciphertext", message.ciphertext) }
        // The stored value is the blob's hash; clients get the download URL.
        w.field("file_attachment", message.fileAttachment == nil ? nil : "/api/chat/rooms/\(message.roomID)/messages/\(message.id)/download/")
        w.field("file_name", message.fileName)
        w.field("file_size", message.fileSize)
        w.field("timestamp", message.timestamp)
        w.field("edited_at", message.editedAt)
        w.field("is_deleted", message.isDeleted)
        w.field("reply_to", message.replyTo)
        w.key("reactions")
        w.beginObject()
        for (emoji, users) in message.reactions {
            w.key(emoji)
            w.beginArray()
            for user in users { w.string(user) }
            w.endArray()
        }
        w.endObject()
        w.key("read_by")
        w.beginArray()
        for user in message.readBy { write(user, to: &w) }
        w.endArray()
        w.field("is_edited", message.editedAt != nil)
        w.field("client_msg_id", message.clientMsgID)
        w.field("is_pinned", message.pinnedAt != nil)
        w.key("pinned_by"); write(message.pinnedBy, to: &w)
        w.field("pinned_at", message.pinnedAt)
        w.key("mentions")
        w.beginArray()
        for user in message.mentions { w.string(user) }
        w.endArray()
        w.endObject()
    }

    public static func write(_ room: Room, to w: inout JSONWriter) {
        w.beginObject()
        w.field("id", room.id)
        w.field("name", room.name)
        w.field("room_type", room.roomType.rawValue)
        w.key("participants")
        w.beginArray()
        for user in room.participants { write(user, to: &w) }
        w.endArray()
        w.key("created_by"); write(room.createdBy, to: &w)
        w.field("created_at", room.createdAt)
        w.field("updated_at", room.updatedAt)
        w.field("is_active", room.isActive)
        w.key("last_message")
        if let last = room.lastMessage {
            w.beginObject()
            w.field("id", last.id)
            w.field("content", last.content)
            w.key("sender"); write(last.sender, to: &w)
            w.field("timestamp", last.timestamp)
            w.endObject()
        } else {
            w.null()
        }
        w.field("unread_count", room.unreadCount)
        w.key("other_user"); write(room.otherUser, to: &w)
        w.field("my_role", room.myRole)
        w.field("post_permission", room.postPermission)
        w.field("muted", room.muted)
        w.field("notification_level", room.notificationLevel)
        w.field("unread_mentions", room.unreadMentions)
        w.field("encrypted", room.encrypted)
        w.endObject()
    }

    public static func encode(_ message: Message) -> [UInt8] {
        var w = JSONWriter()
        write(message, to: &w)
        return w.bytes
    }

    public static func encode(_ room: Room) -> [UInt8] {
        var w = JSONWriter()
        write(room, to: &w)
        return w.bytes
    }

    /// The WebSocket `message` event around an already-encoded message object.
    public static func messageEvent(_ messageJSON: [UInt8]) -> [UInt8] {
        Array(#"{"type":"message","message":"#.utf8) + messageJSON + [UInt8(ascii: "}")]
    }

    /// `{"type":"error","error":...}` for one connection.
    /// An `error` event for a client over its event rate, with when to retry (whole seconds).
    public static func rateLimitedEvent(retryAfter seconds: Int) -> [UInt8] {
        var w = JSONWriter(capacity: 96)
        w.beginObject()
        w.field("type", "error")
        w.field("error", "Rate limit exceeded, retry in \(seconds) s")
        w.field("retry_after", Int64(seconds))
        w.endObject()
        return w.bytes
    }

    public static func errorEvent(_ text: String) -> [UInt8] {
        var w = JSONWriter(capacity: 64)
        w.beginObject()
        w.field("type", "error")
        w.field("error", text)
        w.endObject()
        return w.bytes
    }

    /// `{"detail": ...}`, DRF's error body.
    public static func detail(_ text: String) -> [UInt8] {
        var w = JSONWriter(capacity: 64)
        w.beginObject()
        w.field("detail", text)
        w.endObject()
        return w.bytes
    }

    /// DRF field errors: `{"field": ["message"]}`.
    public static func fieldErrors(_ errors: [(field: String, message: String)]) -> [UInt8] {
        var w = JSONWriter(capacity: 64)
        w.beginObject()
        for (field, message) in errors {
            w.key(field)
            w.beginArray()
            w.string(message)
            w.endArray()
        }
        w.endObject()
        return w.bytes
    }

    /// A DRF page: `{"count", "next", "previous", "results"}` around encoded items.
    public static func page(count: Int64, next: String?, previous: String?, results: [[UInt8]]) -> [UInt8] {
        var w = JSONWriter(capacity: 256 + results.reduce(0) { $0 + $1.count + 1 })
        w.beginObject()
        w.field("count", count)
        w.field("next", next)
        w.field("previous", previous)
        w.key("results")
        w.beginArray()
        for item in results { w.raw(item) }
        w.endArray()
        w.endObject()
        return w.bytes
    }
}

extension ClientJSON {
    /// `{"key": "value", ...}` of string fields, for action answers like
    /// `{"status": "left room"}`.
    public static func object(_ fields: KeyValuePairs<String, String>) -> [UInt8] {
        var w = JSONWriter(capacity: 64)
        w.beginObject()
        for (key, value) in fields { w.field(key, value) }
        w.endObject()
        return w.bytes
    }

    /// A JSON array of already-encoded items.
    public static func array(_ items: [[UInt8]]) -> [UInt8] {
        var w = JSONWriter(capacity: 2 + items.reduce(0) { $0 + $1.count + 1 })
        w.beginArray()
        for item in items { w.raw(item) }
        w.endArray()
        return w.bytes
    }

    public static func reactions(_ reactions: [(emoji: String, users: [String])], to w: inout JSONWriter) {
        w.beginObject()
        for (emoji, users) in reactions {
            w.key(emoji)
            w.beginArray()
            for user in users { w.string(user) }
            w.endArray()
        }
        w.endObject()
    }

    /// The answer to `react`.
    public static func reactionAnswer(_ message: Message, added: Bool) -> [UInt8] {
        var w = JSONWriter(capacity: 128)
        w.beginObject()
        w.key("reactions"); reactions(message.reactions, to: &w)
        w.field("message", added ? "Reaction added" : "Reaction removed")
        w.endObject()
        return w.bytes
    }

    /// A room event carrying a whole message: `message_edited`, `message_deleted`.
    public static func messageChange(_ type: String, _ message: Message) -> [UInt8] {
        var w = JSONWriter(capacity: 768)
        w.beginObject()
        w.field("type", type)
        w.key("message"); write(message, to: &w)
        w.endObject()
        return w.bytes
    }

    /// The `reaction` room event.
    public static func reactionEvent(_ message: Message, user: String, emoji: String, added: Bool) -> [UInt8] {
        var w = JSONWriter(capacity: 192)
        w.beginObject()
        w.field("type", "reaction")
        w.field("message_id", message.id)
        w.field("user_id", user)
        w.field("emoji", emoji)
        w.field("action", added ? "add" : "remove")
        w.key("reactions"); reactions(message.reactions, to: &w)
        w.endObject()
        return w.bytes
    }

    /// `typing`, `user_joined`, `user_left` events: who, and for typing whether.
    public static func presenceEvent(_ type: String, user: User, isTyping: Bool? = nil) -> [UInt8] {
        var w = JSONWriter(capacity: 128)
        w.beginObject()
        w.field("type", type)
        w.field("user", user.email)
        w.field("user_id", user.id)
        if let isTyping { w.field("is_typing", isTyping) }
        w.endObject()
        return w.bytes
    }

    /// One entry of `typing_users`.
    public static func typingEntry(room: String, user: User, lastSeen: Timestamp) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.field("room", room)
        w.key("user"); write(user, to: &w)
        w.field("is_typing", true)
        w.field("last_seen", lastSeen)
        w.endObject()
        return w.bytes
    }

    /// One chat session.
    public static func session(id: String, type: String, isActive: Bool, lastPing: Timestamp, connectedAt: Timestamp, userAgent: String, ipAddress: String?) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.field("session_id", id)
        w.field("session_type", type)
        w.field("is_active", isActive)
        w.field("last_ping", lastPing)
        w.field("connected_at", connectedAt)
        w.field("user_agent", userAgent)
        w.field("ip_address", ipAddress)
        w.endObject()
        return w.bytes
    }
}

extension ClientJSON {
    /// The answer to `POST …/mute/`: `{"muted_until": ts or null, "muted": true}`.
    public static func muteAnswer(until: Timestamp?) -> [UInt8] {
        var w = JSONWriter(capacity: 64)
        w.beginObject()
        w.field("muted_until", until)
        w.field("muted", true)
        w.endObject()
        return w.bytes
    }
}
