/// A user as the API shows it.
public struct User: Sendable, Hashable, Codable {
    public var id: String
    public var email: String
    public var displayName: String
    public var profilePicture: String?
    public var clerkProfileImageURL: String?

    public init(id: String, email: String, displayName: String, profilePicture: String? = nil, clerkProfileImageURL: String? = nil) {
        self.id = id
        self.email = email
        self.displayName = displayName
        self.profilePicture = profilePicture
        self.clerkProfileImageURL = clerkProfileImageURL
    }
}

/// The authenticated caller, as the frontend learnt it from a verified token.
/// It crosses the bus with every command, so workers provision users just in
/// time without a separate round trip.
public struct Identity: Sendable, Hashable, Codable {
    public var id: String
    public var sub: String
    public var email: String
    public var name: String?
    public var picture: String?

    /// A UUID `sub` is the user's id, and UUIDs are case-insensitive (RFC 9562
    /// §4): `ABC…` and `abc…` are one user, kept under the lowercase form so
    /// the stored subject does not depend on which token came first.
    public init(sub: String, email: String?, name: String?, picture: String?) {
        self.id = IDs.userID(forSubject: sub)
        self.sub = IDs.canonical(sub) ?? sub
        self.email = email ?? ""
        self.name = name
        self.picture = picture
    }

    /// The user record these claims describe (`display_name` falls back to the
    /// part of the email before `@`).
    public var user: User {
        let fallback = email.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        let display = (name?.isEmpty == false) ? name! : fallback
        return User(id: id, email: email, displayName: display, profilePicture: nil, clerkProfileImageURL: picture)
    }
}

public enum RoomType: String, Sendable, Codable, CaseIterable {
    case direct, group, project, `public`
}

public enum MessageType: String, Sendable, Codable, CaseIterable {
    case text, image, file, system, typing
    /// An encrypted room's message (issue 17): no content, a ciphertext per device.
    case encrypted
}

/// The newest non-deleted message of a room, as the room list shows it.
public struct MessageSummary: Sendable, Hashable {
    public var id: String
    public var content: String
    public var sender: User
    public var timestamp: Timestamp

    public init(id: String, content: String, sender: User, timestamp: Timestamp) {
        self.id = id
        self.content = content
        self.sender = sender
        self.timestamp = timestamp
    }
}

/// A room as one user sees it (`unread_count`, `other_user` depend on the viewer).
public struct Room: Sendable, Hashable {
    public var id: String
    public var name: String?
    public var roomType: RoomType
    public var participants: [User]
    public var createdBy: User?
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
    public var isActive: Bool
    public var lastMessage: MessageSummary?
    public var unreadCount: Int64
    public var otherUser: User?
    /// The viewer's role (`owner`, `admin`, `member`), nil when not a member.
    public var myRole: String?
    /// `members` or `admins` (an announcement room).
    public var postPermission: String
    /// The viewer's preferences (issue 16): a mute in force now (an expired
    /// timed mute reads false), its end (nil: until unmuted), the
    /// notification level, and the unread messages that mention the viewer.
    public var muted = false
    public var mutedUntil: Timestamp?
    public var notificationLevel = "all"
    public var unreadMentions: Int64 = 0
    /// Takes only encrypted messages (issue 17); set at creation, never changed.
    public var encrypted = false

    public init(
        id: String, name: String?, roomType: RoomType, participants: [User], createdBy: User?,
        createdAt: Timestamp, updatedAt: Timestamp, isActive: Bool, lastMessage: MessageSummary?,
        unreadCount: Int64, otherUser: User?, myRole: String? = nil, postPermission: String = "members"
    ) {
        self.myRole = myRole
        self.postPermission = postPermission
        self.id = id
        self.name = name
        self.roomType = roomType
        self.participants = participants
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.isActive = isActive
        self.lastMessage = lastMessage
        self.unreadCount = unreadCount
        self.otherUser = otherUser
    }
}

/// A message with everything the API shows about it.
public struct Message: Sendable, Hashable {
    public var id: String
    public var roomID: String
    /// Position in the room: strictly increasing, no gaps guaranteed.
    public var seq: Int64
    public var sender: User
    public var content: String
    public var messageType: MessageType
    public var fileAttachment: String?
    public var fileName: String?
    public var fileSize: Int64?
    public var timestamp: Timestamp
    public var editedAt: Timestamp?
    public var isDeleted: Bool
    public var replyTo: String?
    /// Emoji → user ids, in first-reaction order.
    public var reactions: [(emoji: String, users: [String])]
    public var readBy: [User]
    public var clientMsgID: String?
    /// Who pinned it (read from the row as an id-only user, then filled in)
    /// and when; both nil when it is not pinned.
    public var pinnedBy: User?
    public var pinnedAt: Timestamp?
    /// Ids of the users the message mentions, parsed when it was sent (`Mentions`).
    public var mentions: [String] = []
    /// Members of the room who blocked the sender when it was stored: its
    /// event skips their sockets. Set by the store on a new message only;
    /// never in the client's JSON.
    public var hiddenFrom: [String] = []
    /// An encrypted message's ciphertext for the viewer's device (issue 17);
    /// nil when the viewer named no device, or one it was not sent to.
    public var ciphertext: String?

    public init(
        id: String, roomID: String, seq: Int64, sender: User, content: String, messageType: MessageType,
        fileAttachment: String? = nil, fileName: String? = nil, fileSize: Int64? = nil, timestamp: Timestamp,
        editedAt: Timestamp? = nil, isDeleted: Bool = false, replyTo: String? = nil,
        reactions: [(emoji: String, users: [String])] = [], readBy: [User] = [], clientMsgID: String? = nil,
        pinnedBy: User? = nil, pinnedAt: Timestamp? = nil
    ) {
        self.pinnedBy = pinnedBy
        self.pinnedAt = pinnedAt
        self.id = id
        self.roomID = roomID
        self.seq = seq
        self.sender = sender
        self.content = content
        self.messageType = messageType
        self.fileAttachment = fileAttachment
        self.fileName = fileName
        self.fileSize = fileSize
        self.timestamp = timestamp
        self.editedAt = editedAt
        self.isDeleted = isDeleted
        self.replyTo = replyTo
        self.reactions = reactions
        self.readBy = readBy
        self.clientMsgID = clientMsgID
    }

    public static func == (a: Message, b: Message) -> Bool {
        a.id == b.id && a.seq == b.seq && a.content == b.content && a.isDeleted == b.isDeleted
            && a.editedAt == b.editedAt && a.reactions.map(\.emoji) == b.reactions.map(\.emoji)
            && a.reactions.map(\.users) == b.reactions.map(\.users) && a.readBy == b.readBy
            && a.pinnedAt == b.pinnedAt
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(id) }
}
