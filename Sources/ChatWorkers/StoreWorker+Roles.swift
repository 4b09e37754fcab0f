import ChatBus
import ChatCore
import ChatStore
import ChatWire

/// Members, roles and pins (Store+Members.swift decides; here the events):
/// each change reaches the room's sockets, `/ws/direct/` ones included.
extension StoreWorker {
    func writeRoles(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> [Event] {
        let user = identity.id
        switch command.kind {
        case .roomLeave:
            let roomID = try body(Requests.RoomRef.self, command).roomID
            let call = try db.leaveOpenCall(room: roomID, user: user, ring: config.callRingMicros).map { Self.callEvents($0.0, $0.1, by: user) } ?? []
            // An owner who leaves passes ownership on first (role_changed).
            let passed = try db.leave(roomID, user: user)
            try outbox(room: roomID, event: "member_left", in: db) { Webhooks.memberData(identity.user) }
            // The user's sockets in the room are closed (4403) after this.
            return call + (passed.map { [Self.roleChanged(roomID, $0)] } ?? []) + [
                Event.room(roomID, key: .removeUser(user), body: []),
                .reply(to: command, status: .ok, body: ClientJSON.object(["status": "left room"])),
            ]
        case .memberAdd:
            let request = try body(Requests.RoomUpdate.self, command)
            let room: Room
            do {
                room = try addingMembers(room: request.roomID, user: user, in: db) {
                    try db.addMembers(request, user: user, maxParticipants: config.maxParticipants)
                }
            } catch let error as StoreError {
                // The same checks as PATCH's participant_ids, under this endpoint's field name.
                throw StoreError(code: error.code, problems: error.problems.map { problem in
                    if case .field("participant_ids", let message) = problem { return .field("user_ids", message) }
                    return problem
                })
            }
            return [.reply(to: command, status: .ok, body: try encode(room, in: db))]
        case .memberRole:
            let request = try body(Requests.MemberRef.self, command)
            let change = try db.changeRole(request, by: user)
            let member = try db.members(room: request.roomID).first { $0.user.id == request.userID }
            let body = member.map { ClientJSON.member(user: $0.user, role: $0.role.rawValue, joinedAt: $0.joinedAt) } ?? []
            return [Self.roleChanged(request.roomID, change), .reply(to: command, status: .ok, body: body)]
        case .memberRemove:
            let request = try body(Requests.MemberRef.self, command)
            // Out of the room's call first, while still a member (a refused removal undoes it).
            let call = try db.leaveOpenCall(room: request.roomID, user: request.userID, ring: config.callRingMicros).map { Self.callEvents($0.0, $0.1, by: request.userID) } ?? []
            let removed = try db.removeMember(request, by: user)
            try outbox(room: request.roomID, event: "member_left", in: db) { Webhooks.memberData(removed) }
            // `user_left` first, so that the removed member's sockets get it before they close (4403).
            return call + [Event.room(request.roomID, body: ClientJSON.presenceEvent("user_left", user: removed)),
                    Event.room(request.roomID, key: .removeUser(removed.id), body: []),
                    .reply(to: command, status: .noContent, body: [])]
        case .roomTransfer:
            let request = try body(Requests.MemberRef.self, command)
            let changes = try db.transferOwnership(request, by: user)
            return changes.map { Self.roleChanged(request.roomID, $0) }
                + [.reply(to: command, status: .ok, body: try encode(try db.room(request.roomID, viewer: user), in: db))]
        case .messagePin, .messageUnpin:
            let ref = try body(Requests.MessageRef.self, command)
            let pinned = command.kind == .messagePin
            let (message, changed) = try db.pin(ref, user: user, pinned: pinned)
            let reply: Event = .reply(to: command, status: pinned ? .ok : .noContent, body: pinned ? ClientJSON.encode(message) : [])
            guard changed else { return [reply] }
            let event = pinned ? ClientJSON.pinnedEvent(message, by: identity.user) : ClientJSON.unpinnedEvent(messageID: ref.messageID, by: identity.user)
            // A pinned message carries its content: hidden, like the message, from those who block its sender.
            return [Event.room(ref.roomID, key: .none, hiddenFrom: try db.blockers(of: message.sender.id, room: ref.roomID), body: event), reply]
        default:
            throw StoreError(code: .badRequest, detail: "Not a roles command: \(command.kind.rawValue)")
        }
    }

    static func roleChanged(_ roomID: String, _ change: Store.RoleChange) -> Event {
        Event.room(roomID, body: ClientJSON.roleChangedEvent(user: change.user, role: change.role.rawValue, by: change.by))
    }
}
