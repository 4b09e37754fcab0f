import ChatCore
import ChatStore
import ChatTesting
import Foundation
import Testing

/// Blocks in the store, on every engine (Store+Blocks.swift,
/// PostgresTransaction+Blocks.swift, chatd_store_message v16).
@Suite struct BlockEngineTests {
    let alice = identity("alice").id
    let bob = identity("bob").id
    let mallory = identity("mallory").id

    func page(_ engine: any StoreEngine, _ room: String, viewer: String) throws -> [String] {
        try engine.read { try $0.messagePage(Requests.MessageList(roomID: room, page: page1, before: nil, after: nil), viewer: viewer) }.messages.map(\.content)
    }

    func unread(_ engine: any StoreEngine, viewer: String) throws -> Int64? {
        try engine.read { try $0.roomPage(Requests.RoomList(page: page1, roomType: nil, discover: false), viewer: viewer) }.rooms.first?.unreadCount
    }

    /// A blocked sender's mention of the blocker keeps the message's
    /// `mentions` (the sender sees nothing different) but gives the blocker
    /// no unread mention and no feed entry; the feed leaves out earlier ones too.
    @Test(arguments: EngineKind.available)
    func aBlockedSendersMentionsDoNotReachTheBlocker(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        func feed() throws -> [String] {
            try engine.read { try $0.mentionPage(Requests.MentionList(page: page1), viewer: alice) }.messages.map(\.content)
        }
        func unreadMentions() throws -> Int64 { try engine.read { try $0.room(room, viewer: alice) }.unreadMentions }
        _ = try send(engine, room, "@alice@example.com before", from: "bob")
        #expect(try feed() == ["@alice@example.com before"])
        #expect(try unreadMentions() == 1)
        try engine.write { _ = try $0.block(bob, by: alice) }
        // The earlier mention is hidden-read at the block: nothing left to open.
        #expect(try feed() == [])
        #expect(try unreadMentions() == 0)
        let hidden = try #require(created(try send(engine, room, "@alice@example.com after", from: "bob")))
        #expect(hidden.mentions == [alice] && hidden.hiddenFrom == [alice])
        #expect(try unreadMentions() == 0)
        #expect(try unread(engine, viewer: alice) == 0)
        try engine.write { try $0.unblock(bob, by: alice) }
        #expect(try feed() == ["@alice@example.com before"])
        #expect(try unreadMentions() == 0)
        // Deleting the earlier one keeps both counters at zero, not below.
        let before = try engine.read { try $0.mentionPage(Requests.MentionList(page: page1), viewer: alice) }.messages[0].id
        _ = try engine.write { try $0.deleteMessage(Requests.MessageRef(roomID: room, messageID: before), user: bob) }
        #expect(try unreadMentions() == 0)
        #expect(try unread(engine, viewer: alice) == 0)
    }

    @Test(arguments: EngineKind.available)
    func aBlockedSendersMessagesAreHiddenFromTheBlocker(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        _ = try send(engine, room, "before", from: "bob")
        #expect(try engine.write { try $0.block(bob, by: alice) }.id == bob)
        #expect(try engine.read { try $0.blockers(of: bob, room: room) } == [alice])
        #expect(try engine.read { try $0.blockers(of: alice, room: room) } == [])
        let hidden = try #require(created(try send(engine, room, "hidden", from: "bob")))
        #expect(hidden.hiddenFrom == [alice])
        // The room list's last message: none of Bob's for Alice.
        func last(_ viewer: String) throws -> String? {
            try engine.read { try $0.room(room, viewer: viewer) }.lastMessage?.content
        }
        #expect(try last(alice) == nil)
        #expect(try last(bob) == "hidden")
        #expect(created(try send(engine, room, "mine"))?.hiddenFrom == [])
        _ = try send(engine, room, "newest", from: "bob")
        #expect(try last(alice) == "mine")
        #expect(try last(bob) == "newest")
        // History: without Bob's messages for Alice, whole for Bob.
        #expect(try page(engine, room, viewer: alice) == ["mine"])
        #expect(try page(engine, room, viewer: bob) == ["newest", "mine", "hidden", "before"])
        #expect(throws: StoreError.notFound()) {
            try engine.read { try $0.message(Requests.MessageRef(roomID: room, messageID: hidden.id), user: alice) }
        }
        // Unread: neither "before" (hidden-read at the block: history no longer shows it)
        // nor "hidden" counts; Alice is no reader of either.
        #expect(try unread(engine, viewer: alice) == 0)
        #expect(try engine.write { try $0.markRoomRead(room, user: alice) } == 0)
        #expect(try engine.read { try $0.messages(ids: [hidden.id]) }.first?.readBy == [])
        #expect(try engine.read { try $0.messages(ids: [hidden.id]) }.first?.readBy == [])
        // Deleting the hidden message keeps Alice's count right.
        _ = try engine.write { try $0.deleteMessage(Requests.MessageRef(roomID: room, messageID: hidden.id), user: bob) }
        _ = try send(engine, room, "later", from: "bob")
        #expect(try unread(engine, viewer: alice) == 0)
        try engine.write { try $0.unblock(bob, by: alice) }
        _ = try send(engine, room, "visible", from: "bob")
        #expect(try unread(engine, viewer: alice) == 1)
        #expect(try page(engine, room, viewer: alice).first == "visible")
    }

    /// No unread count the blocker cannot open, however the blocked user's
    /// messages came to be in the blocker's room (review findings): a room
    /// the blocker joins after the block, and a room the blocked user left
    /// before it.
    @Test(arguments: EngineKind.available)
    func joiningOrLeavingLeavesNoUnreadOfABlockedUser(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        func counts(_ room: String) throws -> (unread: Int64, mentions: Int64) {
            let seen = try engine.read { try $0.room(room, viewer: alice) }
            return (seen.unreadCount, seen.unreadMentions)
        }
        // Bob mentions Alice, then leaves; Alice blocks him after.
        _ = try send(engine, room, "@alice@example.com left behind", from: "bob")
        try engine.write { try $0.leaveRoom(room, user: bob) }
        #expect(try counts(room) == (1, 1))
        _ = try engine.write { try $0.block(bob, by: alice) }
        #expect(try counts(room) == (0, 0))
        // A public room of Bob's, with his messages and one of Mallory's, joined by Alice after the block.
        let lobby = IDs.uuid7()
        _ = try engine.write { try $0.createRoom(Requests.RoomCreate(id: lobby, name: "Lobby", roomType: "public", participantIDs: []),
                                                 creator: bob, maxParticipants: 100) }
        _ = try send(engine, lobby, "one", from: "bob")
        _ = try send(engine, lobby, "two", from: "bob")
        try engine.write { try $0.joinRoom(lobby, user: mallory, maxParticipants: 100) }
        _ = try send(engine, lobby, "from mallory", from: "mallory")
        try engine.write { try $0.joinRoom(lobby, user: alice, maxParticipants: 100) }
        #expect(try counts(lobby) == (1, 0))
        #expect(try page(engine, lobby, viewer: alice) == ["from mallory"])
        // A join that repeats changes nothing.
        try engine.write { try $0.joinRoom(lobby, user: alice, maxParticipants: 100) }
        #expect(try counts(lobby) == (1, 0))
        // Leaving and coming back: Bob's messages meanwhile do not count either.
        try engine.write { try $0.leaveRoom(lobby, user: alice) }
        _ = try send(engine, lobby, "three", from: "bob")
        try engine.write { try $0.joinRoom(lobby, user: alice, maxParticipants: 100) }
        #expect(try counts(lobby) == (1, 0))
        #expect(try engine.write { try $0.markRoomRead(lobby, user: alice) } == 1)
        #expect(try counts(lobby) == (0, 0))
    }

    @Test(arguments: EngineKind.available)
    func aDirectRoomAcrossABlockRefusesBothWays(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        _ = try groupRoom(engine)
        let (room, _) = try engine.write { try $0.directRoom(Requests.RoomDirect(userID: bob, newRoomID: IDs.uuid7()), user: alice) }
        _ = try engine.write { try $0.block(alice, by: bob) }
        for sub in ["alice", "bob"] {
            #expect(throws: StoreError.forbidden(Store.blockedDirect)) { try send(engine, room.id, "no", from: sub) }
        }
        #expect(throws: StoreError.forbidden(Store.blockedDirect)) {
            try engine.write { try $0.directRoom(Requests.RoomDirect(userID: bob, newRoomID: IDs.uuid7()), user: alice) }
        }
        #expect(throws: StoreError.forbidden(Store.blockedDirect)) {
            try engine.write { try $0.directRoom(Requests.RoomDirect(userID: alice, newRoomID: IDs.uuid7()), user: bob) }
        }
        try engine.write { try $0.unblock(alice, by: bob) }
        #expect(created(try send(engine, room.id, "yes", from: "bob")) != nil)
    }

    @Test(arguments: EngineKind.available)
    func blocksListLookupAndRefusals(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        _ = try groupRoom(engine)
        #expect(throws: StoreError.notFound("User not found")) { try engine.write { try $0.block(IDs.uuid7(), by: alice) } }
        #expect(throws: StoreError.badRequest(error: "You cannot block yourself")) { try engine.write { try $0.block(alice, by: alice) } }
        _ = try engine.write { try $0.block(bob, by: alice) }
        _ = try engine.write { try $0.block(bob, by: alice) }
        _ = try engine.write { try $0.block(mallory, by: alice) }
        let list = try engine.read { try $0.blockedPage(page1, viewer: alice) }
        #expect(list.count == 2 && Set(list.users.map(\.id)) == [bob, mallory])
        // Lookup: a shared room's members by name; anyone by exact email; blocked users still appear.
        #expect(try engine.read { try $0.searchUsers("BO", viewer: alice, limit: 20) }.map(\.id) == [bob])
        #expect(try engine.read { try $0.searchUsers("mall", viewer: alice, limit: 20) }.isEmpty)
        #expect(try engine.read { try $0.searchUsers("Mallory@Example.com", viewer: alice, limit: 20) }.map(\.id) == [mallory])
        #expect(try engine.read { try $0.searchUsers("%", viewer: alice, limit: 20) }.isEmpty)
    }

    @Test(arguments: EngineKind.available)
    func searchLeavesOutTheBlockedUsersMessages(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        let index = try engine.makeSearchIndex(indexPath: try TestServer.temporaryDirectory() + "/search.sqlite")
        _ = try send(engine, room, "apple from bob", from: "bob")
        _ = try send(engine, room, "apple from alice")
        _ = try engine.write { try $0.block(bob, by: alice) }
        try StoreEngineTests.catchUpFully(index)
        #expect(try index.search("apple", user: alice, filters: SearchIndex.Filters()).map(\.content) == ["apple from alice"])
        #expect(try index.search("apple", user: bob, filters: SearchIndex.Filters()).count == 2)
    }
}
