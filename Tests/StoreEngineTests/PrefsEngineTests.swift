import ChatCore
import ChatStore
import Foundation
import Testing

/// Mute, notification level and mentions (issue 16), the same on every engine.
@Suite struct PrefsEngineTests {
    /// alice, bob and carol in one group room (mallory outside).
    func roomOfThree(_ engine: any StoreEngine) throws -> String {
        let room = try groupRoom(engine)
        try engine.write { tx in
            try tx.upsert(identity("carol"))
            _ = try tx.updateRoom(Requests.RoomUpdate(roomID: room, setName: false, name: nil, participantIDs: [identity("carol").id]),
                                  user: identity("alice").id, maxParticipants: 100)
        }
        return room
    }

    func view(_ engine: any StoreEngine, _ room: String, as sub: String) throws -> Room {
        try engine.read { try $0.room(room, viewer: identity(sub).id) }
    }

    func feed(_ engine: any StoreEngine, of sub: String) throws -> (count: Int64, messages: [Message]) {
        try engine.read { try $0.mentionPage(Requests.MentionList(page: page1), viewer: identity(sub).id) }
    }

    @Test(arguments: EngineKind.available)
    func mentionsAreParsedStoredAndCountedOnWrite(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try roomOfThree(engine)
        let (bob, carol) = (identity("bob").id, identity("carol").id)
        let toBob = try #require(created(try send(engine, room, "@bob hi")))
        let here = try #require(created(try send(engine, room, "@here lunch?")))
        let plain = try #require(created(try send(engine, room, "no mention, mail bob@example.com")))
        #expect(toBob.mentions == [bob] && here.mentions == [bob, carol] && plain.mentions == [])
        // Stored with the message, read back on every path.
        let page = try engine.read { try $0.messagePage(Requests.MessageList(roomID: room, page: page1, before: nil, after: nil), viewer: bob) }
        #expect(page.messages.map(\.mentions) == [[], [bob, carol], [bob]])
        #expect(try view(engine, room, as: "bob").unreadMentions == 2)
        #expect(try view(engine, room, as: "carol").unreadMentions == 1)
        #expect(try view(engine, room, as: "alice").unreadMentions == 0)
        // Reading a mentioning message takes it off; reading another does not.
        _ = try engine.write { try $0.markMessageRead(Requests.MessageRef(roomID: room, messageID: toBob.id), user: bob) }
        _ = try engine.write { try $0.markMessageRead(Requests.MessageRef(roomID: room, messageID: plain.id), user: bob) }
        #expect(try view(engine, room, as: "bob").unreadMentions == 1)
        // A deleted message no longer counts, read or not, and leaves the feeds.
        _ = try engine.write { try $0.markMessageRead(Requests.MessageRef(roomID: room, messageID: here.id), user: carol) }
        _ = try engine.write { try $0.deleteMessage(Requests.MessageRef(roomID: room, messageID: here.id), user: identity("alice").id) }
        #expect(try view(engine, room, as: "bob").unreadMentions == 0)
        #expect(try view(engine, room, as: "carol").unreadMentions == 0)
        #expect(try feed(engine, of: "bob").messages.map(\.id) == [toBob.id])
        #expect(try feed(engine, of: "carol").count == 0)
        // Reading the room clears every mention in it.
        let first = try #require(created(try send(engine, room, "@Carol one")))
        let second = try #require(created(try send(engine, room, "@carol@example.com two", from: "bob")))
        #expect(try view(engine, room, as: "carol").unreadMentions == 2)
        #expect(try feed(engine, of: "carol").messages.map(\.id) == [second.id, first.id])
        #expect(try engine.write { try $0.markRoomRead(room, user: carol) } == 4)
        #expect(try view(engine, room, as: "carol").unreadMentions == 0)
        #expect(try feed(engine, of: "carol").count == 2)
    }

    @Test(arguments: EngineKind.available)
    func aReturningMemberGetsItsMentionsBack(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try roomOfThree(engine)
        let carol = identity("carol").id
        let read = try #require(created(try send(engine, room, "@carol read this")))
        _ = try #require(created(try send(engine, room, "@carol and this")))
        _ = try engine.write { try $0.markMessageRead(Requests.MessageRef(roomID: room, messageID: read.id), user: carol) }
        try engine.write { try $0.leaveRoom(room, user: carol) }
        // Not a member: the room's mentions are not in the feed.
        #expect(try feed(engine, of: "carol").count == 0)
        _ = try engine.write {
            try $0.updateRoom(Requests.RoomUpdate(roomID: room, setName: false, name: nil, participantIDs: [carol]), user: identity("alice").id, maxParticipants: 100)
        }
        #expect(try view(engine, room, as: "carol").unreadMentions == 1)
        #expect(try feed(engine, of: "carol").count == 2)
    }

    @Test(arguments: EngineKind.available)
    func muteAndNotificationLevelArePerMember(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        let (alice, bob) = (identity("alice").id, identity("bob").id)
        var fresh = try view(engine, room, as: "alice")
        #expect(!fresh.muted && fresh.mutedUntil == nil && fresh.notificationLevel == "all")
        try engine.write { try $0.mute(Requests.RoomMute(roomID: room, until: nil), user: alice, muted: true) }
        fresh = try view(engine, room, as: "alice")
        #expect(fresh.muted && fresh.mutedUntil == nil)
        #expect(try !view(engine, room, as: "bob").muted)
        let later = Timestamp.now().micros + 3_600_000_000
        try engine.write { try $0.mute(Requests.RoomMute(roomID: room, until: later), user: bob, muted: true) }
        fresh = try view(engine, room, as: "bob")
        #expect(fresh.muted && fresh.mutedUntil?.micros == later)
        // A timed mute whose end has passed reads as not muted.
        try engine.write { try $0.mute(Requests.RoomMute(roomID: room, until: Timestamp.now().micros - 1), user: bob, muted: true) }
        #expect(try !view(engine, room, as: "bob").muted)
        try engine.write { try $0.mute(Requests.RoomMute(roomID: room, until: nil), user: alice, muted: false) }
        #expect(try !view(engine, room, as: "alice").muted)
        // A muted room still counts unread messages.
        try engine.write { try $0.mute(Requests.RoomMute(roomID: room, until: nil), user: bob, muted: true) }
        _ = try send(engine, room, "still counted")
        #expect(try view(engine, room, as: "bob").unreadCount == 1)

        try engine.write { try $0.setNotificationLevel(Requests.RoomNotifications(roomID: room, level: "mentions"), user: bob) }
        #expect(try view(engine, room, as: "bob").notificationLevel == "mentions")
        #expect(try view(engine, room, as: "alice").notificationLevel == "all")
        #expect(throws: StoreError.self) {
            try engine.write { try $0.setNotificationLevel(Requests.RoomNotifications(roomID: room, level: "loud"), user: bob) }
        }
        let mallory = identity("mallory").id
        #expect(throws: StoreError.forbidden()) { try engine.write { try $0.mute(Requests.RoomMute(roomID: room, until: nil), user: mallory, muted: true) } }
        #expect(throws: StoreError.notFound("Room not found")) {
            try engine.write { try $0.setNotificationLevel(Requests.RoomNotifications(roomID: IDs.uuid7(), level: "all"), user: mallory) }
        }
    }
}
