import ChatCore
import GRDB

extension Store {
    /// `PATCH`: rename, `post_permission`, add participants; as `Permissions` allows.
    public static func updateRoom(_ request: Requests.RoomUpdate, user: String, maxParticipants: Int = Validation.maxParticipants, in db: Database) throws -> Room {
        let info = try requireRoom(request.roomID, user: user, in: db)
        let ids = try checkedUpdate(request, of: info, by: user)
        let known = try users(ids, in: db)
        let missing = ids.filter { known[$0] == nil }.sorted()
        if !missing.isEmpty {
            throw StoreError.badRequest([("participant_ids", missing.map { "User \($0) does not exist." }.joined(separator: " "))])
        }
        let now = Timestamp.now().micros
        if request.setName {
            try db.execute(sql: "UPDATE rooms SET name = ?, updated_at = MAX(updated_at + 1, ?) WHERE id = ?", arguments: [request.name, now, request.roomID])
        }
        if let posting = request.postPermission {
            try db.execute(sql: "UPDATE rooms SET post_permission = ? WHERE id = ?", arguments: [posting, request.roomID])
        }
        try addParticipants(room: request.roomID, users: ids, limit: maxParticipants, in: db)
        return try room(request.roomID, viewer: user, in: db)
    }

    /// `DELETE`: deactivates; the owner only (`Permissions`). History is kept.
    public static func deactivateRoom(_ roomID: String, user: String, in db: Database) throws {
        let info = try requireRoom(roomID, user: user, in: db)
        try Permissions.authorize(.deleteRoom, info: info, user: user)
        try db.execute(sql: "UPDATE rooms SET is_active = 0 WHERE id = ?", arguments: [roomID])
    }

    /// `direct_message`: the one direct room of two users, created on first use.
    /// Returns the room and whether it was created.
    public static func directRoom(_ request: Requests.RoomDirect, user: String, in db: Database) throws -> (Room, Bool) {
        guard let raw = request.userID, !raw.isEmpty else { throw StoreError.badRequest(error: "user_id is required") }
        guard let other = IDs.canonical(raw), try users([other], in: db)[other] != nil else {
            throw StoreError.notFound("User not found")
        }
        guard other != user else { throw StoreError.badRequest(error: "Cannot create a direct message with yourself") }
        // Either way round, and for an existing room too (api-contract.md "Mute and block").
        if try isBlocked(between: user, and: other, in: db) { throw StoreError.forbidden(blockedDirect) }
        // The pair is stored ordered, so the unique index sees (a, b) and (b, a) as one room.
        let (first, second) = user < other ? (user, other) : (other, user)
        if let existing = try String.fetchOne(db, sql: "SELECT id FROM rooms WHERE room_type = 'direct' AND direct_user1 = ? AND direct_user2 = ?", arguments: [first, second]) {
            return (try room(existing, viewer: user, in: db), false)
        }
        let now = Timestamp.now().micros
        try db.execute(
            sql: "INSERT INTO rooms (id, room_type, created_by, created_at, updated_at, direct_user1, direct_user2) VALUES (?, 'direct', ?, ?, ?, ?, ?)",
            arguments: [request.newRoomID, user, now, now, first, second]
        )
        try addParticipants(room: request.newRoomID, users: [user, other], in: db)
        return (try room(request.newRoomID, viewer: user, in: db), true)
    }

    public static func leaveRoom(_ roomID: String, user: String, in db: Database) throws {
        let info = try requireRoom(roomID, user: user, in: db)
        guard info.roomType != .direct else { throw StoreError.badRequest(error: "Cannot leave direct message rooms") }
        try db.execute(sql: "DELETE FROM room_participants WHERE room_id = ? AND user_id = ?", arguments: [roomID, user])
    }

    /// `join`: public rooms only (api-contract.md: 403 for any other room).
    public static func joinRoom(_ roomID: String, user: String, maxParticipants: Int = Validation.maxParticipants, in db: Database) throws {
        guard let info = try roomInfo(roomID, user: user, in: db) else { throw StoreError.notFound("Room not found") }
        guard info.roomType == .public else {
            throw StoreError.forbidden(info.isParticipant ? "Only public rooms can be joined" : noAccess)
        }
        guard info.isActive else { throw StoreError.badRequest(error: "This room is no longer active") }
        try addParticipants(room: roomID, users: [user], limit: maxParticipants, in: db)
    }
}
