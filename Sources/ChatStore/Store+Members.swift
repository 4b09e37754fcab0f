import ChatCore
import GRDB

extension Store {
    /// One member of a room, as the members list shows it.
    public struct Member: Sendable, Equatable {
        public var user: User
        public var role: MemberRole
        public var joinedAt: Timestamp

        public init(user: User, role: MemberRole, joinedAt: Timestamp) {
            (self.user, self.role, self.joinedAt) = (user, role, joinedAt)
        }
    }

    /// A role given to someone, for the `role_changed` event.
    public struct RoleChange: Sendable, Equatable {
        public var user: User
        public var role: MemberRole
        public var by: User
    }

    /// The order of a members list, in SQL (both engines): by rank, then join time.
    package static let memberOrder = "CASE p.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END, p.joined_at, u.id"

    static func members(room roomID: String, in db: Database) throws -> [Member] {
        try Row.fetchAll(db.cachedStatement(sql: """
            SELECT \(userColumns), p.role, p.joined_at FROM room_participants p JOIN users u ON u.id = p.user_id
            WHERE p.room_id = ? ORDER BY \(memberOrder)
            """), arguments: [roomID]).map { row in
            Member(user: user(row), role: MemberRole(rawValue: row["role"]) ?? .member, joinedAt: Timestamp(micros: row["joined_at"]))
        }
    }

    static func setRole(_ role: MemberRole, room roomID: String, user: String, in db: Database) throws {
        try db.cachedStatement(sql: "UPDATE room_participants SET role = ? WHERE room_id = ? AND user_id = ?")
            .execute(arguments: [role.rawValue, roomID, user])
    }

    static func setPin(_ ref: Requests.MessageRef, by user: String?, in db: Database) throws {
        try db.execute(sql: """
            UPDATE messages SET pinned_by = ?, pinned_at = CASE WHEN ? IS NULL THEN NULL ELSE COALESCE(pinned_at, ?) END
            WHERE id = ? AND room_id = ? AND (is_deleted = 0 OR ? IS NULL)
            """, arguments: [user, user, Timestamp.now().micros, ref.messageID, ref.roomID, user])
    }

    /// A room's pins, newest first, without the messages of users the viewer blocks (as history).
    static func pinPage(_ request: Requests.RoomPage, viewer: String, in db: Database) throws -> (count: Int64, messages: [Message]) {
        let filter = """
            m.room_id = ? AND m.pinned_at IS NOT NULL AND m.sender_id NOT IN (SELECT blocked_id FROM user_blocks WHERE blocker_id = ?)
            """
        let count = try Int64.fetchOne(db, sql: "SELECT COUNT(*) FROM messages m WHERE \(filter)", arguments: [request.roomID, viewer]) ?? 0
        guard Pagination.isValid(request.page, count: count), let offset = Pagination.offset(request.page) else { throw StoreError.invalidPage }
        var messages = try Row.fetchAll(db.cachedStatement(sql: """
            SELECT \(messageColumns) FROM messages m JOIN users u ON u.id = m.sender_id
            WHERE \(filter) ORDER BY m.pinned_at DESC, m.seq DESC LIMIT ? OFFSET ?
            """), arguments: [request.roomID, viewer, request.page.pageSize, offset]).map(message)
        try fillReadBy(&messages, in: db)
        return (count, messages)
    }
}

extension SQLiteTransaction {
    func lockRoles(room roomID: String) throws {}
    func roomInfo(_ roomID: String, user: String) throws -> Store.RoomInfo? { try Store.roomInfo(roomID, user: user, in: db) }
    func members(room roomID: String) throws -> [Store.Member] { try Store.members(room: roomID, in: db) }
    func setRole(_ role: MemberRole, room roomID: String, user: String) throws { try Store.setRole(role, room: roomID, user: user, in: db) }
    func removeParticipant(room roomID: String, user: String) throws {
        try db.execute(sql: "DELETE FROM room_participants WHERE room_id = ? AND user_id = ?", arguments: [roomID, user])
    }
    func setPin(_ ref: Requests.MessageRef, by user: String?) throws { try Store.setPin(ref, by: user, in: db) }
    func pinPage(_ request: Requests.RoomPage, viewer: String) throws -> (count: Int64, messages: [Message]) {
        try Store.pinPage(request, viewer: viewer, in: db)
    }
}

/// Members, roles and pins, the same on both engines: each operation is an
/// access check, a `Permissions` decision, then the engine's primitives.
extension StoreTransaction {
    /// `GET .../members/`: readable like the room (public rooms by anyone).
    public func memberPage(_ request: Requests.RoomPage, viewer: String) throws -> (count: Int64, members: [Store.Member]) {
        try requireRoom(request.roomID, user: viewer, allowPublic: true)
        let all = try members(room: request.roomID)
        let count = Int64(all.count)
        guard Pagination.isValid(request.page, count: count), let offset = Pagination.offset(request.page) else { throw StoreError.invalidPage }
        return (count, Array(all.dropFirst(Int(offset)).prefix(request.page.pageSize)))
    }

    /// `POST .../members/`: PATCH's `participant_ids`, refused (403) where
    /// the table gives nobody `addMembers` (a direct room) before PATCH's own 400.
    public func addMembers(_ request: Requests.RoomUpdate, user userID: String, maxParticipants: Int) throws -> Room {
        try Permissions.authorize(.addMembers, info: try requireRoom(request.roomID, user: userID), user: userID)
        return try updateRoom(request, user: userID, maxParticipants: maxParticipants)
    }

    /// The target of a member action: a member of the room (`404` otherwise).
    func member(_ userID: String, of roomID: String) throws -> (user: User, role: MemberRole) {
        guard let info = try roomInfo(roomID, user: userID), let role = info.role, let user = try user(id: userID) else {
            throw StoreError.notFound("User is not a member of this room")
        }
        return (user, role)
    }

    /// `PATCH .../members/{user}/`: makes a member admin or an admin member.
    public func changeRole(_ request: Requests.MemberRef, by userID: String) throws -> Store.RoleChange {
        try lockRoles(room: request.roomID)
        let info = try requireRoom(request.roomID, user: userID)
        try Permissions.authorize(.setRole, info: info, user: userID)
        guard let raw = request.role, let role = MemberRole(rawValue: raw), role != .owner else {
            throw StoreError.badRequest([("role", "\"\(request.role ?? "")\" is not a valid choice.")])
        }
        let target = try member(request.userID, of: request.roomID)
        try Permissions.authorize(.setRole, info: info, user: userID, target: target.role)
        try setRole(role, room: request.roomID, user: request.userID)
        return Store.RoleChange(user: target.user, role: role, by: try self.user(id: userID) ?? Store.pinner(userID))
    }

    /// `DELETE .../members/{user}/`: the owner removes anyone but itself, an admin members only.
    public func removeMember(_ request: Requests.MemberRef, by userID: String) throws -> User {
        try lockRoles(room: request.roomID)
        let info = try requireRoom(request.roomID, user: userID)
        try Permissions.authorize(.removeMember, info: info, user: userID)
        let target = try member(request.userID, of: request.roomID)
        try Permissions.authorize(.removeMember, info: info, user: userID, target: target.role)
        try removeParticipant(room: request.roomID, user: request.userID)
        return target.user
    }

    /// `transfer_ownership`: the target becomes owner, the old owner admin.
    public func transferOwnership(_ request: Requests.MemberRef, by userID: String) throws -> [Store.RoleChange] {
        try lockRoles(room: request.roomID)
        let info = try requireRoom(request.roomID, user: userID)
        try Permissions.authorize(.transferOwnership, info: info, user: userID)
        let target = try member(request.userID, of: request.roomID)
        try Permissions.authorize(.transferOwnership, info: info, user: userID, target: target.role)
        let me = try user(id: userID) ?? Store.pinner(userID)
        try setRole(.owner, room: request.roomID, user: request.userID)
        try setRole(.admin, room: request.roomID, user: userID)
        return [Store.RoleChange(user: target.user, role: .owner, by: me), Store.RoleChange(user: me, role: .admin, by: me)]
    }

    /// `leave`, passing ownership first when the owner leaves: to the
    /// longest-standing admin, else the longest-standing member; never to an
    /// incoming webhook's bot, which nobody can act as.
    public func leave(_ roomID: String, user userID: String) throws -> Store.RoleChange? {
        try lockRoles(room: roomID)
        let info = try requireRoom(roomID, user: userID)
        var change: Store.RoleChange?
        if info.role == .owner && info.roomType != .direct,
            case let bots = Set(try rows("SELECT bot_user_id FROM incoming_webhooks WHERE room_id = $1", [.text(roomID)]).compactMap { $0.first ?? nil }),
            let heir = try members(room: roomID).first(where: { $0.user.id != userID && !bots.contains($0.user.id) }) {
            try setRole(.owner, room: roomID, user: heir.user.id)
            change = Store.RoleChange(user: heir.user, role: .owner, by: try user(id: userID) ?? Store.pinner(userID))
        }
        try leaveRoom(roomID, user: userID)
        return change
    }

    /// `POST`/`DELETE .../pin/`: pins (again: unchanged) or unpins; a
    /// deleted message is `400`. Returns the message and whether it changed.
    public func pin(_ ref: Requests.MessageRef, user userID: String, pinned: Bool) throws -> (message: Message, changed: Bool) {
        let info = try requireRoom(ref.roomID, user: userID)
        try Permissions.authorize(.pin, info: info, user: userID)
        let message = try self.message(ref, user: userID)
        if pinned && message.isDeleted { throw StoreError.badRequest(error: "Cannot pin a deleted message") }
        guard (message.pinnedAt != nil) != pinned else { return (message, false) }
        try setPin(ref, by: pinned ? userID : nil)
        return (try self.message(ref, user: userID), true)
    }

    /// `GET .../pins/`: newest pin first.
    public func pins(_ request: Requests.RoomPage, viewer: String) throws -> (count: Int64, messages: [Message]) {
        try requireRoom(request.roomID, user: viewer, allowPublic: true)
        return try pinPage(request, viewer: viewer)
    }
}
