import ChatCore
import ChatStore
import ChatWire
import Foundation
import Testing

@testable import ChatWorkers

/// The store's cache of encoded pages: a repeated read is served from it, and
/// every change that shows on a page, whoever made it, shows on the next read.
@Suite struct StoreReadCacheTests {
    let harness: WorkerHarness
    let worker: StoreWorker
    /// The receipts worker of another process: its own connections to the file.
    let receipts: ReceiptsWorker
    let alice = WorkerHarness.identity("alice"), bob = WorkerHarness.identity("bob"), mallory = WorkerHarness.identity("mallory")

    init() throws {
        harness = try WorkerHarness()
        worker = StoreWorker(database: harness.database, config: harness.config, logger: harness.logger)
        let elsewhere = try ChatDatabase(path: harness.config.dataDir + "/chat.sqlite")
        receipts = ReceiptsWorker(database: elsewhere, config: harness.config, logger: harness.logger)
    }

    static let page = Requests.Page(page: 1, pageSize: 50, url: "http://127.0.0.1/api/chat/rooms/", query: [])

    /// A page's reply body, through the worker as the frontend asks for it.
    func messages(_ room: String, as user: Identity) throws -> (status: Status, body: [String: Any]) {
        try read(.messageList, Requests.MessageList(roomID: room, page: Self.page, before: nil, after: nil), as: user)
    }

    func rooms(as user: Identity) throws -> (status: Status, body: [String: Any]) {
        try read(.roomList, Requests.RoomList(page: Self.page, roomType: nil, discover: false), as: user)
    }

    func read(_ kind: CommandKind, _ body: some Encodable, as user: Identity) throws -> (status: Status, body: [String: Any]) {
        let command = WorkerHarness.command(kind, body, as: user)
        let reply = try #require(worker.handle([command]).reply(to: command))
        let object = try JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any] ?? [:]
        return (reply.status, object)
    }

    func write(_ kind: CommandKind, _ body: some Encodable, as user: Identity) throws {
        let command = WorkerHarness.command(kind, body, as: user)
        let reply = try #require(worker.handle([command]).reply(to: command))
        #expect([.ok, .created, .noContent].contains(reply.status), "\(kind.rawValue): \(reply.status)")
    }

    func send(_ room: String, _ content: String, id: String = IDs.uuid7()) throws {
        try write(.messageCreate, Requests.MessageCreate(id: id, roomID: room, content: content, messageType: "text", replyTo: nil, clientMsgID: nil), as: alice)
    }

    static func results(_ body: [String: Any]) -> [[String: Any]] { body["results"] as? [[String: Any]] ?? [] }
    static func first(_ body: [String: Any]) -> [String: Any] { results(body).first ?? [:] }

    @Test func aRepeatedReadIsServedFromTheCacheWithTheSameBytes() throws {
        let room = try harness.groupRoom()
        try send(room, "one")
        let list = WorkerHarness.command(.messageList, Requests.MessageList(roomID: room, page: Self.page, before: nil, after: nil), as: bob)
        let first = try #require(worker.handle([list]).reply(to: list))
        #expect(worker.pages.count == 1)
        let again = try #require(worker.handle([list]).reply(to: list))
        #expect(again.body == first.body)
        #expect(worker.pages.count == 1)
        // Another caller's page is its own entry.
        _ = try messages(room, as: alice)
        #expect(worker.pages.count == 2)
    }

    @Test func newEditedDeletedAndReactedMessagesShowOnTheNextRead() throws {
        let room = try harness.groupRoom()
        let id = IDs.uuid7()
        try send(room, "v1", id: id)
        #expect(Self.first(try messages(room, as: bob).body)["content"] as? String == "v1")
        try send(room, "v2")
        var page = try messages(room, as: bob).body
        #expect(page["count"] as? Int == 2 && Self.first(page)["content"] as? String == "v2")
        try write(.messageUpdate, Requests.MessageUpdate(roomID: room, messageID: id, content: "v1, edited"), as: alice)
        page = try messages(room, as: bob).body
        #expect(Self.results(page).last?["content"] as? String == "v1, edited")
        try write(.messageReact, Requests.MessageReact(roomID: room, messageID: id, emoji: "👍", add: true), as: bob)
        page = try messages(room, as: bob).body
        #expect((Self.results(page).last?["reactions"] as? [String: Any])?["👍"] != nil)
        try write(.messageDelete, Requests.MessageRef(roomID: room, messageID: id), as: alice)
        page = try messages(room, as: bob).body
        #expect(Self.results(page).last?["is_deleted"] as? Bool == true)
    }

    @Test func aReadReceiptWrittenByAnotherProcessShowsOnTheNextRead() throws {
        let room = try harness.groupRoom()
        let id = IDs.uuid7()
        try send(room, "read me", id: id)
        #expect((Self.first(try messages(room, as: alice).body)["read_by"] as? [Any])?.isEmpty == true)
        let rooms0 = Self.first(try rooms(as: bob).body)
        #expect(rooms0["unread_count"] as? Int == 1)
        let receipt = WorkerHarness.command(.receiptMessage, Requests.MessageRef(roomID: room, messageID: id), as: bob)
        #expect(receipts.handle([receipt]).reply(to: receipt)?.status == .ok)
        let readers = Self.first(try messages(room, as: alice).body)["read_by"] as? [[String: Any]] ?? []
        #expect(readers.map { $0["id"] as? String } == [bob.id])
        #expect(Self.first(try rooms(as: bob).body)["unread_count"] as? Int == 0)
    }

    @Test func membershipChangesShowOnTheNextRead() throws {
        let room = try harness.groupRoom()
        try send(room, "hello")
        #expect(try rooms(as: bob).body["count"] as? Int == 1)
        #expect(try messages(room, as: bob).status == .ok)
        try write(.roomLeave, Requests.RoomRef(roomID: room), as: bob)
        #expect(try rooms(as: bob).body["count"] as? Int == 0)
        #expect(try messages(room, as: bob).status == .forbidden)
        // Alice's cached list showed bob as a participant; now it does not.
        try write(.roomUpdate, Requests.RoomUpdate(roomID: room, setName: false, name: nil, participantIDs: [mallory.id]), as: alice)
        let participants = (Self.first(try rooms(as: alice).body)["participants"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
        #expect(Set(participants) == [alice.id, mallory.id])
        #expect(try rooms(as: mallory).body["count"] as? Int == 1)
    }

    @Test func aChangedProfileShowsOnTheNextRead() throws {
        let room = try harness.groupRoom()
        try send(room, "hi")
        #expect((Self.first(try messages(room, as: bob).body)["sender"] as? [String: Any])?["email"] as? String == "alice@example.com")
        // Alice's next token carries a new email: her first command upserts it.
        let renamed = Identity(sub: "alice", email: "alice@new.example.com", name: nil, picture: nil)
        _ = try rooms(as: renamed)
        #expect((Self.first(try messages(room, as: bob).body)["sender"] as? [String: Any])?["email"] as? String == "alice@new.example.com")
    }

    /// Another process writes while the worker reads: every page is one
    /// snapshot (count and the newest messages agree), and the last cached
    /// page is what a worker without a cache reads.
    @Test func readsDuringWritesOfAnotherProcessAreConsistentPages() async throws {
        let room = try harness.groupRoom()
        let other = try ChatDatabase(path: harness.config.dataDir + "/chat.sqlite")
        let writer = StoreWorker(database: other, config: harness.config, logger: harness.logger)
        let total = 300
        let writes = Task.detached {
            for n in 1...total {
                let command = WorkerHarness.command(.messageCreate, Requests.MessageCreate(
                    id: IDs.uuid7(), roomID: room, content: "m\(n)", messageType: "text", replyTo: nil, clientMsgID: nil), as: WorkerHarness.identity("alice"))
                _ = writer.handle([command])
            }
        }
        // Bounded: the writer's 300 commits end it long before.
        for _ in 0..<20_000 {
            let page = try messages(room, as: bob).body
            let count = page["count"] as? Int ?? -1
            let contents = Self.results(page).compactMap { $0["content"] as? String }
            let expected = stride(from: count, to: max(0, count - 50), by: -1).map { "m\($0)" }
            #expect(contents == expected, "count \(count)")
            if count == total || contents != expected { break }
        }
        await writes.value
        let fresh = StoreWorker(database: harness.database, config: harness.config, logger: harness.logger)
        let list = WorkerHarness.command(.messageList, Requests.MessageList(roomID: room, page: Self.page, before: nil, after: nil), as: bob)
        let cached = try #require(worker.handle([list]).reply(to: list))
        #expect(cached.body == fresh.handle([list]).reply(to: list)?.body)
    }

    @Test func theCacheIsBounded() throws {
        let cache = ReadCache(maxBytes: 1_000, maxEntries: 3)
        func key(_ n: Int) -> ReadCache.Key {
            ReadCache.Key(WorkerHarness.command(.roomList, Requests.RoomRef(roomID: "\(n)"), as: alice))
        }
        for n in 0..<3 { cache.store([UInt8](repeating: 0, count: 100), for: key(n)) }
        #expect(cache.count == 3)
        cache.store([UInt8](repeating: 0, count: 100), for: key(3))
        #expect(cache.count == 1, "a full cache starts over")
        cache.store([UInt8](repeating: 0, count: 251), for: key(4))
        #expect(cache.count == 1, "an entry over a quarter of the bytes is not kept")
    }
}
