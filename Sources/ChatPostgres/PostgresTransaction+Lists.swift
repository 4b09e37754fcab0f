import ChatCore
import ChatStore
import Foundation
import PostgresNIO

/// The list reads: a fixed number of statements whatever the page size.
extension PostgresTransaction {
    /// Rooms by id, in the given order, with participants, last message,
    /// unread count and other user: five statements for any number of rooms.
    func rooms(ids: [String], viewer: String) throws -> [Room] {
        guard !ids.isEmpty else { return [] }
        let rows = try execute(Statements.Rooms(values: [.texts(ids), .text(viewer)]))
        var participants: [String: [User]] = [:]
        for row in try execute(Statements.RoomParticipants(values: [.texts(ids)])) {
            participants[try row.get("room_id"), default: []].append(try Self.user(row))
        }
        var lastMessages: [String: MessageSummary] = [:]
        for row in try execute(Statements.LastMessages(values: [.texts(ids)])) {
            lastMessages[try row.get("room_id")] = MessageSummary(
                id: try row.get("id"), content: try row.get("content"), sender: try Self.user(row), timestamp: Timestamp(micros: try row.get("timestamp"))
            )
        }
        // The same on every row (the statement's InitPlan).
        if try rows.first?.get("viewer_blocks", as: Bool.self) == true {
            try hideBlockedLastMessages(&lastMessages, viewer: viewer)
        }
        var byID: [String: PostgresRandomAccessRow] = [:]
        var extraIDs = Set<String>()
        for row in rows {
            byID[try row.get("id")] = row
            for column in ["created_by", "direct_user1", "direct_user2"] {
                if let id = try row.get(column, as: String?.self) { extraIDs.insert(id) }
            }
        }
        let extra = try users(extraIDs)
        return try ids.compactMap { id in
            guard let r = byID[id] else { return nil }
            return try Self.room(r, participants: participants[id] ?? [], lastMessage: lastMessages[id], users: extra, viewer: viewer)
        }
    }

    static func room(_ r: PostgresRandomAccessRow, participants: [User], lastMessage: MessageSummary?, users: [String: User], viewer: String) throws -> Room {
        let type = RoomType(rawValue: try r.get("room_type")) ?? .group
        let (user1, user2) = (try r.get("direct_user1", as: String?.self), try r.get("direct_user2", as: String?.self))
        var other: User?
        if type == .direct {
            if user1 == viewer { other = user2.flatMap { users[$0] } } else if user2 == viewer { other = user1.flatMap { users[$0] } }
        }
        var room = Room(
            id: try r.get("id"), name: try r.get("name"), roomType: type, participants: participants,
            createdBy: try r.get("created_by", as: String?.self).flatMap { users[$0] }, createdAt: Timestamp(micros: try r.get("created_at")),
            updatedAt: Timestamp(micros: try r.get("updated_at")), isActive: try r.get("is_active"), lastMessage: lastMessage,
            unreadCount: max(0, try r.get("unread", as: Int64.self)), otherUser: other,
            myRole: try r.get("my_role", as: String?.self), postPermission: try r.get("post_permission")
        )
        Store.Prefs(muted: try r.get("muted", as: Bool?.self) ?? false, mutedUntil: try r.get("muted_until"),
                    level: try r.get("notification_level"), unreadMentions: try r.get("unread_mentions")).apply(to: &room)
        return room
    }

    static let messageColumns = """
        m.id, m.room_id, m.seq, m.content, m.message_type, m.file_attachment, m.file_name, m.file_size,
        m.timestamp, m.edited_at, m.is_deleted, m.reply_to, m.reactions, m.client_msg_id, m.pinned_by, m.pinned_at, m.mentions, \(userColumns)
        """

    static func message(_ row: PostgresRandomAccessRow) throws -> Message {
        var message = Message(
            id: try row.get("id"), roomID: try row.get("room_id"), seq: try row.get("seq"), sender: try user(row), content: try row.get("content"),
            messageType: MessageType(rawValue: try row.get("message_type")) ?? .text, fileAttachment: try row.get("file_attachment"),
            fileName: try row.get("file_name"), fileSize: try row.get("file_size"), timestamp: Timestamp(micros: try row.get("timestamp")),
            editedAt: try row.get("edited_at", as: Int64?.self).map(Timestamp.init(micros:)), isDeleted: try row.get("is_deleted"),
            replyTo: try row.get("reply_to"), reactions: Store.decodeReactions(try row.get("reactions")), clientMsgID: try row.get("client_msg_id"),
            pinnedBy: try row.get("pinned_by", as: String?.self).map(Store.pinner),
            pinnedAt: try row.get("pinned_at", as: Int64?.self).map(Timestamp.init(micros:))
        )
        message.mentions = Store.decodeMentions(try row.get("mentions", as: String?.self))
        return message
    }

    func fillReadBy(_ messages: inout [Message]) throws {
        guard !messages.isEmpty else { return }
        var readers: [String: [User]] = [:]
        for row in try execute(Statements.ReadBy(values: [.texts(messages.map(\.id))])) {
            readers[try row.get("message_id"), default: []].append(try Self.user(row))
        }
        for index in messages.indices { messages[index].readBy = readers[messages[index].id] ?? [] }
        try Store.fillPinnedBy(&messages) { try users($0) }
    }

    /// Messages by id, in the given order, with `read_by`.
    func messages(ids: [String]) throws -> [Message] {
        guard !ids.isEmpty else { return [] }
        var messages = try execute(Statements.MessagesByID(values: [.texts(ids)])).map(Self.message)
        let order = Dictionary(ids.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        messages.sort { order[$0.id, default: 0] < order[$1.id, default: 0] }
        try fillReadBy(&messages)
        return messages
    }

    func fetchMessage(id: String) throws -> Message? { try messages(ids: [id]).first }

    func cursorSeq(_ messageID: String, room roomID: String, field: String) throws -> Int64 {
        guard let seq = try one("SELECT seq FROM messages WHERE id = $1 AND room_id = $2", [.text(messageID), .text(roomID)], as: Int64.self) else {
            throw StoreError.badRequest([(field, "Not a message of this room.")])
        }
        return seq
    }

    /// A page of a room's messages, newest first: seqs are 1...last_seq
    /// (gap-free: the room's row lock orders the writers), so the set and its
    /// size are arithmetic, as in SQLite's `Store.messagePage`.
    func messagePage(_ request: Requests.MessageList, viewer: String) throws -> (count: Int64, messages: [Message]) {
        // requireRoom's check, the room's last seq and whether the viewer
        // blocked anyone (v16-blocks), in one prepared round trip.
        let head = try execute(Statements.PageHead(values: [.text(viewer), .text(request.roomID)])).first
        try Store.admit(head.map { try Self.roomInfo($0, id: request.roomID) }, allowPublic: true)
        guard let row = head else { throw StoreError.notFound("Room not found") }
        let lastSeq = try row.get("last_seq", as: Int64.self)
        var upper = lastSeq
        var lower: Int64 = 0
        if let before = request.before { upper = min(upper, try cursorSeq(before, room: request.roomID, field: "before") - 1) }
        if let after = request.after { lower = max(lower, try cursorSeq(after, room: request.roomID, field: "after")) }
        if try row.get("blocks", as: Bool.self) {
            return try filteredMessagePage(request, viewer: viewer, upper: upper, lower: lower)
        }
        let count = max(0, upper - lower)
        guard Pagination.isValid(request.page, count: count), let offset = Pagination.offset(request.page) else { throw StoreError.invalidPage }
        let top = upper - offset
        let bottom = max(lower, top - Int64(request.page.pageSize))
        var messages = try execute(Statements.MessagePage(values: [.text(request.roomID), .int(top), .int(bottom)])).map(Self.message)
        try fillReadBy(&messages)
        return (count, messages)
    }
}
