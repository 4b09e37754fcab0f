import ChatCore
@testable import ChatStore
import Foundation
import GRDB
import Testing

/// The search index follows the main database (here in memory) by rowid for
/// new messages and by change for edits and deletions.
@Suite struct SearchIndexTests {
    let database: ChatDatabase
    let directory: String
    let alice = Identity(sub: "alice", email: "alice@example.com", name: nil, picture: nil)
    let room = IDs.uuid7()

    init() throws {
        database = try ChatDatabase.inMemory()
        directory = NSTemporaryDirectory() + "chatd-search-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try database.writer.write { [alice, room] db in
            try Store.upsert(alice, in: db)
            _ = try Store.createRoom(Requests.RoomCreate(id: room, name: "r", roomType: "group", participantIDs: []), creator: alice.id, in: db)
        }
    }

    func send(_ content: String) throws -> String {
        let request = Requests.MessageCreate(id: IDs.uuid7(), roomID: room, content: content, messageType: "text", replyTo: nil, clientMsgID: nil)
        _ = try database.writer.write { try Store.createMessage(request, sender: alice.user, maxChars: 1000, in: $0) }
        return request.id
    }

    func search(_ index: SearchIndex, _ query: String) throws -> [String] {
        try index.search(query, user: alice.id, filters: SearchIndex.Filters()).map(\.id)
    }

    @Test func theIndexFollowsNewEditedAndDeletedMessages() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let index = try SearchIndex(path: directory + "/search.sqlite", main: database)
        let apples = try send("green apples")
        let pears = try send("ripe pears")
        let caught = try index.catchUp()
        #expect(caught.count == 2 && caught.done && index.indexedCount == 2)
        #expect(try search(index, "apple") == [apples])
        #expect(try search(index, "ripe") == [pears])
        #expect(try search(index, "e") == [pears, apples])  // under three characters: the main database's scan

        try database.writer.write { db in
            _ = try Store.editMessage(Requests.MessageUpdate(roomID: room, messageID: apples, content: "red plums"), user: alice.id, maxChars: 1000, in: db)
            _ = try Store.deleteMessage(Requests.MessageRef(roomID: room, messageID: pears), user: alice.id, in: db)
        }
        #expect(try index.catchUp().done)
        #expect(try search(index, "apple").isEmpty)
        #expect(try search(index, "plums") == [apples])
        #expect(try search(index, "ripe").isEmpty && index.indexedCount == 1)
    }

    /// The index commits to a WAL without an fsync (a rollback journal cost
    /// four per commit); a catch-up with nothing new writes nothing.
    @Test func theIndexIsInWALModeAndAnEmptyCatchUpWritesNothing() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let index = try SearchIndex(path: directory + "/search.sqlite", main: database)
        #expect(try index.queue.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") } == "wal")
        #expect(try index.queue.read { try Int.fetchOne($0, sql: "PRAGMA synchronous") } == 1)  // NORMAL
        _ = try send("green apples")
        #expect(try index.catchUp().count == 1)
        let changes = try index.queue.read { try Int.fetchOne($0, sql: "SELECT total_changes()") }
        #expect(try index.catchUp().count == 0)
        #expect(try index.queue.read { try Int.fetchOne($0, sql: "SELECT total_changes()") } == changes)
        _ = try send("ripe pears")
        #expect(try index.catchUp().count == 1)
        #expect(try search(index, "pears").count == 1)
    }

    /// A catch-up larger than one full-text insert statement indexes every
    /// message once; indexed again from zero (the watermark lost), each
    /// message replaces its old entry instead of being found twice.
    @Test func aLargeCatchUpIndexesEveryMessageOnceAndReindexingReplaces() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/search.sqlite"
        let index = try SearchIndex(path: path, main: database)
        let count = SearchIndex.ftsRowsPerStatement * 2 + 7
        var ids: [String] = []
        try database.writer.write { [alice, room] db in
            for n in 0..<count {
                let request = Requests.MessageCreate(id: IDs.uuid7(), roomID: room, content: "word\(n)x and more", messageType: "text", replyTo: nil, clientMsgID: nil)
                _ = try Store.createMessage(request, sender: alice.user, maxChars: 1000, in: db)
                ids.append(request.id)
            }
        }
        let caught = try index.catchUp()
        #expect(caught.count == count && caught.done && index.indexedCount == count)
        for n in [0, SearchIndex.ftsRowsPerStatement - 1, SearchIndex.ftsRowsPerStatement, count - 1] {
            #expect(try search(index, "word\(n)x") == [ids[n]])
        }
        #expect(try search(index, "and more").count == 50)  // the page limit

        // The watermark lost while no worker runs: the next worker to open the index reindexes.
        try index.queue.close()
        let other = try DatabaseQueue(path: path)
        try other.write { try $0.execute(sql: "UPDATE meta SET value = 0 WHERE key = 'last_rowid'") }
        try other.close()
        let reopened = try SearchIndex(path: path, main: database)
        #expect(try reopened.catchUp().count == count)
        #expect(reopened.indexedCount == count)
        let fullText = try DatabaseQueue(path: path)
        #expect(try fullText.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM docs_fts") } == count)
        try fullText.close()
        #expect(try search(reopened, "word\(count - 1)x") == [ids[count - 1]])
    }
}
