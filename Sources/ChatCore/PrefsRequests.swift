/// Command bodies of mute, notification level and the mentions feed (issue 16).
extension Requests {
    /// `room.mute` (`until` in microseconds; nil: until unmuted) and `room.unmute` (`until` unused).
    public struct RoomMute: Codable, Sendable {
        public var roomID: String
        public var until: Int64?

        public init(roomID: String, until: Int64?) {
            (self.roomID, self.until) = (roomID, until)
        }
    }

    /// `room.notifications`: one of `NotificationLevel.all`.
    public struct RoomNotifications: Codable, Sendable {
        public var roomID: String
        public var level: String

        public init(roomID: String, level: String) {
            (self.roomID, self.level) = (roomID, level)
        }
    }

    /// `mention.list`: a page of the caller's mentions, newest first.
    public struct MentionList: Codable, Sendable {
        public var page: Page

        public init(page: Page) { self.page = page }
    }
}

/// A member's notification level for a room; `all` unless they chose.
public enum NotificationLevel {
    public static let all = ["all", "mentions", "none"]
    public static let `default` = "all"
}
