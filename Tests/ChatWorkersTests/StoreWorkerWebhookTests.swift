import ChatCore
import ChatStore
import ChatWire
import Foundation
import GRDB
import Testing

@testable import ChatWorkers

/// The store shard's side of webhooks: the outbox rows it writes with each
/// event, in the event's transaction, and none where no webhook wants them.
@Suite struct StoreWorkerWebhookTests {
    let harness: WorkerHarness
    let worker: StoreWorker
    let alice = WorkerHarness.identity("alice"), bob = WorkerHarness.identity("bob")

    init() throws {
        harness = try WorkerHarness()
        worker = StoreWorker(database: harness.database, config: harness.config, logger: harness.logger)
    }

    func send(_ room: String, _ content: String, id: String = IDs.uuid7(), requestID: String = UUID().uuidString) -> Command {
        WorkerHarness.command(.messageCreate, Requests.MessageCreate(id: id, roomID: room, content: content, messageType: "text", replyTo: nil,
                                                                     clientMsgID: nil), as: alice, requestID: requestID)
    }

    func outbox() throws -> [Row] {
        try harness.database.writer.read { try Row.fetchAll($0, sql: "SELECT * FROM webhook_deliveries ORDER BY created_at, id") }
    }

    func hook(_ room: String, events: [String], as user: Identity? = nil) -> Event? {
        let command = WorkerHarness.command(.webhookCreate, Requests.WebhookCreate(id: IDs.uuid7(), roomID: room, url: "https://example.com/h",
                                                                                   events: events, secret: "k"), as: user ?? alice)
        return worker.handle([command]).reply(to: command)
    }

    @Test func aRoomWithoutWebhooksWritesNoOutbox() throws {
        let room = try harness.groupRoom()
        let other = try harness.groupRoom()
        #expect(hook(other, events: ["message_created"])?.status == .created)
        _ = worker.handle([send(room, "quiet")])
        #expect(try outbox().isEmpty)
    }

    @Test func eachSubscribedEventWritesOneDeliveryWithItsBody() throws {
        let room = try harness.groupRoom()
        #expect(hook(room, events: ["message_created", "message_deleted"])?.status == .created)
        #expect(hook(room, events: ["message_created"])?.status == .created)
        let id = IDs.uuid7()
        let command = send(room, "hi", id: id)
        _ = worker.handle([command])
        // A resend stores nothing new, and writes no delivery again.
        _ = worker.handle([command])
        _ = worker.handle([WorkerHarness.command(.messageUpdate, Requests.MessageUpdate(roomID: room, messageID: id, content: "v2"), as: alice)])
        _ = worker.handle([WorkerHarness.command(.messageDelete, Requests.MessageRef(roomID: room, messageID: id), as: alice)])
        let rows = try outbox()
        #expect(rows.map { $0["event"] as String } == ["message_created", "message_created", "message_deleted"])
        for row in rows {
            let body = try #require(try JSONSerialization.jsonObject(with: Data((row["body"] as String).utf8)) as? [String: Any])
            #expect(body["id"] as? String == row["id"] as String && body["room"] as? String == room)
            #expect(body["event"] as? String == row["event"] as String && body["timestamp"] is String)
            #expect((body["data"] as? [String: Any])?["id"] as? String == id)
        }
    }

    /// A resent edit (the bus resends an unanswered command) writes no second
    /// delivery under a new id; a new edit does (review finding).
    @Test func aResentEditWritesOneDelivery() throws {
        let room = try harness.groupRoom()
        #expect(hook(room, events: ["message_edited"])?.status == .created)
        let id = IDs.uuid7()
        _ = worker.handle([send(room, "v1", id: id)])
        let edit = WorkerHarness.command(.messageUpdate, Requests.MessageUpdate(roomID: room, messageID: id, content: "v2"), as: alice)
        #expect(worker.handle([edit]).reply(to: edit)?.status == .ok)
        #expect(worker.handle([edit]).reply(to: edit)?.status == .ok)
        #expect(try outbox().count == 1)
        let next = WorkerHarness.command(.messageUpdate, Requests.MessageUpdate(roomID: room, messageID: id, content: "v3"), as: alice)
        _ = worker.handle([next])
        #expect(try outbox().map { $0["event"] as String } == ["message_edited", "message_edited"])
    }

    /// A room whose writes moved to another shard (a rescale) right after a
    /// webhook was created for it through the first: the new shard's cache,
    /// loaded before, does not yet name it, and reads the room on its first
    /// write there, so the delivery is written (review finding).
    @Test func aRoomNewToAShardHasItsWebhooksRead() throws {
        let room = try harness.groupRoom()
        let other = try harness.groupRoom()
        let shardB = StoreWorker(database: harness.database, config: harness.config, logger: harness.logger)
        _ = shardB.handle([send(other, "loads B's cache")])
        #expect(hook(room, events: ["message_created"])?.status == .created)
        _ = shardB.handle([send(room, "moved here")])
        #expect(try outbox().count == 1)
    }

    @Test func aRefusedMessageWritesNoDelivery() throws {
        let room = try harness.groupRoom()
        #expect(hook(room, events: ["message_created"])?.status == .created)
        // Empty content is refused: its transaction (and any outbox row) rolls back.
        _ = worker.handle([send(room, "")])
        #expect(try outbox().isEmpty)
    }

    /// A room's webhooks are bounded (each is a delivery per event), and an
    /// incoming webhook's bot counts toward the room's member limit (review finding).
    @Test func webhooksPerRoomAndBotsAreBounded() throws {
        let room = try harness.groupRoom()
        for _ in 0..<WebhookStore.maxPerRoom { #expect(hook(room, events: ["message_created"])?.status == .created) }
        #expect(hook(room, events: ["message_created"])?.status == .badRequest)
        var config = harness.config
        config.maxParticipants = 2
        let full = StoreWorker(database: harness.database, config: config, logger: harness.logger)
        let incoming = WorkerHarness.command(.webhookIncomingCreate, Requests.IncomingWebhookCreate(
            id: IDs.uuid7(), roomID: room, name: "CI", token: "t", botUserID: IDs.uuid7(), url: "u"), as: alice)
        // alice and bob fill a room of two: the bot would be a third.
        #expect(full.handle([incoming]).reply(to: incoming)?.status == .badRequest)
        #expect(worker.handle([incoming]).reply(to: incoming)?.status == .created)
    }

    @Test func aMemberDoesNotManage() throws {
        let room = try harness.groupRoom()
        #expect(hook(room, events: ["message_created"], as: bob)?.status == .forbidden)
        let list = WorkerHarness.command(.webhookList, Requests.RoomRef(roomID: room), as: bob)
        #expect(worker.handle([list]).reply(to: list)?.status == .forbidden)
    }
}
