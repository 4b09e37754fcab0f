import ChatCore
import ChatStore
import Foundation
import Testing

/// Issue 16's webhook statements (WebhookStore), written once for both
/// engines, on each: the outbox's claims, outcomes, failures and incoming hooks.
@Suite struct WebhookStoreTests {
    let second: Int64 = 1_000_000

    func hook(_ engine: any StoreEngine, room: String) throws -> String {
        let id = IDs.uuid7()
        try engine.write { tx in
            try tx.requireWebhookManager(room, user: identity("alice").id)
            try tx.insertWebhook(Requests.WebhookCreate(id: id, roomID: room, url: "https://example.com/h", events: ["message_created"],
                                                        secret: "s"), createdBy: identity("alice").id, now: 1)
        }
        return id
    }

    @Test(arguments: EngineKind.available)
    func managersAndListing(_ kind: EngineKind) throws {
        let (engine, _) = try kind.make()
        let room = try groupRoom(engine)
        let id = try hook(engine, room: room)
        // bob is a member but not the creator; mallory is no member.
        for sub in ["bob", "mallory"] {
            #expect(throws: StoreError.self) { try engine.read { try $0.requireWebhookManager(room, user: identity(sub).id) } }
        }
        let hooks = try engine.read { try $0.webhooks(room: room) }
        #expect(hooks.map(\.id) == [id] && hooks.first?.events == ["message_created"])
        #expect(try engine.read { try $0.webhooks(room: nil) }.map(\.roomID) == [room])
        #expect(try engine.write { try $0.deleteWebhook(room: room, id: id) })
        #expect(try engine.write { try $0.deleteWebhook(room: room, id: id) } == false)
        // A shard whose cache still names it (deleted through another shard) writes no delivery and refuses nothing.
        try engine.write { try $0.enqueueDelivery(id: "gone", webhookID: id, event: "message_created", body: Array("{}".utf8), now: 1) }
        #expect(try engine.read { try $0.dueDeliveries(now: 2, perWebhook: 5, limit: 10) }.isEmpty)
    }

    @Test(arguments: EngineKind.available)
    func claimsAreExclusiveAndLeasesRunOut(_ kind: EngineKind) throws {
        let (engine, makeAnother) = try kind.make()
        let other = try makeAnother()
        let room = try groupRoom(engine)
        let id = try hook(engine, room: room)
        let now: Int64 = 1_000 * second
        try engine.write { tx in
            for n in 0..<3 { try tx.enqueueDelivery(id: "d\(n)", webhookID: id, event: "message_created", body: Array("{\"n\":\(n)}".utf8), now: now) }
        }
        let due = try engine.read { try $0.dueDeliveries(now: now, perWebhook: 2, limit: 10) }
        #expect(due.map(\.id) == ["d0", "d1"])
        #expect(try engine.write { try $0.claimDelivery(id: "d0", lease: "A", leaseUntil: now + 20 * second, now: now) })
        // The second worker finds it claimed.
        #expect(try other.write { try $0.claimDelivery(id: "d0", lease: "B", leaseUntil: now + 20 * second, now: now) } == false)
        let claimed = try engine.read { try $0.claimedDeliveries(lease: "A") }
        #expect(claimed.map(\.id) == ["d0"] && claimed.first?.url == "https://example.com/h" && claimed.first?.body == Array("{\"n\":0}".utf8))
        // After the lease (a killed worker), another claims it.
        #expect(try other.write { try $0.claimDelivery(id: "d0", lease: "B", leaseUntil: now + 40 * second, now: now + 21 * second) })
        // The first worker's late outcome no longer counts; the second's does.
        try engine.write { try $0.deliveryDone(id: "d0", lease: "A") }
        #expect(try engine.read { try $0.claimedDeliveries(lease: "B") }.map(\.id) == ["d0"])
        try other.write { try $0.deliveryDone(id: "d0", lease: "B") }
        #expect(try engine.read { try $0.dueDeliveries(now: now + 60 * second, perWebhook: 5, limit: 10) }.map(\.id) == ["d1", "d2"])
    }

    @Test(arguments: EngineKind.available)
    func failuresAreRetriedThenKept(_ kind: EngineKind) throws {
        let (engine, _) = try kind.make()
        let room = try groupRoom(engine)
        let id = try hook(engine, room: room)
        let now: Int64 = 1_000 * second
        try engine.write { try $0.enqueueDelivery(id: "d", webhookID: id, event: "message_created", body: Array("{}".utf8), now: now) }
        #expect(try engine.write { try $0.claimDelivery(id: "d", lease: "A", leaseUntil: now + 20 * second, now: now) })
        try engine.write { try $0.deliveryFailed(id: "d", lease: "A", attempts: 1, nextAt: now + 3 * second, now: now, status: 500, error: "HTTP 500") }
        #expect(try engine.read { try $0.dueDeliveries(now: now + 2 * second, perWebhook: 5, limit: 10) }.isEmpty)
        #expect(try engine.read { try $0.dueDeliveries(now: now + 3 * second, perWebhook: 5, limit: 10) }.map(\.id) == ["d"])
        #expect(try engine.write { try $0.claimDelivery(id: "d", lease: "B", leaseUntil: now + 30 * second, now: now + 3 * second) })
        try engine.write { try $0.deliveryFailed(id: "d", lease: "B", attempts: 2, nextAt: nil, now: now + 4 * second, status: nil, error: "timeout") }
        #expect(try engine.read { try $0.dueDeliveries(now: now + 99 * second, perWebhook: 5, limit: 10) }.isEmpty)
        let (count, failures) = try engine.read { try $0.webhookFailures(Requests.WebhookRef(roomID: room, webhookID: id), page: page1) }
        #expect(count == 1 && failures.first?.id == "d" && failures.first?.attempts == 2)
        #expect(failures.first?.lastStatus == nil && failures.first?.lastError == "timeout" && failures.first?.failedAt == now + 4 * second)
    }

    /// A failing webhook's backlog waits out its backoff in the table: with
    /// more failing webhooks than the due query's limit holds, a healthy
    /// webhook's newer delivery is still among the due ones (review finding:
    /// the backoff was the worker's memory only, and the backlogs filled the limit).
    @Test(arguments: EngineKind.available)
    func aFailingWebhooksBacklogWaitsForItsBackoff(_ kind: EngineKind) throws {
        let (engine, _) = try kind.make()
        let room = try groupRoom(engine)
        let now: Int64 = 1_000 * second
        var failing: [String] = []
        for n in 0..<3 {
            let id = try hook(engine, room: room)
            failing.append(id)
            try engine.write { tx in
                for k in 0..<4 { try tx.enqueueDelivery(id: "f\(n)-\(k)", webhookID: id, event: "message_created", body: Array("{}".utf8), now: now) }
            }
        }
        let healthy = try hook(engine, room: room)
        try engine.write { try $0.enqueueDelivery(id: "h", webhookID: healthy, event: "message_created", body: Array("{}".utf8), now: now + second) }
        // Each failing webhook's first delivery fails; it backs off for a minute.
        for n in 0..<3 {
            #expect(try engine.write { try $0.claimDelivery(id: "f\(n)-0", lease: "L\(n)", leaseUntil: now + 20 * second, now: now + second) })
            try engine.write {
                try $0.deliveryFailed(id: "f\(n)-0", lease: "L\(n)", attempts: 1, nextAt: now + 60 * second, now: now + second, status: 500, error: "HTTP 500")
            }
        }
        // A limit smaller than the failing backlogs (9 rows) still reaches the healthy delivery.
        #expect(try engine.read { try $0.dueDeliveries(now: now + 2 * second, perWebhook: 4, limit: 2) }.map(\.id) == ["h"])
        // After the backoff, the backlogs are due again, oldest first.
        let later = try engine.read { try $0.dueDeliveries(now: now + 60 * second, perWebhook: 4, limit: 100) }
        #expect(later.count == 13 && Set(later.map(\.webhookID)) == Set(failing + [healthy]))
        // A page past the end of failures/ is 404 "Invalid page.", as every list.
        var past = page1
        past.page = 2
        #expect(throws: StoreError.invalidPage) {
            try engine.read { try $0.webhookFailures(Requests.WebhookRef(roomID: room, webhookID: healthy), page: past) }
        }
    }

    @Test(arguments: EngineKind.available)
    func incomingWebhookBot(_ kind: EngineKind) throws {
        let (engine, _) = try kind.make()
        let room = try groupRoom(engine)
        let request = Requests.IncomingWebhookCreate(id: IDs.uuid7(), roomID: room, name: "CI", token: "t0k", botUserID: IDs.uuid7(), url: "u")
        try engine.write { try $0.insertIncomingWebhook(request, createdBy: identity("alice").id, now: 1) }
        let post = Requests.IncomingWebhookPost(roomID: room, hookID: request.id, token: "t0k", messageID: IDs.uuid7(), content: "hi")
        let bot = try engine.read { try $0.incomingWebhookBot(post) }
        #expect(bot.id == request.botUserID && bot.displayName == "CI")
        var wrong = post
        wrong.token = "t0j"
        #expect(throws: StoreError.self) { try engine.read { try $0.incomingWebhookBot(wrong) } }
        // The bot is a member: its message is stored.
        let outcome = try engine.write { try $0.createMessage(Requests.MessageCreate(id: post.messageID, roomID: room, content: "hi", messageType: "text",
                                                                                     replyTo: nil, clientMsgID: nil), sender: bot, maxChars: 100) }
        #expect(created(outcome)?.sender.displayName == "CI")
    }
}
