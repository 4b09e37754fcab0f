import ChatCore
import ChatPostgres
import ChatStore
import ChatTesting
import Foundation
import Testing

/// Which engine a test runs on.
enum EngineKind: String, CustomStringConvertible, CaseIterable, Sendable {
    case sqlite, postgres

    var description: String { rawValue }

    /// SQLite always; PostgreSQL where Debian's server is installed (CI installs it).
    static var available: [EngineKind] { PostgresServer.isInstalled ? allCases : [.sqlite] }

    /// A fresh, migrated database. `makeAnother` opens a second engine (its
    /// own connections) on the same data.
    func make() throws -> (engine: any StoreEngine, makeAnother: () throws -> any StoreEngine) {
        switch self {
        case .sqlite:
            let path = try TestServer.temporaryDirectory() + "/chat.sqlite"
            return (try ChatDatabase(path: path), { try ChatDatabase(path: path) })
        case .postgres:
            let url = try PostgresServer.start().createDatabase()
            let engine = try PostgresEngine(url: url, poolSize: 4)
            try engine.migrate()
            return (engine, { try PostgresEngine(url: url, poolSize: 4) })
        }
    }
}

func identity(_ sub: String) -> Identity { Identity(sub: sub, email: "\(sub)@example.com", name: nil, picture: nil) }

let page1 = Requests.Page(page: 1, pageSize: 50, url: "u", query: [])

/// A room of alice and bob (mallory exists, outside it).
func groupRoom(_ engine: any StoreEngine) throws -> String {
    let room = IDs.uuid7()
    try engine.write { tx in
        for sub in ["alice", "bob", "mallory"] { try tx.upsert(identity(sub)) }
        _ = try tx.createRoom(Requests.RoomCreate(id: room, name: "Plans", roomType: "group", participantIDs: [identity("bob").id]),
                              creator: identity("alice").id, maxParticipants: 100)
    }
    return room
}

func send(_ engine: any StoreEngine, _ room: String, _ content: String, id: String = IDs.uuid7(), clientMsgID: String? = nil, from sub: String = "alice") throws -> Store.CreateOutcome {
    try engine.write { tx in
        try tx.createMessage(Requests.MessageCreate(id: id, roomID: room, content: content, messageType: "text", replyTo: nil, clientMsgID: clientMsgID),
                             sender: identity(sub).user, maxChars: 10_000)
    }
}

func created(_ outcome: Store.CreateOutcome) -> Message? {
    if case .created(let message) = outcome { message } else { nil }
}

/// The same domain behaviour on every engine: what the workers rely on.
@Suite struct StoreEngineTests {
    @Test(arguments: EngineKind.available)
    func messagesPagesAndCountersAgree(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        let messages = try (0..<5).map { try #require(created(try send(engine, room, "m\($0)"))) }
        #expect(messages.map(\.seq) == [1, 2, 3, 4, 5])
        let page = try engine.read { try $0.messagePage(Requests.MessageList(roomID: room, page: page1, before: nil, after: nil), viewer: identity("bob").id) }
        #expect(page.count == 5 && page.messages.map(\.content) == ["m4", "m3", "m2", "m1", "m0"])
        let after = try engine.read { try $0.messagePage(Requests.MessageList(roomID: room, page: page1, before: nil, after: messages[2].id), viewer: identity("bob").id) }
        #expect(after.messages.map(\.seq) == [5, 4])
        let edited = try engine.write { try $0.editMessage(Requests.MessageUpdate(roomID: room, messageID: messages[0].id, content: "changed"), user: identity("alice").id, maxChars: 100) }
        #expect(edited.content == "changed" && edited.editedAt != nil)
        _ = try engine.write { try $0.deleteMessage(Requests.MessageRef(roomID: room, messageID: messages[1].id), user: identity("alice").id) }
        func bobsRoom() throws -> Room {
            try #require(try engine.read { try $0.roomPage(Requests.RoomList(page: page1, roomType: nil, discover: false), viewer: identity("bob").id) }.rooms.first)
        }
        #expect(try bobsRoom().unreadCount == 4)
        #expect(try bobsRoom().lastMessage?.content == "m4")
        let already = try engine.write { try $0.markMessageRead(Requests.MessageRef(roomID: room, messageID: messages[4].id), user: identity("bob").id) }
        #expect(!already)
        #expect(try bobsRoom().unreadCount == 3)
        #expect(try engine.write { try $0.markRoomRead(room, user: identity("bob").id) } == 3)
        #expect(try bobsRoom().unreadCount == 0)
        let reread = try engine.read { try $0.messages(ids: [messages[4].id]) }
        #expect(reread.first?.readBy.map(\.id) == [identity("bob").id])
        #expect(throws: StoreError.forbidden()) { try send(engine, room, "hi", from: "mallory") }
    }

    @Test(arguments: EngineKind.available)
    func resendsAndClientMessageIDsStoreOnce(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        let id = IDs.uuid7()
        let first = try #require(created(try send(engine, room, "once", id: id, clientMsgID: "c-1")))
        guard case .resent(let again) = try send(engine, room, "once", id: id, clientMsgID: "c-1") else { Issue.record("stored twice"); return }
        #expect(again.id == first.id)
        guard case .duplicate(let original) = try send(engine, room, "again", clientMsgID: "c-1") else { Issue.record("not deduplicated"); return }
        #expect(original.id == first.id)
        #expect(created(try send(engine, room, "bob's", clientMsgID: "c-1", from: "bob"))?.seq == 2)
        // A resend is answered before any check: after the sender left, it is
        // still the stored message, not a refusal the client would show.
        try engine.write { try $0.leaveRoom(room, user: identity("alice").id) }
        guard case .resent(let late) = try send(engine, room, "once", id: id, clientMsgID: "c-1") else { Issue.record("a resend refused"); return }
        #expect(late.id == first.id)
        #expect(throws: StoreError.forbidden()) { try send(engine, room, "new", from: "alice") }
    }

    /// The batch processor's contract: a savepoint's throw undoes its
    /// writes only; the transaction and the savepoints after it go on.
    @Test(arguments: EngineKind.available)
    func aSavepointUndoesOnlyItself(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        func message(_ content: String) -> Requests.MessageCreate {
            Requests.MessageCreate(id: IDs.uuid7(), roomID: room, content: content, messageType: "text", replyTo: nil, clientMsgID: nil)
        }
        try engine.write { tx in
            _ = try tx.savepoint { try tx.createMessage(message("kept"), sender: identity("alice").user, maxChars: 100) }
            #expect(throws: StoreError.self) {
                try tx.savepoint { () throws -> Void in
                    _ = try tx.createMessage(message("undone"), sender: identity("alice").user, maxChars: 100)
                    throw StoreError.badRequest(error: "refused after writing")
                }
            }
            _ = try tx.savepoint { try tx.createMessage(message("kept too"), sender: identity("alice").user, maxChars: 100) }
        }
        let page = try engine.read { try $0.messagePage(Requests.MessageList(roomID: room, page: page1, before: nil, after: nil), viewer: identity("alice").id) }
        #expect(page.messages.map(\.content) == ["kept too", "kept"])
        #expect(page.messages.map(\.seq) == [2, 1], "the undone message's seq is taken again")
        #expect(try engine.read { try $0.room(room, viewer: identity("bob").id) }.unreadCount == 2)
    }

    /// A NUL in one read (`?room_type=%00` if it got past the frontend) is
    /// that read's 400 or empty answer, never the end of the transaction the
    /// other reads of its batch share; in a message, a 400 on both engines.
    @Test(arguments: EngineKind.available)
    func aNulRefusesOnlyItsOwnCommand(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        let bob = identity("bob").id
        let rooms = try engine.read { tx -> Int in
            do {
                // SQLite's binding ends the text at the NUL: an answer, whichever.
                _ = try tx.roomPage(Requests.RoomList(page: page1, roomType: "group\u{0}", discover: false), viewer: bob)
                #expect(kind == .sqlite)
            } catch let error as StoreError {
                #expect(error.code == .badRequest)
            }
            return try tx.roomPage(Requests.RoomList(page: page1, roomType: nil, discover: false), viewer: bob).rooms.count
        }
        #expect(rooms == 1)
        #expect(throws: StoreError.badRequest([("content", Validation.nulMessage)])) { try send(engine, room, "a\u{0}b") }
    }

    /// Catch-ups until nothing is left to index. On PostgreSQL a pass takes
    /// only transactions below the snapshot's xmin, which is the cluster's:
    /// another test's open transaction (another database) holds it back a while.
    static func catchUpFully(_ index: any MessageSearchIndex) throws {
        let deadline = Date().addingTimeInterval(20)
        repeat {
            let (_, done) = try index.catchUp()
            if done, try index.lag() == 0 { return }
            usleep(20_000)
        } while Date() < deadline
        Issue.record("the index did not catch up")
    }

    @Test(arguments: EngineKind.available)
    func searchFindsLiteralSubstringsCaseInsensitively(_ kind: EngineKind) throws {
        let engine = try kind.make().engine
        let room = try groupRoom(engine)
        let index = try engine.makeSearchIndex(indexPath: try TestServer.temporaryDirectory() + "/search.sqlite")
        let done = try #require(created(try send(engine, room, "100% Done_ok")))
        _ = try send(engine, room, "Hello World")
        _ = try send(engine, room, "nothing here")
        try Self.catchUpFully(index)
        func found(_ query: String, as sub: String = "bob") throws -> [String] {
            try index.search(query, user: identity(sub).id, filters: SearchIndex.Filters()).map(\.content)
        }
        #expect(try found("WORLD") == ["Hello World"])
        #expect(try found("% d") == ["100% Done_ok"])
        #expect(try found("e_o") == ["100% Done_ok"])
        #expect(try found("%") == ["100% Done_ok"])
        #expect(try found("e%o").isEmpty, "a LIKE metacharacter is literal")
        #expect(try found("lo") == ["Hello World"])
        #expect(try found("World", as: "mallory").isEmpty)
        _ = try engine.write { try $0.editMessage(Requests.MessageUpdate(roomID: room, messageID: done.id, content: "finished"), user: identity("alice").id, maxChars: 100) }
        try Self.catchUpFully(index)
        #expect(try found("Done").isEmpty)
        #expect(try found("finish") == ["finished"])
        #expect(try index.lag() == 0)
        let rooms = try engine.read { try $0.searchRooms("PLA", viewer: identity("bob").id, limit: 50) }
        #expect(rooms.map(\.id) == [room])
    }
}
