import ChatCore
import ChatStore
import Foundation
import PostgresNIO

extension PostgresTransaction {
    func createRoom(_ request: Requests.RoomCreate, creator: String, maxParticipants: Int) throws -> Room {
        var errors: [(field: String, message: String)] = []
        let type = RoomType(rawValue: request.roomType)
        if type == nil || type == .direct { errors.append(("room_type", "\"\(request.roomType)\" is not a valid choice.")) }
        if let error = Validation.roomNameError(request.name) { errors.append(("name", error)) }
        var seen = Set<String>()
        let ids = request.participantIDs.filter { seen.insert($0).inserted }
        let known = try users(ids)
        for id in ids.filter({ known[$0] == nil }).sorted() { errors.append(("participant_ids", "User \(id) does not exist.")) }
        if !errors.isEmpty {
            var merged: [(field: String, message: String)] = []
            for (field, message) in errors where !merged.contains(where: { $0.field == field }) { merged.append((field, message)) }
            throw StoreError.badRequest(merged)
        }
        let now = Timestamp.now().micros
        let inserted = try query("""
            INSERT INTO rooms (id, name, room_type, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)
            ON CONFLICT (id) DO NOTHING
            """, [.text(request.id), .text(request.name), .text(request.roomType), .text(creator), .int(now)]).changed
        if inserted > 0 {
            try addParticipants(room: request.id, users: [creator] + ids, limit: maxParticipants)
            try setRole(.owner, room: request.id, user: creator)
        }
        guard let room = try rooms(ids: [request.id], viewer: creator).first else { throw StoreError.notFound() }
        return room
    }

    func updateRoom(_ request: Requests.RoomUpdate, user: String, maxParticipants: Int) throws -> Room {
        let info = try requireRoom(request.roomID, user: user, allowPublic: false)
        let ids = try Store.checkedUpdate(request, of: info, by: user)
        let known = try users(ids)
        let missing = ids.filter { known[$0] == nil }.sorted()
        if !missing.isEmpty {
            throw StoreError.badRequest([("participant_ids", missing.map { "User \($0) does not exist." }.joined(separator: " "))])
        }
        if request.setName {
            try query("UPDATE rooms SET name = $1, updated_at = GREATEST(updated_at + 1, $2) WHERE id = $3",
                      [.text(request.name), .int(Timestamp.now().micros), .text(request.roomID)])
        }
        if let posting = request.postPermission {
            try query("UPDATE rooms SET post_permission = $1 WHERE id = $2", [.text(posting), .text(request.roomID)])
        }
        try addParticipants(room: request.roomID, users: ids, limit: maxParticipants)
        return try room(request.roomID, viewer: user)
    }

    func deactivateRoom(_ roomID: String, user: String) throws {
        let info = try requireRoom(roomID, user: user, allowPublic: false)
        try Permissions.authorize(.deleteRoom, info: info, user: user)
        try query("UPDATE rooms SET is_active = FALSE WHERE id = $1", [.text(roomID)])
    }

    func directRoom(_ request: Requests.RoomDirect, user: String) throws -> (Room, Bool) {
        guard let raw = request.userID, !raw.isEmpty else { throw StoreError.badRequest(error: "user_id is required") }
        guard let other = IDs.canonical(raw), try users([other])[other] != nil else { throw StoreError.notFound("User not found") }
        guard other != user else { throw StoreError.badRequest(error: "Cannot create a direct message with yourself") }
        if try isBlocked(between: user, and: other) { throw StoreError.forbidden(Store.blockedDirect) }
        let (first, second) = user < other ? (user, other) : (other, user)
        let find = "SELECT id FROM rooms WHERE room_type = 'direct' AND direct_user1 = $1 AND direct_user2 = $2"
        if let existing = try one(find, [.text(first), .text(second)], as: String.self) {
            return (try room(existing, viewer: user), false)
        }
        let now = Timestamp.now().micros
        // Two workers creating the same pair at once: the unique pair index
        // makes the second insert wait for the first's commit and then do
        // nothing; the second finds the first's room and answers 200 with it,
        // as SQLite's single writer does.
        let inserted = try query("""
            INSERT INTO rooms (id, room_type, created_by, created_at, updated_at, direct_user1, direct_user2)
            VALUES ($1, 'direct', $2, $3, $3, $4, $5) ON CONFLICT DO NOTHING
            """, [.text(request.newRoomID), .text(user), .int(now), .text(first), .text(second)]).changed
        if inserted == 0 {
            guard let existing = try one(find, [.text(first), .text(second)], as: String.self) else {
                throw StoreError.badRequest(error: "The request conflicts with stored data.")
            }
            return (try room(existing, viewer: user), false)
        }
        try addParticipants(room: request.newRoomID, users: [user, other], limit: Validation.maxParticipants)
        return (try room(request.newRoomID, viewer: user), true)
    }

    func leaveRoom(_ roomID: String, user: String) throws {
        let info = try requireRoom(roomID, user: user, allowPublic: false)
        guard info.roomType != .direct else { throw StoreError.badRequest(error: "Cannot leave direct message rooms") }
        try query("DELETE FROM room_participants WHERE room_id = $1 AND user_id = $2", [.text(roomID), .text(user)])
    }

    func joinRoom(_ roomID: String, user: String, maxParticipants: Int) throws {
        guard let info = try roomInfo(roomID, user: user) else { throw StoreError.notFound("Room not found") }
        guard info.roomType == .public else {
            throw StoreError.forbidden(info.isParticipant ? "Only public rooms can be joined" : Store.noAccess)
        }
        guard info.isActive else { throw StoreError.badRequest(error: "This room is no longer active") }
        try addParticipants(room: roomID, users: [user], limit: maxParticipants)
    }

    func room(_ roomID: String, viewer: String) throws -> Room {
        try requireRoom(roomID, user: viewer, allowPublic: true)
        guard let room = try rooms(ids: [roomID], viewer: viewer).first else { throw StoreError.notFound() }
        return room
    }

    func roomPage(_ request: Requests.RoomList, viewer: String) throws -> (count: Int64, rooms: [Room]) {
        var filter = "r.is_active"
        var values: [PostgresValue] = [.text(viewer)]
        if request.discover {
            filter += " AND r.room_type = 'public' AND NOT EXISTS (SELECT 1 FROM room_participants p WHERE p.room_id = r.id AND p.user_id = $1)"
        } else {
            filter += " AND r.id IN (SELECT room_id FROM room_participants WHERE user_id = $1)"
            if let type = request.roomType {
                filter += " AND r.room_type = $2"
                values.append(.text(type))
            }
        }
        let count = try one("SELECT COUNT(*) FROM rooms r WHERE \(filter)", values, as: Int64.self) ?? 0
        guard Pagination.isValid(request.page, count: count), let offset = Pagination.offset(request.page) else { throw StoreError.invalidPage }
        let n = values.count
        let ids = try query(
            "SELECT r.id FROM rooms r WHERE \(filter) ORDER BY r.updated_at DESC, r.id LIMIT $\(n + 1) OFFSET $\(n + 2)",
            values + [.int(Int64(request.page.pageSize)), .int(Int64(offset))]
        ).rows.map { try $0.get("id", as: String.self) }
        return (count, try rooms(ids: ids, viewer: viewer))
    }

    /// Rooms whose name or participants' email or display name contain
    /// `query` (case-insensitively), among the user's rooms and public rooms.
    func searchRooms(_ query: String, viewer: String, limit: Int) throws -> [Room] {
        let ids = try self.query("""
            SELECT r.id FROM rooms r
            WHERE r.is_active
              AND (r.room_type = 'public' OR EXISTS (SELECT 1 FROM room_participants p WHERE p.room_id = r.id AND p.user_id = $1))
              AND (strpos(lower(coalesce(r.name, '')), lower($2)) > 0
                   OR EXISTS (SELECT 1 FROM room_participants p JOIN users u ON u.id = p.user_id
                              WHERE p.room_id = r.id AND (strpos(lower(u.email), lower($2)) > 0 OR strpos(lower(u.display_name), lower($2)) > 0)))
            ORDER BY r.updated_at DESC LIMIT $3
            """, [.text(viewer), .text(query), .int(Int64(limit))]).rows.map { try $0.get("id", as: String.self) }
        return try rooms(ids: ids, viewer: viewer)
    }
}
