/// Bodies of the bus commands, validated by the frontend (shape) and the
/// worker (domain). Codable because they are small and off the hot fan-out path.
public enum Requests {
    /// A page of a list: DRF page-number pagination, plus what is needed to
    /// build absolute `next`/`previous` links.
    public struct Page: Codable, Sendable, Equatable {
        public var page: Int
        public var pageSize: Int
        /// Absolute URL of the list without its query (`http://host/api/chat/rooms/`).
        public var url: String
        /// The request's query items other than `page`, kept in the links.
        public var query: [[String]]

        public init(page: Int, pageSize: Int, url: String, query: [[String]]) {
            self.page = page
            self.pageSize = pageSize
            self.url = url
            self.query = query
        }
    }

    public struct RoomList: Codable, Sendable {
        public var page: Page
        public var roomType: String?
        public var discover: Bool

        public init(page: Page, roomType: String?, discover: Bool) {
            self.page = page
            self.roomType = roomType
            self.discover = discover
        }
    }

    public struct RoomCreate: Codable, Sendable {
        public var id: String
        public var name: String?
        public var roomType: String
        public var participantIDs: [String]
        /// Takes only encrypted messages (issue 17).
        public var encrypted: Bool?

        public init(id: String, name: String?, roomType: String, participantIDs: [String], encrypted: Bool? = nil) {
            self.id = id
            self.name = name
            self.roomType = roomType
            self.participantIDs = participantIDs
            self.encrypted = encrypted
        }
    }

    /// `room.get` and `room.enter`.
    public struct RoomRef: Codable, Sendable {
        public var roomID: String
        public init(roomID: String) { self.roomID = roomID }
    }

    public struct MessageList: Codable, Sendable {
        public var roomID: String
        public var page: Page
        public var before: String?
        public var after: String?
        /// The viewer's device (`X-Device-Id`): its ciphertexts in an encrypted room.
        public var deviceID: String?

        public init(roomID: String, page: Page, before: String?, after: String?, deviceID: String? = nil) {
            self.roomID = roomID
            self.page = page
            self.before = before
            self.after = after
            self.deviceID = deviceID
        }
    }

    public struct MessageCreate: Codable, Sendable {
        /// Assigned by the frontend (UUIDv7), so a resent command stores once.
        public var id: String
        public var roomID: String
        public var content: String
        public var messageType: String
        public var replyTo: String?
        public var clientMsgID: String?
        /// An attachment the files worker stored: its content hash, the
        /// client's file name (kept as given, never a path) and size.
        public var file: StoredFile?
        /// An encrypted message's ciphertext for each device (issue 17).
        public var ciphertexts: [String: String]?

        public init(
            id: String, roomID: String, content: String, messageType: String, replyTo: String?, clientMsgID: String?, file: StoredFile? = nil,
            ciphertexts: [String: String]? = nil
        ) {
            self.id = id
            self.roomID = roomID
            self.content = content
            self.messageType = messageType
            self.replyTo = replyTo
            self.clientMsgID = clientMsgID
            self.file = file
            self.ciphertexts = ciphertexts
        }
    }
}

/// Rules on client input shared by REST and WebSocket (api-contract.md).
/// The frontend applies them to refuse early; the store applies them again,
/// because a worker never trusts the frontend for a domain rule.
public enum Validation {
    /// Members of a room, unless the configuration says otherwise (`maxParticipants`).
    public static let maxParticipants = 1000

    public static let maxClientMsgIDLength = 64
    /// Room and file names, in Unicode code points (api-contract.md "Messages").
    public static let maxNameLength = 255
    /// A reaction emoji, in UTF-8 bytes (the contract's bound): every single
    /// emoji and flag (tag flags such as England's are 28 bytes) and most ZWJ
    /// sequences (a family of four is 25); a skin-toned family of four (41) is not.
    public static let maxEmojiBytes = 32
    /// Distinct emoji one message may carry, so a message's reactions stay small
    /// in every list and event that carries it.
    public static let maxDistinctEmoji = 50

    /// Why a message's fields are refused, as DRF field errors; nil when valid.
    /// `content` length counts Unicode code points, as Python's `len` does.
    /// Clients send `text`, `image` or `file`; `image` and `file` only with an
    /// attachment (`hasAttachment`); `system` and `typing` are the server's own.
    public static func messageErrors(content: String, messageType: String, clientMsgID: String?, maxChars: Int, hasAttachment: Bool = false) -> [(field: String, message: String)]? {
        var errors: [(field: String, message: String)] = []
        switch MessageType(rawValue: messageType) {
        case .text?: break
        case .image?, .file?:
            if !hasAttachment { errors.append(("message_type", "A \"\(messageType)\" message needs a file_attachment.")) }
        case .encrypted?:
            if !content.isEmpty { errors.append(("content", Encryption.contentMessage)) }
        case .system?, .typing?, nil:
            errors.append(("message_type", "\"\(messageType)\" is not a valid choice."))
        }
        errors += contentErrors(content: content, messageType: messageType, maxChars: maxChars)
        // Code points, as Python's `len`: a `Character` count would let one
        // "character" of endless combining marks through.
        if let clientMsgID, hasNUL(clientMsgID) {
            errors.append(("client_msg_id", nulMessage))
        } else if let clientMsgID, clientMsgID.unicodeScalars.count > maxClientMsgIDLength {
            errors.append(("client_msg_id", "Ensure this field has no more than \(maxClientMsgIDLength) characters."))
        }
        return errors.isEmpty ? nil : errors
    }

    /// Why a message's content is refused (also on edit, where the type is the stored one).
    public static func contentErrors(content: String, messageType: String, maxChars: Int) -> [(field: String, message: String)] {
        if hasNUL(content) { return [("content", nulMessage)] }
        if messageType == MessageType.encrypted.rawValue, !content.isEmpty { return [("content", Encryption.contentMessage)] }
        if content.unicodeScalars.count > maxChars {
            return [("content", "Ensure this field has no more than \(maxChars) characters.")]
        }
        if messageType == "text" && content.allSatisfy(\.isWhitespace) {
            return [("content", "Message content cannot be empty.")]
        }
        return []
    }

    /// Why a room name is refused; nil when valid.
    public static func roomNameError(_ name: String?) -> String? {
        if let name, hasNUL(name) { return nulMessage }
        guard let name, name.unicodeScalars.count > maxNameLength else { return nil }
        return "Ensure this field has no more than \(maxNameLength) characters."
    }

    /// Why an uploaded file's name is refused (DRF's `FileField` wording); nil when valid.
    public static func fileNameError(_ name: String) -> String? {
        if hasNUL(name) { return nulMessage }
        let length = name.unicodeScalars.count
        guard length > maxNameLength else { return nil }
        return "Ensure this filename has at most \(maxNameLength) characters (it has \(length))."
    }

    /// DRF's answer to a NUL in a text field (its `ProhibitNullCharactersValidator`).
    /// PostgreSQL cannot store one in text (22021), so both engines refuse it up front.
    public static let nulMessage = "Null characters are not allowed."

    public static func hasNUL(_ text: String) -> Bool { text.utf8.contains(0) }

    /// Why a reaction emoji is refused (empty is the caller's own error); nil when valid.
    public static func emojiError(_ emoji: String) -> String? {
        guard emoji.utf8.count > maxEmojiBytes else { return nil }
        return "Ensure this field has no more than \(maxEmojiBytes) bytes."
    }
}

/// DRF `PageNumberPagination` links: absolute, keeping every other query item,
/// with items sorted by name as DRF's `replace_query_param` writes them.
public enum Pagination {
    public static func link(_ page: Requests.Page, to number: Int) -> String {
        var items = page.query.filter { $0.count == 2 && $0[0] != "page" }
        if number > 1 { items.append(["page", String(number)]) }
        items.sort { $0[0] < $1[0] }
        guard !items.isEmpty else { return page.url }
        return page.url + "?" + items.map { percentEncode($0[0]) + "=" + percentEncode($0[1]) }.joined(separator: "&")
    }

    /// Items before `page`, or nil when no such page can exist: a page or
    /// size below 1, or an offset past `Int64` (`page=9223372036854775807`).
    /// Every page computation goes through here, so no input can overflow.
    public static func offset(_ page: Requests.Page) -> Int64? {
        guard page.page >= 1, page.pageSize >= 1 else { return nil }
        let (offset, overflow) = Int64(page.page - 1).multipliedReportingOverflow(by: Int64(page.pageSize))
        return overflow ? nil : offset
    }

    /// `(next, previous)` for a page of `count` items in all.
    public static func links(_ page: Requests.Page, count: Int64) -> (next: String?, previous: String?) {
        guard let offset = offset(page) else { return (nil, nil) }
        let (end, overflow) = offset.addingReportingOverflow(Int64(page.pageSize))
        let next = !overflow && end < count ? link(page, to: page.page + 1) : nil
        let previous = page.page > 1 ? link(page, to: page.page - 1) : nil
        return (next, previous)
    }

    /// Whether `page` exists for `count` items (page 1 always does, as in DRF).
    public static func isValid(_ page: Requests.Page, count: Int64) -> Bool {
        guard let offset = offset(page) else { return false }
        return page.page == 1 || offset < count
    }

    static func percentEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPad(2)
            }
        }
        return out
    }
}

extension String {
    fileprivate func leftPad(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

extension Requests {
    /// `PATCH` of a room: a new name (when `setName`) and members to add.
    public struct RoomUpdate: Codable, Sendable {
        public var roomID: String
        public var setName: Bool
        public var name: String?
        public var participantIDs: [String]
        /// `post_permission` (`members` or `admins`), when the client sent one.
        public var postPermission: String?

        public init(roomID: String, setName: Bool, name: String?, participantIDs: [String], postPermission: String? = nil) {
            self.roomID = roomID
            self.setName = setName
            self.name = name
            self.participantIDs = participantIDs
            self.postPermission = postPermission
        }
    }

    /// A member of a room (`.../members/{user_id}/`), with the new role
    /// for a `PATCH` (as the client sent it; checked by the worker).
    public struct MemberRef: Codable, Sendable {
        public var roomID: String
        public var userID: String
        public var role: String?

        public init(roomID: String, userID: String, role: String? = nil) {
            (self.roomID, self.userID, self.role) = (roomID, userID, role)
        }
    }

    /// A room's members page, or its pins page.
    public struct RoomPage: Codable, Sendable {
        public var roomID: String
        public var page: Page

        public init(roomID: String, page: Page) {
            (self.roomID, self.page) = (roomID, page)
        }
    }

    /// `direct_message`: the other user's id as the client sent it (checked by the worker),
    /// and the id a new room would get.
    public struct RoomDirect: Codable, Sendable {
        public var userID: String?
        public var newRoomID: String

        public init(userID: String?, newRoomID: String) {
            self.userID = userID
            self.newRoomID = newRoomID
        }
    }

    public struct MessageRef: Codable, Sendable {
        public var roomID: String
        public var messageID: String
        /// The viewer's device (`X-Device-Id`), on a message's `GET`: its ciphertext.
        public var deviceID: String?

        public init(roomID: String, messageID: String) {
            self.roomID = roomID
            self.messageID = messageID
        }
    }

    public struct MessageUpdate: Codable, Sendable {
        public var roomID: String
        public var messageID: String
        public var content: String
        /// An encrypted message's new ciphertexts (issue 17).
        public var ciphertexts: [String: String]?

        public init(roomID: String, messageID: String, content: String, ciphertexts: [String: String]? = nil) {
            self.roomID = roomID
            self.messageID = messageID
            self.content = content
            self.ciphertexts = ciphertexts
        }
    }

    public struct MessageReact: Codable, Sendable {
        public var roomID: String
        public var messageID: String
        public var emoji: String
        public var add: Bool

        public init(roomID: String, messageID: String, emoji: String, add: Bool) {
            self.roomID = roomID
            self.messageID = messageID
            self.emoji = emoji
            self.add = add
        }
    }

    /// A WebSocket connection opened (a chat session) or changed.
    public struct Session: Codable, Sendable {
        public var sessionID: String
        public var roomID: String
        public var sessionType: String
        public var userAgent: String
        public var ipAddress: String?
        /// The frontend slot holding the connection, qualified by its host
        /// (`web-1/frontend.0`, `SessionReset.qualified`; stable across restarts).
        public var frontend: String?
        /// The client's device (`device_id`, issue 17): its sockets get that
        /// device's ciphertexts of an encrypted room.
        public var deviceID: String?

        public init(sessionID: String, roomID: String, sessionType: String, userAgent: String, ipAddress: String?, frontend: String? = nil, deviceID: String? = nil) {
            self.sessionID = sessionID
            self.roomID = roomID
            self.sessionType = sessionType
            self.userAgent = userAgent
            self.ipAddress = ipAddress
            self.frontend = frontend
            self.deviceID = deviceID
        }
    }

    /// `session.reset`: the slot, and when its new process started (µs).
    public struct SessionReset: Codable, Sendable {
        public var frontend: String
        public var startedAt: Int64

        public init(frontend: String, startedAt: Int64) {
            self.frontend = frontend
            self.startedAt = startedAt
        }

        /// A frontend slot's name in the sessions table: every frontend host
        /// has a `frontend.0`, and all share one database, so a slot's reset
        /// must not close another host's sessions.
        public static func qualified(host: String, slot: String) -> String { "\(host)/\(slot)" }

        /// The slot's name before sessions were qualified by host (`frontend.0`):
        /// rows a host wrote then are its own, closed by its reset too.
        public var bareSlot: String? {
            frontend.lastIndex(of: "/").map { String(frontend[frontend.index(after: $0)...]) }
        }
    }

    public struct TypingSet: Codable, Sendable {
        public var roomID: String
        public var isTyping: Bool
        /// The sending connection (`<frontend>/<connection>`), which does not get the event.
        public var connection: String

        public init(roomID: String, isTyping: Bool, connection: String) {
            self.roomID = roomID
            self.isTyping = isTyping
            self.connection = connection
        }
    }
}

extension Requests {
    /// A message or room search; the filters apply to messages.
    public struct Search: Codable, Sendable {
        public var query: String
        public var room: String?
        public var sender: String?
        public var after: Timestamp?
        public var before: Timestamp?

        public init(query: String, room: String? = nil, sender: String? = nil, after: Timestamp? = nil, before: Timestamp? = nil) {
            self.query = query
            self.room = room
            self.sender = sender
            self.after = after
            self.before = before
        }
    }
}

/// An attachment in the content-addressed store.
public struct StoredFile: Codable, Sendable, Equatable {
    /// SHA-256 of the bytes, hex: the blob's name under the files directory.
    public var hash: String
    public var name: String
    public var size: Int64

    public init(hash: String, name: String, size: Int64) {
        self.hash = hash
        self.name = name
        self.size = size
    }
}

extension Requests {
    /// An upload the frontend staged on disk, for the files worker to take.
    public struct FileStore: Codable, Sendable {
        /// The room the message will be in: only its participants may upload.
        public var roomID: String
        /// A file name the frontend chose under the staging directory.
        public var stagingName: String
        public var fileName: String
        public var messageType: String
        /// The upload's size, sent with `attachments: bus`: the files worker
        /// checks the file its chunks made is whole. Nil: not checked.
        public var size: Int64?

        public init(roomID: String, stagingName: String, fileName: String, messageType: String, size: Int64? = nil) {
            self.roomID = roomID
            self.stagingName = stagingName
            self.fileName = fileName
            self.messageType = messageType
            self.size = size
        }
    }

    /// Where a downloadable attachment is, as the files worker answers `file.open`.
    public struct FileLocation: Codable, Sendable {
        public var path: String
        public var name: String
        public var size: Int64
        public var contentType: String

        public init(path: String, name: String, size: Int64, contentType: String) {
            self.path = path
            self.name = name
            self.size = size
            self.contentType = contentType
        }
    }
}
