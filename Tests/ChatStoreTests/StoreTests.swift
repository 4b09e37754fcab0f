import ChatCore
import ChatStore
import Foundation
import GRDB
import Testing

@Suite struct StoreTests {
    let database: ChatDatabase

    init() throws {
        database = try ChatDatabase.inMemory()
    }

    func identity(_ sub: String) -> Identity { Identity(sub: sub, email: "\(sub)@example.com", name: nil, picture: nil) }

    func setUp(members: [String] = ["alice", "bob"]) throws -> String {
        let room = IDs.uuid7()
        try database.pool.write { db in
            for sub in members + ["mallory"] { try Store.upsert(identity(sub), in: db) }
            _ = try Store.createRoom(
                Requests.RoomCreate(id: room, name: "r", roomType: "group", participantIDs: members.dropFirst().map { identity($0).id }),
                creator: identity(members[0]).id, in: db
            )
        }
        return room
    }

    func create(_ room: String, _ content: String, id: String = IDs.uuid7(), clientMsgID: String? = nil, sender: String = "alice") throws -> Store.CreateOutcome {
        try database.pool.write { db in
            try Store.createMessage(
                Requests.MessageCreate(id: id, roomID: room, content: content, messageType: "text", replyTo: nil, clientMsgID: clientMsgID),
                sender: identity(sender).user, maxChars: 10_000, in: db
            )
        }
    }

    @Test func messagesGetIncreasingSequenceNumbers() throws {
        let room = try setUp()
        var seqs: [Int64] = []
        for i in 0..<5 {
            guard case .created(let message) = try create(room, "m\(i)") else { Issue.record("not created"); return }
            seqs.append(message.seq)
        }
        #expect(seqs == [1, 2, 3, 4, 5])
    }

    @Test func resendingACommandStoresOnce() throws {
        let room = try setUp()
        let id = IDs.uuid7()
        guard case .created = try create(room, "once", id: id) else { Issue.record("not created"); return }
        guard case .resent(let again) = try create(room, "once", id: id) else { Issue.record("stored twice"); return }
        #expect(again.id == id)
        let count = try database.pool.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM messages") }
        #expect(count == 1)
    }

    @Test func clientMessageIDDeduplicates() throws {
        let room = try setUp()
        guard case .created(let first) = try create(room, "a", clientMsgID: "c-1") else { Issue.record("not created"); return }
        guard case .duplicate(let original) = try create(room, "a again", clientMsgID: "c-1") else { Issue.record("not deduplicated"); return }
        #expect(original.id == first.id)
        // Another sender may use the same client id.
        guard case .created = try create(room, "b", clientMsgID: "c-1", sender: "bob") else { Issue.record("bob refused"); return }
    }

    @Test func accessIsChecked() throws {
        let room = try setUp()
        #expect(throws: StoreError.forbidden()) { try create(room, "hi", sender: "mallory") }
        #expect(throws: StoreError.notFound("Room not found")) { try create(IDs.uuid7(), "hi") }
        #expect(throws: StoreError.self) { try create(room, "   ") }
    }

    /// Issue 10: the store holds every domain rule itself; a command that
    /// skipped the frontend's checks is refused, never obeyed or fatal.
    @Test func theStoreEnforcesDomainRulesWithoutTheFrontend() throws {
        let room = try setUp()
        let alice = identity("alice"), bob = identity("bob"), mallory = identity("mallory")
        func refusal(_ body: (Database) throws -> Void) -> StoreError? {
            do { try database.pool.write(body); return nil } catch let error as StoreError { return error } catch { return nil }
        }
        func fields(_ error: StoreError?) -> Set<String> {
            Set((error?.problems ?? []).compactMap { problem -> String? in
                if case .field(let name, _) = problem { name } else { nil }
            })
        }
        // Pages whose offset overflows are invalid pages, for rooms and messages.
        for page in [Int.max, Int.max / 50 + 1, Int.min, 0] {
            let pageRequest = Requests.Page(page: page, pageSize: 50, url: "u", query: [])
            #expect(refusal { _ = try Store.roomPage(Requests.RoomList(page: pageRequest, roomType: nil, discover: false), viewer: alice.id, in: $0) } == StoreError.invalidPage)
            #expect(refusal { _ = try Store.messagePage(Requests.MessageList(roomID: room, page: pageRequest, before: nil, after: nil), viewer: alice.id, in: $0) } == StoreError.invalidPage)
        }
        // Server-only and attachment-less message types; a file name over 255.
        for type in ["system", "typing", "image", "file"] {
            let request = Requests.MessageCreate(id: IDs.uuid7(), roomID: room, content: "x", messageType: type, replyTo: nil, clientMsgID: nil)
            #expect(fields(refusal { _ = try Store.createMessage(request, sender: alice.user, maxChars: 100, in: $0) }) == ["message_type"], "\(type)")
        }
        let longFile = StoredFile(hash: String(repeating: "a", count: 64), name: String(repeating: "n", count: 256), size: 1)
        let withFile = Requests.MessageCreate(id: IDs.uuid7(), roomID: room, content: "", messageType: "file", replyTo: nil, clientMsgID: nil, file: longFile)
        #expect(fields(refusal { _ = try Store.createMessage(withFile, sender: alice.user, maxChars: 100, in: $0) }) == ["file_attachment"])
        // Room names over 255 code points.
        let longName = String(repeating: "é", count: 256)
        #expect(fields(refusal { _ = try Store.createRoom(Requests.RoomCreate(id: IDs.uuid7(), name: longName, roomType: "group", participantIDs: []), creator: alice.id, in: $0) }) == ["name"])
        #expect(fields(refusal { _ = try Store.updateRoom(Requests.RoomUpdate(roomID: room, setName: true, name: longName, participantIDs: []), user: alice.id, in: $0) }) == ["name"])
        // A direct room neither grows nor gets a name.
        let direct = try database.pool.write { try Store.directRoom(Requests.RoomDirect(userID: bob.id, newRoomID: IDs.uuid7()), user: alice.id, in: $0).0.id }
        #expect(fields(refusal { _ = try Store.updateRoom(Requests.RoomUpdate(roomID: direct, setName: true, name: "group now", participantIDs: [mallory.id]), user: alice.id, in: $0) }) == ["name", "participant_ids"])
        let members = try database.pool.read { try Store.room(direct, viewer: alice.id, in: $0).participants.map(\.id) }
        #expect(Set(members) == [alice.id, bob.id])
        // Reactions: 32 bytes per emoji, 50 distinct per message.
        guard case .created(let message) = try create(room, "react") else { Issue.record("not created"); return }
        func react(_ emoji: String) -> StoreError? {
            refusal { _ = try Store.react(Requests.MessageReact(roomID: room, messageID: message.id, emoji: emoji, add: true), user: bob.id, in: $0) }
        }
        #expect(fields(react(String(repeating: "x", count: 33))) == ["emoji"])
        for i in 0..<50 { #expect(react("e\(i)") == nil) }
        #expect(fields(react("e50")) == ["emoji"])
        #expect(react("e0") == nil)  // an existing one, a no-op
    }

    @Test func roomListUsesAFixedNumberOfQueries() throws {
        var rooms: [String] = []
        try database.pool.write { db in
            for sub in ["alice", "bob"] { try Store.upsert(identity(sub), in: db) }
        }
        for _ in 0..<40 {
            let room = IDs.uuid7()
            try database.pool.write { db in
                _ = try Store.createRoom(Requests.RoomCreate(id: room, name: nil, roomType: "group", participantIDs: [identity("bob").id]), creator: identity("alice").id, in: db)
            }
            _ = try create(room, "hello")
            rooms.append(room)
        }
        func statements(pageSize: Int) throws -> (Int, Int) {
            var count = 0
            let page = try database.pool.read { db in
                db.trace { _ in count += 1 }
                defer { db.trace(options: [], nil) }
                return try Store.roomPage(Requests.RoomList(page: Requests.Page(page: 1, pageSize: pageSize, url: "u", query: []), roomType: nil, discover: false), viewer: identity("bob").id, in: db)
            }
            #expect(page.rooms.allSatisfy { $0.unreadCount == 1 && $0.lastMessage?.content == "hello" })
            return (count, page.rooms.count)
        }
        let (few, fewRooms) = try statements(pageSize: 2)
        let (many, manyRooms) = try statements(pageSize: 40)
        #expect(fewRooms == 2 && manyRooms == 40)
        #expect(few == many, "queries grow with the page: \(few) vs \(many)")
    }
}
