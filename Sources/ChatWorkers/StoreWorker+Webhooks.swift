import ChatBus
import ChatCore
import ChatStore
import ChatWire
import Foundation

/// Which rooms have webhooks and what each subscribes to, as a store shard
/// keeps it: the write path looks a room up here, so a room without
/// webhooks costs no statement and no round trip per message. Loaded in a
/// write transaction when first needed, again after this process changed a
/// webhook (the change may have rolled back) and every `refreshNanos`.
/// A room this process writes for the first time is read on its own first
/// (one indexed query, once a room): after a rescale moved its writes here,
/// a webhook another shard created for it moments ago is in no load yet,
/// and its deliveries would be lost, not late (review finding).
final class WebhookCache {
    /// Room id → (webhook id, events) of each of its webhooks.
    private(set) var rooms: [String: [(id: String, events: Set<String>)]] = [:]
    private var loadedAt: UInt64?
    private var dirty = false
    static let refreshNanos: UInt64 = 30_000_000_000
    /// Rooms this process has written (their webhooks read since); emptied
    /// past `maxChecked`, when each is read once more.
    private var checked = Set<String>()
    static let maxChecked = 100_000

    /// Reloads when due; call at the start of every write transaction.
    func refreshIfDue(_ db: any StoreTransaction) throws {
        let now = monotonicNanos()
        if let loadedAt, !dirty, now &- loadedAt < Self.refreshNanos { return }
        var rooms: [String: [(id: String, events: Set<String>)]] = [:]
        for hook in try db.webhooks(room: nil) { rooms[hook.roomID, default: []].append((hook.id, Set(hook.events))) }
        self.rooms = rooms
        loadedAt = now
        dirty = false
    }

    /// This process added or removed a webhook: kept at once, reloaded in the next transaction.
    func added(_ request: Requests.WebhookCreate) {
        rooms[request.roomID, default: []].append((request.id, Set(request.events)))
        dirty = true
    }

    func removed(room: String, id: String) {
        rooms[room]?.removeAll { $0.id == id }
        if rooms[room]?.isEmpty == true { rooms[room] = nil }
        dirty = true
    }

    /// The webhooks of `room` subscribed to `event`, the room read first if
    /// this process has not written it yet.
    func subscribers(room: String, event: String, in db: any StoreTransaction) throws -> [String] {
        if !checked.contains(room) {
            if checked.count >= Self.maxChecked { checked.removeAll() }
            let hooks = try db.webhooks(room: room).map { (id: $0.id, events: Set($0.events)) }
            rooms[room] = hooks.isEmpty ? nil : hooks
            checked.insert(room)
        }
        guard let hooks = rooms[room] else { return [] }
        return hooks.filter { $0.events.contains(event) }.map(\.id)
    }
}

extension StoreWorker {
    /// Writes the outbox rows of an event, in the transaction that stores it
    /// (a message and its deliveries commit together or not at all). The
    /// body is rendered once, now; `data` only when a webhook wants it.
    func outbox(room: String, event: String, in db: any StoreTransaction, data: () -> [UInt8]) throws {
        let hooks = try webhookCache.subscribers(room: room, event: event, in: db)
        guard !hooks.isEmpty else { return }
        let now = Timestamp.now()
        let payload = data()
        for hook in hooks {
            let id = IDs.uuid7()
            let body = Webhooks.deliveryBody(id: id, event: event, room: room, data: payload, at: now)
            try db.enqueueDelivery(id: id, webhookID: hook, event: event, body: body, now: now.micros)
        }
    }

    /// Whether `user` is not yet a member of a room with a `member_joined`
    /// webhook (a join that only repeats sends nothing). One query, only for
    /// such rooms.
    func joinsNow(_ roomID: String, user: String, in db: any StoreTransaction) throws -> Bool {
        guard try !webhookCache.subscribers(room: roomID, event: "member_joined", in: db).isEmpty else { return false }
        return (try? db.requireRoom(roomID, user: user, allowPublic: true).isParticipant) == false
    }

    /// Runs `change`, which adds members to a room (PATCH's `participant_ids`,
    /// `members/`), with a `member_joined` delivery for each member it added;
    /// one more read of the room, only in rooms with such a webhook.
    func addingMembers(room roomID: String, user: String, in db: any StoreTransaction, _ change: () throws -> Room) throws -> Room {
        guard try !webhookCache.subscribers(room: roomID, event: "member_joined", in: db).isEmpty else { return try change() }
        let before = Set(((try? db.room(roomID, viewer: user))?.participants ?? []).map(\.id))
        let room = try change()
        for member in room.participants where !before.contains(member.id) {
            try outbox(room: roomID, event: "member_joined", in: db) { Webhooks.memberData(member) }
        }
        return room
    }

    static let tooManyWebhooks = StoreError.badRequest(error: "A room has at most \(WebhookStore.maxPerRoom) webhooks of each kind.")

    /// The webhook commands (all writes, even the lists: they need the manager check in one place).
    func webhookWrite(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> [Event] {
        let user = identity.id
        switch command.kind {
        case .webhookCreate:
            let request = try body(Requests.WebhookCreate.self, command)
            try db.requireWebhookManager(request.roomID, user: user)
            // A resend (the reply to the first was lost) answers as the first did: its id and secret came with it.
            let hooks = try db.webhooks(room: request.roomID)
            if let stored = hooks.first(where: { $0.id == request.id }) {
                return [.reply(to: command, status: .created, body: Self.webhookJSON(stored, secret: request.secret))]
            }
            guard hooks.count < WebhookStore.maxPerRoom else { throw Self.tooManyWebhooks }
            let now = Timestamp.now()
            try db.insertWebhook(request, createdBy: user, now: now.micros)
            webhookCache.added(request)
            return [.reply(to: command, status: .created, body: Self.webhookJSON(
                WebhookStore.Record(id: request.id, roomID: request.roomID, url: request.url, events: request.events, createdAt: now.micros),
                secret: request.secret))]
        case .webhookList:
            let request = try body(Requests.RoomRef.self, command)
            try db.requireWebhookManager(request.roomID, user: user)
            let hooks = try db.webhooks(room: request.roomID)
            return [.reply(to: command, status: .ok, body: ClientJSON.array(hooks.map { Self.webhookJSON($0, secret: nil) }))]
        case .webhookDelete:
            let ref = try body(Requests.WebhookRef.self, command)
            try db.requireWebhookManager(ref.roomID, user: user)
            guard try db.deleteWebhook(room: ref.roomID, id: ref.webhookID) else { throw StoreError.notFound("Webhook not found") }
            webhookCache.removed(room: ref.roomID, id: ref.webhookID)
            return [.reply(to: command, status: .noContent, body: [])]
        case .webhookFailures:
            let request = try body(Requests.WebhookFailures.self, command)
            try db.requireWebhookManager(request.ref.roomID, user: user)
            let (count, failures) = try db.webhookFailures(request.ref, page: request.page)
            return [Self.pageReply(command, request.page, count: count, items: failures.map(Self.failureJSON))]
        case .webhookIncomingCreate:
            let request = try body(Requests.IncomingWebhookCreate.self, command)
            try db.requireWebhookManager(request.roomID, user: user)
            // A resend answers as the first did (its token came with it); only the first inserts.
            if try db.rows("SELECT id FROM incoming_webhooks WHERE id = $1", [.text(request.id)]).isEmpty {
                // Its bot is a member: it counts toward the room's limit like anyone.
                let (hooks, members) = try db.rows("""
                    SELECT (SELECT COUNT(*) FROM incoming_webhooks WHERE room_id = $1), (SELECT COUNT(*) FROM room_participants WHERE room_id = $1)
                    """, [.text(request.roomID)]).first.map { (Int($0[0] ?? "") ?? 0, Int($0[1] ?? "") ?? 0) } ?? (0, 0)
                guard hooks < WebhookStore.maxPerRoom else { throw Self.tooManyWebhooks }
                guard members < config.maxParticipants else {
                    throw StoreError.badRequest(error: "A room has at most \(config.maxParticipants) members; its bot would be one more.")
                }
                try db.insertIncomingWebhook(request, createdBy: user, now: Timestamp.now().micros)
            }
            return [.reply(to: command, status: .created, body: ClientJSON.object(["id": request.id, "url": request.url, "name": request.name]))]
        case .webhookIncomingPost:
            let post = try body(Requests.IncomingWebhookPost.self, command)
            let bot = try db.incomingWebhookBot(post)
            let request = Requests.MessageCreate(id: post.messageID, roomID: post.roomID, content: post.content, messageType: "text",
                                                 replyTo: nil, clientMsgID: nil)
            return try storeMessage(request, sender: bot, command: command, in: db)
        default:
            throw StoreError(code: .badRequest, detail: "Not a webhook command: \(command.kind.rawValue)")
        }
    }

    /// A webhook as the API shows it; the secret only in the answer to its creation.
    static func webhookJSON(_ hook: WebhookStore.Record, secret: String?) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.field("id", hook.id)
        w.field("url", hook.url)
        w.key("events")
        w.beginArray()
        for event in hook.events { w.string(event) }
        w.endArray()
        if let secret { w.field("secret", secret) }
        w.field("created_at", Timestamp(micros: hook.createdAt))
        w.endObject()
        return w.bytes
    }

    static func failureJSON(_ failure: WebhookStore.Failure) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.field("id", failure.id)
        w.field("event", failure.event)
        w.field("attempts", Int64(failure.attempts))
        w.field("created_at", Timestamp(micros: failure.createdAt))
        w.field("failed_at", Timestamp(micros: failure.failedAt))
        w.field("last_status", failure.lastStatus.map { Int64($0) })
        w.field("last_error", failure.lastError)
        w.endObject()
        return w.bytes
    }
}

