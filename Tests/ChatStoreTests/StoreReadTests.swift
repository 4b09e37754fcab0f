import ChatCore
@testable import ChatStore
import Foundation
import GRDB
import Testing

/// Every row the store reads comes back with each field in its place: the
/// readers look columns up by name, and a join that selects two `id`s (a
/// message's and its sender's) must not hand one for the other.
@Suite struct StoreReadTests {
    let database: ChatDatabase
    let alice: User
    let bob: User
    let room: String

    init() throws {
        database = try ChatDatabase.inMemory()
        let aliceIdentity = Identity(sub: "alice", email: "alice@example.com", name: "Alice", picture: "https://img.example/alice.png")
        let bobIdentity = Identity(sub: "bob", email: "bob@example.com", name: nil, picture: nil)
        let room = IDs.uuid7()
        try database.writer.write { db in
            try Store.upsert(aliceIdentity, in: db)
            try Store.upsert(bobIdentity, in: db)
            try db.execute(sql: "UPDATE users SET profile_picture = 'profiles/bob.png' WHERE id = ?", arguments: [bobIdentity.id])
            _ = try Store.createRoom(
                Requests.RoomCreate(id: room, name: "plans", roomType: "group", participantIDs: [bobIdentity.id]),
                creator: aliceIdentity.id, in: db
            )
        }
        alice = aliceIdentity.user
        bob = User(id: bobIdentity.id, email: "bob@example.com", displayName: "bob", profilePicture: "profiles/bob.png", clerkProfileImageURL: nil)
        self.room = room
    }

    func send(_ content: String, from sender: User, replyTo: String? = nil, clientMsgID: String? = nil, file: StoredFile? = nil) throws -> Message {
        let request = Requests.MessageCreate(
            id: IDs.uuid7(), roomID: room, content: content, messageType: file == nil ? "text" : "file",
            replyTo: replyTo, clientMsgID: clientMsgID, file: file
        )
        guard case .created(let message) = try database.writer.write({ try Store.createMessage(request, sender: sender, maxChars: 1000, in: $0) }) else {
            throw StoreError.notFound("not created")
        }
        return message
    }

    func page(viewer: User) throws -> [Message] {
        let request = Requests.MessageList(roomID: room, page: Requests.Page(page: 1, pageSize: 50, url: "u", query: []), before: nil, after: nil)
        return try database.writer.read { try Store.messagePage(request, viewer: viewer.id, in: $0).messages }
    }

    @Test func usersComeBackWithEveryColumn() throws {
        let users = try database.writer.read { try Store.users([alice.id, bob.id], in: $0) }
        #expect(users == [alice.id: alice, bob.id: bob])
    }

    @Test func aMessageKeepsItsOwnIDApartFromItsSenders() throws {
        let first = try send("first", from: alice, clientMsgID: "c-1")
        let file = StoredFile(hash: String(repeating: "ab", count: 32), name: "notes.txt", size: 42)
        let second = try send("", from: bob, replyTo: first.id, file: file)
        let messages = try page(viewer: alice)
        #expect(messages.map(\.id) == [second.id, first.id])
        let (newest, oldest) = (messages[0], messages[1])
        #expect(newest.sender == bob && oldest.sender == alice)
        #expect(newest.roomID == room && newest.seq == 2 && oldest.seq == 1)
        #expect(oldest.content == "first" && oldest.messageType == .text && oldest.clientMsgID == "c-1" && oldest.replyTo == nil)
        #expect(newest.messageType == .file && newest.replyTo == first.id && newest.clientMsgID == nil)
        #expect(newest.fileAttachment == file.hash && newest.fileName == "notes.txt" && newest.fileSize == 42)
        #expect(oldest.fileAttachment == nil && oldest.fileName == nil && oldest.fileSize == nil)
        #expect(newest.timestamp == second.timestamp && oldest.timestamp == first.timestamp)
        #expect(oldest.editedAt == nil && !oldest.isDeleted && oldest.reactions.isEmpty && oldest.readBy.isEmpty)
    }

    @Test func editsReactionsReadsAndDeletionsAreReadBack() throws {
        let message = try send("draft", from: alice)
        let ref = Requests.MessageRef(roomID: room, messageID: message.id)
        let edited = try database.writer.write { db in
            _ = try Store.react(Requests.MessageReact(roomID: room, messageID: message.id, emoji: "👍", add: true), user: bob.id, in: db)
            #expect(try Store.markMessageRead(ref, user: bob.id, in: db) == false)
            #expect(try Store.markMessageRead(ref, user: bob.id, in: db) == true)
            return try Store.editMessage(Requests.MessageUpdate(roomID: room, messageID: message.id, content: "final"), user: alice.id, maxChars: 1000, in: db)
        }
        #expect(edited.id == message.id && edited.content == "final" && edited.editedAt != nil)
        #expect(edited.reactions.map(\.emoji) == ["👍"] && edited.reactions.map(\.users) == [[bob.id]])
        #expect(edited.readBy == [bob])
        let deleted = try database.writer.write { try Store.deleteMessage(ref, user: alice.id, in: $0) }
        #expect(deleted.isDeleted && deleted.content == "" && deleted.sender == alice)
    }

    @Test func theRoomListShowsEveryFieldOfARoom() throws {
        _ = try send("older", from: alice)
        let last = try send("newest", from: bob)
        let request = Requests.RoomList(page: Requests.Page(page: 1, pageSize: 50, url: "u", query: []), roomType: nil, discover: false)
        let (count, rooms) = try database.writer.read { try Store.roomPage(request, viewer: alice.id, in: $0) }
        #expect(count == 1)
        let listed = try #require(rooms.first)
        #expect(listed.id == room && listed.name == "plans" && listed.roomType == .group && listed.isActive)
        #expect(Set(listed.participants) == [alice, bob] && listed.createdBy == alice && listed.otherUser == nil)
        #expect(listed.updatedAt >= listed.createdAt)
        #expect(listed.lastMessage == MessageSummary(id: last.id, content: "newest", sender: bob, timestamp: last.timestamp))
        #expect(listed.unreadCount == 1)  // bob's message; alice's own does not count
    }

    @Test func aDirectRoomShowsTheOtherUser() throws {
        let direct = try database.writer.write { db in
            try Store.directRoom(Requests.RoomDirect(userID: bob.id, newRoomID: IDs.uuid7()), user: alice.id, in: db).0.id
        }
        let (forAlice, forBob) = try database.writer.read { db in
            (try Store.room(direct, viewer: alice.id, in: db), try Store.room(direct, viewer: bob.id, in: db))
        }
        #expect(forAlice.roomType == .direct && forAlice.name == nil && forAlice.lastMessage == nil && forAlice.unreadCount == 0)
        #expect(forAlice.otherUser == bob && forBob.otherUser == alice)
        let info = try database.writer.read { try Store.roomInfo(direct, user: bob.id, in: $0) }
        #expect(info == Store.RoomInfo(id: direct, roomType: .direct, isActive: true, createdBy: alice.id, isParticipant: true))
    }

    @Test func typingAndSessionsAreReadBack() throws {
        let seen = Timestamp(micros: Timestamp.now().micros - 1_000)
        let session = Requests.Session(sessionID: "s-1", roomID: room, sessionType: "web", userAgent: "test/1", ipAddress: "127.0.0.1")
        try database.writer.write { db in
            try Store.saveTyping([Store.TypingState(roomID: room, userID: bob.id, isTyping: true, lastSeen: seen)], in: db)
            try Store.openSession(session, user: alice.id, in: db)
        }
        let (typing, sessions) = try database.writer.read { db in
            (try Store.typingUsers(room, viewer: alice.id, since: Timestamp(micros: 0), in: db), try Store.activeSessions(user: alice.id, in: db))
        }
        #expect(typing.map(\.user) == [bob] && typing.map(\.lastSeen) == [seen])
        let record = try #require(sessions.first)
        #expect(sessions.count == 1 && record.sessionID == "s-1" && record.sessionType == "web" && record.isActive)
        #expect(record.userAgent == "test/1" && record.ipAddress == "127.0.0.1" && record.lastPing == record.connectedAt)
    }
}
