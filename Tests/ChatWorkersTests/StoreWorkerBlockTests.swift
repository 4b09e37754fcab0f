import ChatCore
import ChatStore
import ChatWire
import Foundation
import Testing

@testable import ChatWorkers

/// The store worker's side of blocks: `user.*` commands, and a new
/// message's event keyed with the members it is hidden from.
@Suite struct StoreWorkerBlockTests {
    let harness: WorkerHarness
    let worker: StoreWorker
    let alice = WorkerHarness.identity("alice"), bob = WorkerHarness.identity("bob")

    init() throws {
        harness = try WorkerHarness()
        worker = StoreWorker(database: harness.database, config: harness.config, logger: harness.logger)
    }

    func send(_ room: String, _ content: String, as user: Identity) -> Command {
        WorkerHarness.command(.messageCreate, Requests.MessageCreate(id: IDs.uuid7(), roomID: room, content: content, messageType: "text", replyTo: nil, clientMsgID: nil),
                              as: user)
    }

    @Test func aBlockedSendersEventNamesTheBlockerAndBlocksAreNeverEvents() throws {
        let room = try harness.groupRoom()
        let block = WorkerHarness.command(.userBlock, Requests.UserRef(userID: bob.id), as: alice)
        let blocked = worker.handle([block])
        #expect(blocked.roomEvents.isEmpty)
        #expect(blocked.reply(to: block)?.status == .ok)
        let hidden = send(room, "psst", as: bob)
        let events = worker.handle([hidden])
        let key = try #require(events.roomEvents.first?.key)
        #expect(EventKey.parse(key)?.hiddenFrom == [alice.id])
        // Alice's own message goes to everyone.
        #expect(worker.handle([send(room, "hi", as: alice)]).roomEvents.first.map { EventKey.parse($0.key)?.hiddenFrom } == [])

        // A successor republishing the resend hides it again.
        let successor = StoreWorker(database: harness.database, config: harness.config, logger: harness.logger)
        #expect(successor.handle([hidden]).roomEvents.first.map { EventKey.parse($0.key)?.hiddenFrom } == [alice.id])

        // So are Bob's edit and deletion of it.
        let messageID = try #require(EventKey.parse(key).flatMap { if case .message(let id, _) = $0.key { id } else { nil } })
        let edit = WorkerHarness.command(.messageUpdate, Requests.MessageUpdate(roomID: room, messageID: messageID, content: "psst!"), as: bob)
        #expect(worker.handle([edit]).roomEvents.first.map { EventKey.parse($0.key)?.hiddenFrom } == [alice.id])
        let delete = WorkerHarness.command(.messageDelete, Requests.MessageRef(roomID: room, messageID: messageID), as: bob)
        #expect(worker.handle([delete]).roomEvents.first.map { EventKey.parse($0.key)?.hiddenFrom } == [alice.id])

        let unblock = WorkerHarness.command(.userUnblock, Requests.UserRef(userID: bob.id), as: alice)
        #expect(worker.handle([unblock]).reply(to: unblock)?.status == .noContent)
        #expect(worker.handle([send(room, "again", as: bob)]).roomEvents.first.map { EventKey.parse($0.key)?.hiddenFrom } == [])
    }

    /// Who an event is hidden from follows the message's sender, not who
    /// acts on it: an owner deleting or pinning a member's message.
    @Test func deletionsAndPinsByTheOwnerAreHiddenByTheSendersBlockers() throws {
        let room = try harness.groupRoom()
        let mallory = WorkerHarness.identity("mallory")
        let add = WorkerHarness.command(.roomUpdate, Requests.RoomUpdate(roomID: room, setName: false, name: nil, participantIDs: [mallory.id]), as: alice)
        #expect(worker.handle([add]).reply(to: add)?.status == .ok)
        func hidden(_ events: [Event]) -> [String]? { events.roomEvents.first.map { EventKey.parse($0.key)?.hiddenFrom ?? ["?"] } }
        func messageID(_ events: [Event]) throws -> String {
            try #require(events.roomEvents.first.flatMap { EventKey.parse($0.key) }.flatMap { if case .message(let id, _) = $0.key { id } else { nil } })
        }
        // Mallory blocks Alice (the owner), not Bob: Alice's deletion of Bob's message reaches her.
        _ = worker.handle([WorkerHarness.command(.userBlock, Requests.UserRef(userID: alice.id), as: mallory)])
        let first = try messageID(worker.handle([send(room, "one", as: bob)]))
        let deleteFirst = WorkerHarness.command(.messageDelete, Requests.MessageRef(roomID: room, messageID: first), as: alice)
        #expect(hidden(worker.handle([deleteFirst])) == [])
        // Mallory blocks Bob: his message, its pin and its deletion by Alice are hidden from her, and so is the pins list's entry.
        _ = worker.handle([WorkerHarness.command(.userBlock, Requests.UserRef(userID: bob.id), as: mallory)])
        let second = try messageID(worker.handle([send(room, "two", as: bob)]))
        let pin = WorkerHarness.command(.messagePin, Requests.MessageRef(roomID: room, messageID: second), as: alice)
        #expect(hidden(worker.handle([pin])) == [mallory.id])
        func pins(_ viewer: Identity) throws -> Int? {
            let list = WorkerHarness.command(.pinList, Requests.RoomPage(roomID: room, page: Requests.Page(page: 1, pageSize: 20, url: "u", query: [])), as: viewer)
            let reply = try #require(worker.handle([list]).reply(to: list))
            return (try JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any])?["count"] as? Int
        }
        #expect(try pins(alice) == 1)
        #expect(try pins(mallory) == 0)
        let deleteSecond = WorkerHarness.command(.messageDelete, Requests.MessageRef(roomID: room, messageID: second), as: alice)
        #expect(hidden(worker.handle([deleteSecond])) == [mallory.id])
    }

    @Test func meAndTheLookupAreReads() throws {
        _ = try harness.groupRoom()
        let me = WorkerHarness.command(.userMe, [String: String](), as: alice)
        let lookup = WorkerHarness.command(.userSearch, Requests.UserSearch(query: "BOB"), as: alice)
        let events = worker.handle([me, lookup])
        let meReply = try #require(events.reply(to: me)), lookupReply = try #require(events.reply(to: lookup))
        let meBody = try JSONSerialization.jsonObject(with: Data(meReply.body)) as? [String: Any]
        #expect(meBody?["id"] as? String == alice.id && meBody?["display_name"] as? String == "alice")
        let found = try JSONSerialization.jsonObject(with: Data(lookupReply.body)) as? [[String: Any]]
        #expect(found?.map { $0["id"] as? String } == [bob.id])
    }
}
