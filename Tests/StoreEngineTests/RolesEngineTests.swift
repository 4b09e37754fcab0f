import ChatCore
import ChatStore
import Foundation
import Testing

/// Roles, members and pins on every engine: the same decisions
/// (Permissions.swift) over each engine's primitives and SQL.
@Suite struct RolesEngineTests {
    func id(_ sub: String) -> String { identity(sub).id }

    func role(_ engine: any StoreEngine, _ room: String, _ sub: String) throws -> String? {
        try engine.read { try $0.room(room, viewer: id(sub)) }.myRole
    }

    func update(_ engine: any StoreEngine, _ room: String, by sub: String, posting: String? = nil, add: [String] = []) throws -> Room {
        try engine.write {
            try $0.updateRoom(Requests.RoomUpdate(roomID: room, setName: false, name: nil, participantIDs: add.map(id), postPermission: posting),
                              user: id(sub), maxParticipants: 100)
        }
    }

    @Test(arguments: EngineKind.available)
    func creatorOwnsAndRolesDecideWhoDoesWhat(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)  // alice created it, bob is a member
        try engine.write { try $0.upsert(identity("carol")) }
        #expect(try role(engine, room, "alice") == "owner")
        #expect(try role(engine, room, "bob") == "member")
        #expect(try engine.read { try $0.room(room, viewer: id("alice")) }.postPermission == "members")
        // A member neither renames nor adds; the owner makes bob admin, who then adds carol.
        #expect(throws: StoreError.self) { try update(engine, room, by: "bob", add: ["carol"]) }
        let change = try engine.write { try $0.changeRole(Requests.MemberRef(roomID: room, userID: id("bob"), role: "admin"), by: id("alice")) }
        #expect(change.user.id == id("bob") && change.role == .admin && change.by.id == id("alice"))
        _ = try update(engine, room, by: "bob", add: ["carol"])
        #expect(try role(engine, room, "carol") == "member")
        // Only the owner changes roles, and never to owner.
        #expect(throws: StoreError.self) {
            try engine.write { try $0.changeRole(Requests.MemberRef(roomID: room, userID: id("carol"), role: "admin"), by: id("bob")) }
        }
        #expect(throws: StoreError.badRequest([("role", "\"owner\" is not a valid choice.")])) {
            try engine.write { try $0.changeRole(Requests.MemberRef(roomID: room, userID: id("carol"), role: "owner"), by: id("alice")) }
        }
        // Members list: owner, admins, members; then by join time.
        let members = try engine.read { try $0.memberPage(Requests.RoomPage(roomID: room, page: page1), viewer: id("carol")) }
        #expect(members.count == 3)
        #expect(members.members.map(\.user.id) == ["alice", "bob", "carol"].map(id))
        #expect(members.members.map(\.role) == [.owner, .admin, .member])
        // An admin removes members only; the owner anyone but itself.
        #expect(throws: StoreError.self) { try engine.write { try $0.removeMember(Requests.MemberRef(roomID: room, userID: id("alice")), by: id("bob")) } }
        #expect(throws: StoreError.self) { try engine.write { try $0.removeMember(Requests.MemberRef(roomID: room, userID: id("alice")), by: id("alice")) } }
        #expect(try engine.write { try $0.removeMember(Requests.MemberRef(roomID: room, userID: id("carol")), by: id("bob")) }.id == id("carol"))
        #expect(throws: StoreError.forbidden(Store.noAccess)) { try role(engine, room, "carol") }
        #expect(throws: StoreError.notFound("User is not a member of this room")) {
            try engine.write { try $0.removeMember(Requests.MemberRef(roomID: room, userID: id("carol")), by: id("alice")) }
        }
        // Deleting the room is the owner's alone.
        #expect(throws: StoreError.forbidden("Only the room owner can delete this room")) { try engine.write { try $0.deactivateRoom(room, user: id("bob")) } }
        try engine.write { try $0.deactivateRoom(room, user: id("alice")) }
    }

    @Test(arguments: EngineKind.available)
    func announcementRoomsAndOthersMessages(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        let bobs = try #require(created(try send(engine, room, "bob's", from: "bob")))
        let alices = try #require(created(try send(engine, room, "alice's")))
        #expect(try update(engine, room, by: "alice", posting: "admins").postPermission == "admins")
        #expect(throws: StoreError.forbidden("Only the room owner and admins can post in this room")) { try send(engine, room, "hi", from: "bob") }
        #expect(created(try send(engine, room, "news")) != nil)
        #expect(throws: StoreError.badRequest([("post_permission", "\"everyone\" is not a valid choice.")])) {
            try update(engine, room, by: "alice", posting: "everyone")
        }
        // Bob, a member, cannot delete alice's message; made admin, he still
        // cannot (hers is the owner's); alice deletes his, and his counters follow.
        #expect(throws: StoreError.self) { try engine.write { try $0.deleteMessage(Requests.MessageRef(roomID: room, messageID: alices.id), user: id("bob")) } }
        _ = try engine.write { try $0.changeRole(Requests.MemberRef(roomID: room, userID: id("bob"), role: "admin"), by: id("alice")) }
        #expect(created(try send(engine, room, "admin news", from: "bob")) != nil)
        #expect(throws: StoreError.self) { try engine.write { try $0.deleteMessage(Requests.MessageRef(roomID: room, messageID: alices.id), user: id("bob")) } }
        let deleted = try engine.write { try $0.deleteMessage(Requests.MessageRef(roomID: room, messageID: bobs.id), user: id("alice")) }
        #expect(deleted.isDeleted)
        // alice's unread: bob's two minus the deleted one; bob's: alice's two.
        #expect(try engine.read { try $0.room(room, viewer: id("alice")) }.unreadCount == 1)
        #expect(try engine.read { try $0.room(room, viewer: id("bob")) }.unreadCount == 2)
    }

    @Test(arguments: EngineKind.available)
    func transferAndAnOwnerWhoLeaves(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        try engine.write { tx in
            try tx.upsert(identity("carol"))
            _ = try tx.updateRoom(Requests.RoomUpdate(roomID: room, setName: false, name: nil, participantIDs: [id("carol")]), user: id("alice"), maxParticipants: 100)
        }
        #expect(throws: StoreError.self) { try engine.write { try $0.transferOwnership(Requests.MemberRef(roomID: room, userID: id("carol")), by: id("bob")) } }
        let changes = try engine.write { try $0.transferOwnership(Requests.MemberRef(roomID: room, userID: id("bob")), by: id("alice")) }
        #expect(changes.map(\.role) == [.owner, .admin])
        #expect(try role(engine, room, "bob") == "owner")
        #expect(try role(engine, room, "alice") == "admin")
        // Bob leaves: the longest-standing admin (alice) owns it, not carol.
        let passed = try engine.write { try $0.leave(room, user: id("bob")) }
        #expect(passed?.user.id == id("alice") && passed?.role == .owner)
        #expect(try role(engine, room, "alice") == "owner")
        // alice leaves: no admin left, so the longest-standing member, carol.
        #expect(try engine.write { try $0.leave(room, user: id("alice")) }?.user.id == id("carol"))
        #expect(try role(engine, room, "carol") == "owner")
        // The last one leaves: nobody to pass it to.
        #expect(try engine.write { try $0.leave(room, user: id("carol")) } == nil)
    }

    @Test(arguments: EngineKind.available)
    func pinsAndDirectRooms(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        let first = try #require(created(try send(engine, room, "first")))
        let second = try #require(created(try send(engine, room, "second")))
        func pin(_ message: Message, by sub: String, _ pinned: Bool = true) throws -> (message: Message, changed: Bool) {
            try engine.write { try $0.pin(Requests.MessageRef(roomID: room, messageID: message.id), user: id(sub), pinned: pinned) }
        }
        #expect(throws: StoreError.forbidden("Only the room owner or an admin can pin messages")) { try pin(first, by: "bob") }
        let pinned = try pin(first, by: "alice")
        #expect(pinned.changed && pinned.message.pinnedBy?.id == id("alice") && pinned.message.pinnedBy?.email == "alice@example.com")
        let at = try #require(pinned.message.pinnedAt)
        let again = try pin(first, by: "alice")
        #expect(!again.changed && again.message.pinnedAt == at)
        _ = try pin(second, by: "alice")
        let pins = try engine.read { try $0.pins(Requests.RoomPage(roomID: room, page: page1), viewer: id("bob")) }
        #expect(pins.count == 2 && pins.messages.map(\.id) == [second.id, first.id])
        // Deleting unpins; a deleted message cannot be pinned.
        _ = try engine.write { try $0.deleteMessage(Requests.MessageRef(roomID: room, messageID: second.id), user: id("alice")) }
        #expect(try engine.read { try $0.pins(Requests.RoomPage(roomID: room, page: page1), viewer: id("bob")) }.messages.map(\.id) == [first.id])
        #expect(throws: StoreError.badRequest(error: "Cannot pin a deleted message")) { try pin(second, by: "alice") }
        #expect(try pin(first, by: "alice", false).changed)
        #expect(try engine.read { try $0.message(Requests.MessageRef(roomID: room, messageID: first.id), user: id("bob")) }.pinnedAt == nil)
        // A direct room: two members, both pin; its creator deletes it, the other cannot.
        let (direct, _) = try engine.write { try $0.directRoom(Requests.RoomDirect(userID: id("bob"), newRoomID: IDs.uuid7()), user: id("alice")) }
        #expect(try role(engine, direct.id, "alice") == "member" && role(engine, direct.id, "bob") == "member")
        let hello = try #require(created(try send(engine, direct.id, "hello")))
        #expect(try engine.write { try $0.pin(Requests.MessageRef(roomID: direct.id, messageID: hello.id), user: id("bob"), pinned: true) }.changed)
        #expect(throws: StoreError.self) { try engine.write { try $0.deactivateRoom(direct.id, user: id("bob")) } }
        try engine.write { try $0.deactivateRoom(direct.id, user: id("alice")) }
    }

    /// The owner transferring to two members at once, on two writers: the
    /// room's lock orders them, so the second finds its caller no longer
    /// owner (403) and the room keeps exactly one owner.
    @Test(arguments: EngineKind.available)
    func concurrentTransfersLeaveOneOwner(_ kind: EngineKind) throws {
        let (first, makeAnother) = try kind.make()
        let writers = [first, try makeAnother()]
        for _ in 0..<10 {
            let room = try groupRoom(first)
            try first.write { tx in
                try tx.upsert(identity("carol"))
                _ = try tx.updateRoom(Requests.RoomUpdate(roomID: room, setName: false, name: nil, participantIDs: [id("carol")]), user: id("alice"), maxParticipants: 100)
            }
            let errors = ConcurrentWritersTests.concurrently(writers, count: 2) { engine, i in
                _ = try engine.write { try $0.transferOwnership(Requests.MemberRef(roomID: room, userID: identity(i == 0 ? "bob" : "carol").id), by: identity("alice").id) }
            }
            #expect(errors.count == 1, "\(errors)")
            for error in errors { #expect((error as? StoreError)?.code == .forbidden, "\(error)") }
            let roles = try first.read { try $0.members(room: room) }.map(\.role)
            #expect(roles.filter { $0 == .owner }.count == 1, "\(roles)")
        }
    }
}
