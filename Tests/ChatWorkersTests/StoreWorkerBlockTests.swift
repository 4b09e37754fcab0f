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
