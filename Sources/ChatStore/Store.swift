import ChatCore
import Foundation
import GRDB

/// Domain operations on the main database. Every function takes a `Database`
/// so a worker can run many commands in one short transaction. List queries
/// issue a fixed number of statements whatever the page size (no N+1).
public enum Store {
    // MARK: Users

    /// Creates or refreshes the user a verified token describes.
    public static func upsert(_ identity: Identity, in db: Database) throws {
        let user = identity.user
        try db.cachedStatement(sql: """
            INSERT INTO users (id, sub, email, display_name, clerk_profile_image_url, created_at)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET
                email = excluded.email, display_name = excluded.display_name,
                clerk_profile_image_url = excluded.clerk_profile_image_url
            WHERE email IS NOT excluded.email OR display_name IS NOT excluded.display_name
                OR clerk_profile_image_url IS NOT excluded.clerk_profile_image_url
            """).execute(arguments: [user.id, IDs.canonical(identity.sub) ?? identity.sub, user.email, user.displayName, user.clerkProfileImageURL, Timestamp.now().micros])
    }

    /// A user's columns, named apart from the joined table's own (`user_id`,
    /// not `id`), for `user(_:)` to read by name.
    static let userColumns = """
        u.id AS user_id, u.email AS user_email, u.display_name AS user_display_name,
        u.profile_picture AS user_profile_picture, u.clerk_profile_image_url AS user_clerk_profile_image_url
        """

    /// The user a row selected with `userColumns`.
    static func user(_ row: Row) -> User {
        User(
            id: row["user_id"], email: row["user_email"], displayName: row["user_display_name"],
            profilePicture: row["user_profile_picture"], clerkProfileImageURL: row["user_clerk_profile_image_url"]
        )
    }

    static func users(_ ids: some Collection<String>, in db: Database) throws -> [String: User] {
        guard !ids.isEmpty else { return [:] }
        var users: [String: User] = [:]
        try Row.fetchCursor(db.cachedStatement(sql: "SELECT \(userColumns) FROM users u WHERE u.id IN \(idList)"), arguments: [jsonArray(ids)])
            .forEach { row in
                let user = user(row)
                users[user.id] = user
            }
        return users
    }

    /// A list of ids bound as one JSON array (`[jsonArray(ids)]`): the SQL
    /// text is the same for any number of ids, so the statement is prepared
    /// once per connection and cached. Parsing the SQL of an `IN (?, ?, …)`
    /// of each page's length was a third of a room list's CPU in the store.
    static let idList = "(SELECT value FROM json_each(?))"

    static func jsonArray(_ ids: some Sequence<String>) -> String {
        var w = JSONWriter(capacity: 64)
        w.beginArray()
        for id in ids { w.string(id) }
        w.endArray()
        return String(decoding: w.bytes, as: UTF8.self)
    }

    static func placeholders(_ count: Int) -> String {
        Array(repeating: "?", count: count).joined(separator: ",")
    }

    // MARK: Rooms

    /// A `rooms` row as `roomColumns` selects it.
    struct RoomRow: FetchableRecord {
        var id: String
        var name: String?
        var roomType: RoomType
        var createdBy: String?
        var createdAt: Int64
        var updatedAt: Int64
        var isActive: Bool
        var directUser1: String?
        var directUser2: String?

        init(row: Row) {
            id = row["id"]
            name = row["name"]
            roomType = RoomType(rawValue: row["room_type"]) ?? .group
            createdBy = row["created_by"]
            createdAt = row["created_at"]
            updatedAt = row["updated_at"]
            isActive = row["is_active"]
            directUser1 = row["direct_user1"]
            directUser2 = row["direct_user2"]
        }
    }

    static let roomColumns = "r.id, r.name, r.room_type, r.created_by, r.created_at, r.updated_at, r.is_active, r.direct_user1, r.direct_user2"

    /// What the access checks need to know about a room and the caller.
    public struct RoomInfo: Sendable, Equatable {
        public var id: String
        public var roomType: RoomType
        public var isActive: Bool
        public var createdBy: String?
        public var isParticipant: Bool
        /// The caller's role; nil when not a member.
        public var role: MemberRole?
        public var postPermission: PostPermission

        package init(
            id: String, roomType: RoomType, isActive: Bool, createdBy: String?, isParticipant: Bool,
            role: MemberRole? = nil, postPermission: PostPermission = .members
        ) {
            (self.id, self.roomType, self.isActive, self.createdBy, self.isParticipant) = (id, roomType, isActive, createdBy, isParticipant)
            // A member whose role reads as nothing known acts as a member.
            self.role = isParticipant ? (role ?? .member) : nil
            self.postPermission = postPermission
        }
    }

    public static let noAccess = "You don't have access to this room"

    /// The room and the caller's relation to it, or nil when it does not exist.
    public static func roomInfo(_ roomID: String, user userID: String, in db: Database) throws -> RoomInfo? {
        try first(db.cachedStatement(sql: """
            SELECT r.room_type, r.is_active, r.created_by, r.post_permission,
                   (SELECT p.role FROM room_participants p WHERE p.room_id = r.id AND p.user_id = ?) AS role
            FROM rooms r WHERE r.id = ?
            """), arguments: [userID, roomID]) { roomInfo($0, id: roomID) }
    }

    /// A `RoomInfo` from a row with the rooms columns and `role`.
    static func roomInfo(_ row: Row, id roomID: String) -> RoomInfo {
        let role: String? = row["role"]
        return RoomInfo(
            id: roomID, roomType: RoomType(rawValue: row["room_type"]) ?? .group, isActive: row["is_active"],
            createdBy: row["created_by"], isParticipant: role != nil, role: role.flatMap(MemberRole.init(rawValue:)),
            postPermission: PostPermission(rawValue: row["post_permission"]) ?? .members
        )
    }

    /// What storing message `id` in `roomID` needs to know, in one statement
    /// (a message's write is the hot path; each statement costs a few µs):
    /// the room and the sender's role (`roomInfo`), whether the id is stored
    /// already (a resend), and the members who blocked the sender
    /// (`blockers(of:room:)`, through the `user_blocks_blocked` index). Nil
    /// when the room does not exist.
    static func posting(_ id: String, room roomID: String, sender: String, in db: Database) throws -> (info: RoomInfo, stored: Bool, blockers: [String])? {
        try first(db.cachedStatement(sql: """
            SELECT r.room_type, r.is_active, r.created_by, r.post_permission,
                   (SELECT p.role FROM room_participants p WHERE p.room_id = r.id AND p.user_id = ?1) AS role,
                   EXISTS (SELECT 1 FROM messages WHERE id = ?3) AS stored,
                   (SELECT group_concat(b.blocker_id, ' ') FROM user_blocks b JOIN room_participants p ON p.room_id = r.id AND p.user_id = b.blocker_id
                    WHERE b.blocked_id = ?1) AS blockers
            FROM rooms r WHERE r.id = ?2
            """), arguments: [sender, roomID, id]) { row in
            // User ids are UUIDs (`IDs.userID`): a space never occurs in one.
            let blockers = (row["blockers"] as String?).map { $0.split(separator: " ").map(String.init) } ?? []
            return (roomInfo(row, id: roomID), row["stored"], blockers)
        }
    }

    /// The first row of `statement`, read where it lies: `Row.fetchOne`
    /// would copy it first, and a copied row looks its columns up by
    /// comparing lowercased names.
    static func first<T>(_ statement: Statement, arguments: StatementArguments, _ read: (Row) throws -> T) throws -> T? {
        let cursor = try Row.fetchCursor(statement, arguments: arguments)
        // The row is the statement's: a cursor released early resets it.
        return try withExtendedLifetime(cursor) { try cursor.next().map(read) }
    }

    /// The room, if the caller may use it: 404 when it does not exist, 403 when
    /// the caller is not a participant (public rooms pass when `allowPublic`).
    @discardableResult
    public static func requireRoom(_ roomID: String, user userID: String, allowPublic: Bool = false, in db: Database) throws -> RoomInfo {
        try admit(roomInfo(roomID, user: userID, in: db), allowPublic: allowPublic)
    }

    /// `requireRoom`'s rule on a room already read (nil: it does not exist),
    /// for every engine and every statement that reads a room's access columns.
    public static func admit(_ info: RoomInfo?, allowPublic: Bool) throws -> RoomInfo {
        guard let info else { throw StoreError.notFound("Room not found") }
        if info.isParticipant || (allowPublic && info.roomType == .public) { return info }
        throw StoreError.forbidden(noAccess)
    }

    /// Checks a user may read a room (participants, and anyone for public rooms).
    public static func requireReadable(room roomID: String, user userID: String, in db: Database) throws {
        try requireRoom(roomID, user: userID, allowPublic: true, in: db)
    }

    /// The WebSocket handshake's check: participants of an active room enter;
    /// a public room is joined on entry.
    public static func enter(room roomID: String, user userID: String, maxParticipants: Int = Validation.maxParticipants, in db: Database) throws {
        guard let info = try roomInfo(roomID, user: userID, in: db), info.isActive else { throw StoreError.notFound("Room not found") }
        if info.isParticipant { return }
        guard info.roomType == .public else { throw StoreError.forbidden(noAccess) }
        try addParticipants(room: roomID, users: [userID], limit: maxParticipants, in: db)
    }

    /// Adds members. A member who comes back (left, then rejoined) gets the
    /// unread counters recomputed from the messages, once.
    /// Adds members; past `limit` members in all, nothing is added (`400`).
    static func addParticipants(room roomID: String, users: [String], limit: Int = Validation.maxParticipants, in db: Database) throws {
        let present = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM room_participants WHERE room_id = ?", arguments: [roomID]) ?? 0
        // An upper bound on the new count (some may be members already): exact when it matters, at the limit.
        if present + users.count > limit {
            let already = try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM room_participants WHERE room_id = ? AND user_id IN (\(placeholders(users.count)))
                """, arguments: StatementArguments([roomID] + users)) ?? 0
            guard present + users.count - already <= limit else {
                throw StoreError.badRequest([("participant_ids", "A room has at most \(limit) members.")])
            }
        }
        let now = Timestamp.now().micros
        let statement = try db.cachedStatement(sql: """
            INSERT OR IGNORE INTO room_participants (room_id, user_id, joined_at, sent_count, read_count, mention_count, mention_read_count)
            SELECT ?1, ?2, ?3,
                (SELECT COUNT(*) FROM messages m WHERE m.room_id = ?1 AND m.sender_id = ?2 AND m.is_deleted = 0),
                (SELECT COUNT(*) FROM message_read_status s JOIN messages m ON m.id = s.message_id
                 WHERE s.user_id = ?2 AND m.room_id = ?1 AND m.is_deleted = 0 AND m.sender_id != ?2),
                -- a deleted message's mentions are gone (forgetMentions)
                (SELECT COUNT(*) FROM mentions mn WHERE mn.user_id = ?2 AND mn.room_id = ?1),
                (SELECT COUNT(*) FROM mentions mn JOIN message_read_status s ON s.message_id = mn.message_id AND s.user_id = ?2
                 WHERE mn.user_id = ?2 AND mn.room_id = ?1)
            """)
        for user in users {
            if try hasBlocks(user, in: db) { try db.execute(sql: hideBlockedBeforeJoin, arguments: [user, roomID]) }
            try statement.execute(arguments: [roomID, user, now])
        }
    }

    /// Creates a group, project or public room; the creator is a participant.
    public static func createRoom(_ request: Requests.RoomCreate, creator: String, maxParticipants: Int = Validation.maxParticipants, in db: Database) throws -> Room {
        var errors: [(field: String, message: String)] = []
        let type = RoomType(rawValue: request.roomType)
        if type == nil || type == .direct {
            errors.append(("room_type", "\"\(request.roomType)\" is not a valid choice."))
        }
        if let error = Validation.roomNameError(request.name) { errors.append(("name", error)) }
        var seen = Set<String>()
        let ids = request.participantIDs.filter { seen.insert($0).inserted }
        let known = try users(ids, in: db)
        let missing = ids.filter { known[$0] == nil }.sorted()
        for id in missing { errors.append(("participant_ids", "User \(id) does not exist.")) }
        if !errors.isEmpty {
            // DRF lists every missing id under one key.
            var merged: [(field: String, message: String)] = []
            for (field, message) in errors where !merged.contains(where: { $0.field == field }) { merged.append((field, message)) }
            throw StoreError.badRequest(merged)
        }
        if try Row.fetchOne(db, sql: "SELECT 1 FROM rooms WHERE id = ?", arguments: [request.id]) == nil {
            let now = Timestamp.now().micros
            try db.execute(
                sql: "INSERT INTO rooms (id, name, room_type, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [request.id, request.name, request.roomType, creator, now, now]
            )
            try addParticipants(room: request.id, users: [creator] + ids, limit: maxParticipants, in: db)
            try setRole(.owner, room: request.id, user: creator, in: db)
        }
        guard let room = try rooms(ids: [request.id], viewer: creator, in: db).first else { throw StoreError.notFound() }
        return room
    }

    /// One room as the viewer sees it, after the access check.
    public static func room(_ roomID: String, viewer: String, in db: Database) throws -> Room {
        try requireReadable(room: roomID, user: viewer, in: db)
        guard let room = try rooms(ids: [roomID], viewer: viewer, in: db).first else { throw StoreError.notFound() }
        return room
    }

    /// A page of the viewer's active rooms, newest activity first.
    public static func roomPage(_ request: Requests.RoomList, viewer: String, in db: Database) throws -> (count: Int64, rooms: [Room]) {
        var filter = "r.is_active = 1"
        var arguments: StatementArguments = []
        if request.discover {
            filter += " AND r.room_type = 'public' AND NOT EXISTS (SELECT 1 FROM room_participants p WHERE p.room_id = r.id AND p.user_id = ?)"
            arguments += [viewer]
        } else {
            filter += " AND r.id IN (SELECT room_id FROM room_participants WHERE user_id = ?)"
            arguments += [viewer]
            if let type = request.roomType {
                filter += " AND r.room_type = ?"
                arguments += [type]
            }
        }
        // `filter` is one of four texts: each statement is prepared once.
        let count = try Int64.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM rooms r WHERE \(filter)"), arguments: arguments) ?? 0
        guard Pagination.isValid(request.page, count: count), let offset = Pagination.offset(request.page) else { throw StoreError.invalidPage }
        let ids = try String.fetchAll(
            db.cachedStatement(sql: "SELECT r.id FROM rooms r WHERE \(filter) ORDER BY r.updated_at DESC, r.id LIMIT ? OFFSET ?"),
            arguments: arguments + [request.page.pageSize, offset]
        )
        return (count, try rooms(ids: ids, viewer: viewer, in: db))
    }

    /// Rooms by id, in the given order, with participants, last message,
    /// unread count and other user: five statements for any number of rooms.
    static func rooms(ids: [String], viewer: String, in db: Database) throws -> [Room] {
        guard !ids.isEmpty else { return [] }
        let idArgs: StatementArguments = [jsonArray(ids)]
        let rows = try RoomRow.fetchAll(db.cachedStatement(sql: "SELECT \(roomColumns) FROM rooms r WHERE r.id IN \(idList)"), arguments: idArgs)
        var participants: [String: [User]] = [:]
        try Row.fetchCursor(db.cachedStatement(sql: """
            SELECT p.room_id, \(userColumns) FROM room_participants p JOIN users u ON u.id = p.user_id
            WHERE p.room_id IN \(idList) ORDER BY p.room_id, p.joined_at, u.id
            """), arguments: idArgs).forEach { row in
            participants[row["room_id"], default: []].append(user(row))
        }
        var lastMessages: [String: MessageSummary] = [:]
        try Row.fetchCursor(db.cachedStatement(sql: """
            SELECT m.room_id, m.id, m.content, m.timestamp, \(userColumns)
            FROM messages m JOIN users u ON u.id = m.sender_id
            WHERE m.id IN (
                SELECT (SELECT id FROM messages WHERE room_id = r.id AND is_deleted = 0 ORDER BY seq DESC LIMIT 1)
                FROM rooms r WHERE r.id IN \(idList))
            """), arguments: idArgs).forEach { row in
            lastMessages[row["room_id"]] = MessageSummary(
                id: row["id"], content: row["content"], sender: user(row), timestamp: Timestamp(micros: row["timestamp"])
            )
        }
        try hideBlockedLastMessages(&lastMessages, viewer: viewer, in: db)
        // Unread = the room's live messages - the viewer's own live ones -
        // others' live ones the viewer read: three counters kept on write
        // (Store.adjustCounts), so the cost does not grow with the room.
        // The viewer's preferences and unread mentions come with it (issue 16).
        var unread: [String: Int64] = [:]
        var roles: [String: (role: String?, posting: String)] = [:]
        var prefs: [String: Prefs] = [:]
        try Row.fetchCursor(db.cachedStatement(sql: """
            SELECT r.id, r.live_count - COALESCE(p.sent_count, 0) - COALESCE(p.read_count, 0) AS unread, r.post_permission, p.role,
                   p.muted, p.muted_until, p.notification_level, p.mention_count - p.mention_read_count AS unread_mentions
            FROM rooms r LEFT JOIN room_participants p ON p.room_id = r.id AND p.user_id = ?
            WHERE r.id IN \(idList)
            """), arguments: [viewer] + idArgs).forEach { row in
            unread[row["id"]] = max(0, row["unread"])
            roles[row["id"]] = (row["role"], row["post_permission"])
            prefs[row["id"]] = Prefs(
                muted: (row["muted"] as Bool?) ?? false, mutedUntil: row["muted_until"], level: row["notification_level"],
                unreadMentions: row["unread_mentions"])
        }
        let extraIDs = Set(rows.flatMap { [$0.createdBy, $0.directUser1, $0.directUser2].compactMap { $0 } })
        let extra = try users(extraIDs, in: db)
        let byID = Dictionary(rows.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        return ids.compactMap { id in
            guard let r = byID[id] else { return nil }
            var other: User?
            if r.roomType == .direct {
                if r.directUser1 == viewer { other = r.directUser2.flatMap { extra[$0] } }
                else if r.directUser2 == viewer { other = r.directUser1.flatMap { extra[$0] } }
            }
            var room = Room(
                id: r.id, name: r.name, roomType: r.roomType, participants: participants[r.id] ?? [],
                createdBy: r.createdBy.flatMap { extra[$0] }, createdAt: Timestamp(micros: r.createdAt),
                updatedAt: Timestamp(micros: r.updatedAt), isActive: r.isActive, lastMessage: lastMessages[r.id],
                unreadCount: unread[r.id] ?? 0, otherUser: other,
                myRole: roles[r.id]?.role, postPermission: roles[r.id]?.posting ?? PostPermission.members.rawValue
            )
            prefs[r.id]?.apply(to: &room)
            return room
        }
    }

    // MARK: Messages

    static let messageColumns = """
        m.id, m.room_id, m.seq, m.content, m.message_type, m.file_attachment, m.file_name, m.file_size,
        m.timestamp, m.edited_at, m.is_deleted, m.reply_to, m.reactions, m.client_msg_id, m.pinned_by, m.pinned_at, m.mentions, \(userColumns)
        """

    /// The message a row selected with `messageColumns`.
    static func message(_ row: Row) -> Message {
        var message = Message(
            id: row["id"], roomID: row["room_id"], seq: row["seq"], sender: user(row), content: row["content"],
            messageType: MessageType(rawValue: row["message_type"]) ?? .text, fileAttachment: row["file_attachment"],
            fileName: row["file_name"], fileSize: row["file_size"], timestamp: Timestamp(micros: row["timestamp"]),
            editedAt: (row["edited_at"] as Int64?).map(Timestamp.init(micros:)), isDeleted: row["is_deleted"],
            replyTo: row["reply_to"], reactions: decodeReactions(row["reactions"]), clientMsgID: row["client_msg_id"],
            pinnedBy: (row["pinned_by"] as String?).map(pinner), pinnedAt: (row["pinned_at"] as Int64?).map(Timestamp.init(micros:))
        )
        message.mentions = decodeMentions(row["mentions"])
        return message
    }

    package static func decodeReactions(_ text: String) -> [(emoji: String, users: [String])] {
        guard text != "[]", let array = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[Any]] else { return [] }
        return array.compactMap { pair in
            guard pair.count == 2, let emoji = pair[0] as? String, let users = pair[1] as? [String] else { return nil }
            return (emoji, users)
        }
    }

    /// The seq of a message of this room, for `before`/`after` cursors.
    static func cursorSeq(_ messageID: String, room roomID: String, field: String, in db: Database) throws -> Int64 {
        guard let seq = try Int64.fetchOne(db.cachedStatement(sql: "SELECT seq FROM messages WHERE id = ? AND room_id = ?"), arguments: [messageID, roomID]) else {
            throw StoreError.badRequest([(field, "Not a message of this room.")])
        }
        return seq
    }

    /// A page of a room's messages, newest first, with `read_by` filled in.
    public static func messagePage(_ request: Requests.MessageList, viewer: String, in db: Database) throws -> (count: Int64, messages: [Message]) {
        try requireReadable(room: request.roomID, user: viewer, in: db)
        // A room's seqs are exactly 1...last_seq (each insert takes the next
        // one in its own transaction; messages are never removed), so the
        // filtered set is the seq range (after, before) and its size is
        // arithmetic: no COUNT over the room, no OFFSET scan.
        let lastSeq = try Int64.fetchOne(db.cachedStatement(sql: "SELECT last_seq FROM rooms WHERE id = ?"), arguments: [request.roomID]) ?? 0
        var upper = lastSeq  // newest seq in the set
        var lower: Int64 = 0  // seqs in the set are > lower
        if let before = request.before { upper = min(upper, try cursorSeq(before, room: request.roomID, field: "before", in: db) - 1) }
        if let after = request.after { lower = max(lower, try cursorSeq(after, room: request.roomID, field: "after", in: db)) }
        if try hasBlocks(viewer, in: db) {
            return try filteredMessagePage(request, viewer: viewer, upper: upper, lower: lower, in: db)
        }
        let count = max(0, upper - lower)
        guard Pagination.isValid(request.page, count: count), let offset = Pagination.offset(request.page) else { throw StoreError.invalidPage }
        // A valid page starts inside the set (offset < count), so neither subtraction can overflow.
        let top = upper - offset
        let bottom = max(lower, top - Int64(request.page.pageSize))
        var messages = try Array(Row.fetchCursor(db.cachedStatement(sql: """
            SELECT \(messageColumns) FROM messages m JOIN users u ON u.id = m.sender_id
            WHERE m.room_id = ? AND m.seq <= ? AND m.seq > ? ORDER BY m.seq DESC
            """), arguments: [request.roomID, top, bottom]).map(message))
        try fillReadBy(&messages, in: db)
        return (count, messages)
    }

    static func fillReadBy(_ messages: inout [Message], in db: Database) throws {
        guard !messages.isEmpty else { return }
        var readers: [String: [User]] = [:]
        try Row.fetchCursor(db.cachedStatement(sql: """
            SELECT s.message_id, \(userColumns) FROM message_read_status s JOIN users u ON u.id = s.user_id
            WHERE s.message_id IN \(idList) AND s.read_at > 0 ORDER BY s.read_at, u.id
            """), arguments: [jsonArray(messages.map(\.id))]).forEach { row in
            readers[row["message_id"], default: []].append(user(row))
        }
        for index in messages.indices { messages[index].readBy = readers[messages[index].id] ?? [] }
        try fillPinnedBy(&messages) { try users($0, in: db) }
    }

    static func fetchMessage(id: String, in db: Database) throws -> Message? {
        guard let found = try first(db.cachedStatement(sql: "SELECT \(messageColumns) FROM messages m JOIN users u ON u.id = m.sender_id WHERE m.id = ?"), arguments: [id], message) else { return nil }
        var messages = [found]
        try fillReadBy(&messages, in: db)
        return messages[0]
    }

    /// What storing a message did.
    public enum CreateOutcome: Sendable {
        /// Stored now.
        case created(Message)
        /// This exact command was stored before (a resend): the stored message.
        case resent(Message)
        /// Another message with the same `client_msg_id` exists: the original.
        case duplicate(Message)
    }

    /// Stores one message, idempotently: the frontend-assigned id and the
    /// client's `client_msg_id` both make a repeat return the stored original.
    public static func createMessage(_ request: Requests.MessageCreate, sender: User, maxChars: Int, in db: Database) throws -> CreateOutcome {
        // A resend returns the stored message before any check (the room may
        // have changed since); a room that does not exist holds none, but the
        // probe stays exact for that rare answer.
        let found = try posting(request.id, room: request.roomID, sender: sender.id, in: db)
        if found?.stored ?? true, let existing = try fetchMessage(id: request.id, in: db) { return .resent(existing) }
        let room = try admit(found?.info, allowPublic: false)
        try Permissions.authorizePost(info: room, user: sender.id)
        guard room.isActive else { throw StoreError.badRequest(error: "This room is no longer active") }
        if room.roomType == .direct, try isBlockedDirect(room: request.roomID, sender: sender.id, in: db) {
            throw StoreError.forbidden(blockedDirect)
        }
        if let errors = Validation.messageErrors(content: request.content, messageType: request.messageType, clientMsgID: request.clientMsgID, maxChars: maxChars, hasAttachment: request.file != nil) {
            throw StoreError.badRequest(errors)
        }
        if let name = request.file?.name, let error = Validation.fileNameError(name) {
            throw StoreError.badRequest([("file_attachment", error)])
        }
        if let clientMsgID = request.clientMsgID,
            let originalID = try String.fetchOne(db.cachedStatement(sql: "SELECT id FROM messages WHERE room_id = ? AND sender_id = ? AND client_msg_id = ?"), arguments: [request.roomID, sender.id, clientMsgID]),
            let original = try fetchMessage(id: originalID, in: db) {
            return .duplicate(original)
        }
        if let replyTo = request.replyTo {
            let sameRoom = try Row.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM messages WHERE id = ? AND room_id = ?"), arguments: [replyTo, request.roomID]) != nil
            if !sameRoom { throw StoreError.badRequest([("reply_to", "reply_to must reference a message in this room")]) }
        }
        let now = Timestamp.now()
        guard let seq = try Int64.fetchOne(db.cachedStatement(sql: "UPDATE rooms SET last_seq = last_seq + 1, live_count = live_count + 1, updated_at = MAX(updated_at + 1, ?) WHERE id = ? RETURNING last_seq"),
            arguments: [now.micros, request.roomID]) else { throw StoreError.notFound() }
        try db.cachedStatement(sql: """
            INSERT INTO messages (id, room_id, seq, sender_id, content, message_type, timestamp, updated_at, reply_to, client_msg_id,
                                  file_attachment, file_name, file_size)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [request.id, request.roomID, seq, sender.id, request.content, request.messageType, now.micros, now.micros,
                                     request.replyTo, request.clientMsgID, request.file?.hash, request.file?.name, request.file?.size])
        try db.cachedStatement(sql: "UPDATE room_participants SET sent_count = sent_count + 1 WHERE room_id = ? AND user_id = ?")
            .execute(arguments: [request.roomID, sender.id])
        var message = Message(
            id: request.id, roomID: request.roomID, seq: seq, sender: sender, content: request.content,
            messageType: MessageType(rawValue: request.messageType) ?? .text, fileAttachment: request.file?.hash,
            fileName: request.file?.name, fileSize: request.file?.size, timestamp: now, replyTo: request.replyTo,
            clientMsgID: request.clientMsgID
        )
        message.hiddenFrom = found?.blockers ?? []
        try hide(request.id, room: request.roomID, from: message.hiddenFrom, in: db)
        message.mentions = try recordMentions(
            message: request.id, room: request.roomID, sender: sender.id, content: request.content, at: now.micros,
            except: message.hiddenFrom, in: db)
        return .created(message)
    }
}

extension Store {
    public static func user(id: String, in db: Database) throws -> User? {
        try users([id], in: db)[id]
    }
}
