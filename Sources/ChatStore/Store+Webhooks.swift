import ChatCore
import Foundation

/// A value bound to a webhook statement (`StoreTransaction.rows`/`run`).
public enum SQLValue: Sendable, Equatable {
    case text(String)
    case int(Int64)
    case null
}

/// Issue 16's webhooks in the store: the tables of migration `v16-webhooks`
/// (SQLite and PostgreSQL alike), written once for both engines. The SQL
/// is the common subset of the two: `$n` placeholders (SQLite numbers named
/// parameters in order of first appearance, so each `$n` first appears in
/// order), integers for flags, and columns read back as text.
public enum WebhookStore {
    /// A webhook as the store keeps it (the secret leaves only on creation and to the webhooks worker).
    public struct Record: Sendable, Equatable {
        public var id: String
        public var roomID: String
        public var url: String
        public var events: [String]
        public var createdAt: Int64

        public init(id: String, roomID: String, url: String, events: [String], createdAt: Int64) {
            (self.id, self.roomID, self.url, self.events, self.createdAt) = (id, roomID, url, events, createdAt)
        }
    }

    /// A delivery the webhooks worker claimed: where it goes and what it sends.
    public struct Delivery: Sendable, Equatable {
        public var id: String
        public var webhookID: String
        public var url: String
        public var secret: String
        public var event: String
        public var body: [UInt8]
        public var attempts: Int
        public var createdAt: Int64
    }

    /// A delivery kept after its retries ran out (`failures/`).
    public struct Failure: Sendable, Equatable {
        public var id: String
        public var event: String
        public var attempts: Int
        public var createdAt: Int64
        public var failedAt: Int64
        public var lastStatus: Int?
        public var lastError: String?
    }

    static func int(_ text: String?) -> Int64 { text.flatMap { Int64($0) } ?? 0 }

    /// Outgoing webhooks a room may have, and incoming ones (`400` past it):
    /// each outgoing one is a delivery per event, each incoming one a member.
    public static let maxPerRoom = 20

    /// A webhook's pending deliveries: `deliveryFailed` moves them all past
    /// its backoff, and `deleteWebhook` drops them (both engines' migrations).
    public static let pendingIndex = "CREATE INDEX webhook_deliveries_pending ON webhook_deliveries(webhook_id, next_at) WHERE failed = 0"
}

extension StoreTransaction {
    /// The room, if `user` may manage its webhooks: 404 when it does not
    /// exist, 403 for a non-member (as any room) and for a member without the right.
    @discardableResult
    public func requireWebhookManager(_ roomID: String, user: String) throws -> Store.RoomInfo {
        let info = try requireRoom(roomID, user: user)
        guard info.isActive else { throw StoreError.notFound("Room not found") }
        try Permissions.authorize(.manageWebhooks, info: info, user: user)
        return info
    }

    public func insertWebhook(_ request: Requests.WebhookCreate, createdBy: String, now: Int64) throws {
        try run("""
            INSERT INTO webhooks (id, room_id, url, events, secret, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
            """, [.text(request.id), .text(request.roomID), .text(request.url), .text(request.events.joined(separator: ",")),
                  .text(request.secret), .text(createdBy), .int(now)])
    }

    /// A room's webhooks (nil: every room's, for a store shard's cache), oldest first.
    public func webhooks(room roomID: String?) throws -> [WebhookStore.Record] {
        let filter = roomID == nil ? "" : "WHERE room_id = $1"
        return try rows("SELECT id, room_id, url, events, created_at FROM webhooks \(filter) ORDER BY created_at, id",
                        roomID.map { [.text($0)] } ?? []).map { row in
            WebhookStore.Record(id: row[0] ?? "", roomID: row[1] ?? "", url: row[2] ?? "",
                                events: (row[3] ?? "").split(separator: ",").map(String.init), createdAt: WebhookStore.int(row[4]))
        }
    }

    /// Deletes a room's webhook and its deliveries; false when it has none of that id.
    public func deleteWebhook(room roomID: String, id: String) throws -> Bool {
        try run("DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND EXISTS (SELECT 1 FROM webhooks WHERE id = $1 AND room_id = $2)",
                [.text(id), .text(roomID)])
        return try run("DELETE FROM webhooks WHERE id = $1 AND room_id = $2", [.text(id), .text(roomID)]) > 0
    }

    /// A page of a webhook's failed deliveries, newest first, and their count.
    public func webhookFailures(_ ref: Requests.WebhookRef, page: Requests.Page) throws -> (count: Int64, failures: [WebhookStore.Failure]) {
        guard try rows("SELECT id FROM webhooks WHERE id = $1 AND room_id = $2", [.text(ref.webhookID), .text(ref.roomID)]).first != nil else {
            throw StoreError.notFound("Webhook not found")
        }
        let count = WebhookStore.int(try rows("SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 AND failed = 1",
                                              [.text(ref.webhookID)]).first?[0])
        guard Pagination.isValid(page, count: count), let offset = Pagination.offset(page) else { throw StoreError.invalidPage }
        let failures = try rows("""
            SELECT id, event, attempts, created_at, next_at, last_status, last_error FROM webhook_deliveries
            WHERE webhook_id = $1 AND failed = 1 ORDER BY next_at DESC, id DESC LIMIT $2 OFFSET $3
            """, [.text(ref.webhookID), .int(Int64(page.pageSize)), .int(offset)]).map { row in
            WebhookStore.Failure(id: row[0] ?? "", event: row[1] ?? "", attempts: Int(WebhookStore.int(row[2])), createdAt: WebhookStore.int(row[3]),
                                 failedAt: WebhookStore.int(row[4]), lastStatus: row[5].flatMap { Int($0) }, lastError: row[6])
        }
        return (count, failures)
    }

    /// Writes one outbox row: the delivery, due at once (in the event's transaction).
    /// A delivery for a webhook that no longer exists (deleted through
    /// another shard while this one's cache still had it, after a rescale) is
    /// not written: the event is not refused for it.
    public func enqueueDelivery(id: String, webhookID: String, event: String, body: [UInt8], now: Int64) throws {
        try run("""
            INSERT INTO webhook_deliveries (id, webhook_id, event, body, created_at, next_at)
            SELECT $1, $2, $3, $4, $5, $5 WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $2)
            """, [.text(id), .text(webhookID), .text(event), .text(String(decoding: body, as: UTF8.self)), .int(now)])
    }

    /// Due deliveries, at most `perWebhook` of each webhook (so that one
    /// webhook's backlog never hides another's), oldest first: candidates to claim.
    public func dueDeliveries(now: Int64, perWebhook: Int, limit: Int) throws -> [(id: String, webhookID: String)] {
        try rows("""
            SELECT id, webhook_id FROM (
                SELECT id, webhook_id, next_at, ROW_NUMBER() OVER (PARTITION BY webhook_id ORDER BY next_at, id) AS n
                FROM webhook_deliveries WHERE failed = 0 AND next_at <= $1
            ) due WHERE n <= $2 ORDER BY next_at, id LIMIT $3
            """, [.int(now), .int(Int64(perWebhook)), .int(Int64(limit))]).map { ($0[0] ?? "", $0[1] ?? "") }
    }

    /// Claims a due delivery until `leaseUntil` under `lease`: false when
    /// another worker claimed it first (its `next_at` moved on). A worker
    /// killed while it holds the lease leaves it due again at `leaseUntil`.
    public func claimDelivery(id: String, lease: String, leaseUntil: Int64, now: Int64) throws -> Bool {
        try run("UPDATE webhook_deliveries SET next_at = $1, lease = $2 WHERE id = $3 AND failed = 0 AND next_at <= $4",
                [.int(leaseUntil), .text(lease), .text(id), .int(now)]) > 0
    }

    /// The deliveries claimed under `lease`, with their webhook's URL and secret.
    public func claimedDeliveries(lease: String) throws -> [WebhookStore.Delivery] {
        try rows("""
            SELECT d.id, d.webhook_id, w.url, w.secret, d.event, d.body, d.attempts, d.created_at
            FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.lease = $1 AND d.failed = 0
            """, [.text(lease)]).map { row in
            WebhookStore.Delivery(id: row[0] ?? "", webhookID: row[1] ?? "", url: row[2] ?? "", secret: row[3] ?? "", event: row[4] ?? "",
                                  body: Array((row[5] ?? "").utf8), attempts: Int(WebhookStore.int(row[6])), createdAt: WebhookStore.int(row[7]))
        }
    }

    /// A `2xx`: the delivery is done and leaves the outbox (only under the lease it was sent with).
    public func deliveryDone(id: String, lease: String) throws {
        try run("DELETE FROM webhook_deliveries WHERE id = $1 AND lease = $2", [.text(id), .text(lease)])
    }

    /// A failed attempt: due again at `nextAt`, or (nil) kept as a failure for good.
    /// With a retry, the webhook's other pending deliveries wait for it too
    /// (its backoff, kept in the rows): a dead receiver's backlog is then not
    /// due, so it neither fills `dueDeliveries`' limit ahead of the healthy
    /// webhooks' deliveries nor makes every poll sort it. Only under the lease.
    public func deliveryFailed(id: String, lease: String, attempts: Int, nextAt: Int64?, now: Int64, status: Int?, error: String) throws {
        let updated = try run("""
            UPDATE webhook_deliveries SET attempts = $1, next_at = $2, failed = $3, lease = NULL, last_status = $4, last_error = $5
            WHERE id = $6 AND lease = $7
            """, [.int(Int64(attempts)), .int(nextAt ?? now), .int(nextAt == nil ? 1 : 0), status.map { .int(Int64($0)) } ?? .null,
                  .text(String(error.prefix(500))), .text(id), .text(lease)])
        guard updated > 0, let nextAt else { return }
        try run("""
            UPDATE webhook_deliveries SET next_at = $1
            WHERE webhook_id = (SELECT webhook_id FROM webhook_deliveries WHERE id = $2) AND failed = 0 AND next_at < $1
            """, [.int(nextAt), .text(id)])
    }

    /// An incoming webhook: its bot user and its token's hash. The bot is an
    /// admin of the room, so that it posts in an announcement room too (an
    /// owner or admin made it); it never inherits the room (`leave`).
    public func insertIncomingWebhook(_ request: Requests.IncomingWebhookCreate, createdBy: String, now: Int64) throws {
        try run("INSERT INTO users (id, sub, email, display_name, created_at) VALUES ($1, $2, '', $3, $4)",
                [.text(request.botUserID), .text("webhook:" + request.id), .text(request.name), .int(now)])
        try run("INSERT INTO room_participants (room_id, user_id, joined_at, role) VALUES ($1, $2, $3, 'admin')",
                [.text(request.roomID), .text(request.botUserID), .int(now)])
        try run("""
            INSERT INTO incoming_webhooks (id, room_id, name, token_hash, bot_user_id, created_by, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            """, [.text(request.id), .text(request.roomID), .text(request.name), .text(Webhooks.tokenHash(request.token)),
                  .text(request.botUserID), .text(createdBy), .int(now)])
    }

    /// The bot user that posts for an incoming webhook, if `token` is its token; 404 otherwise.
    public func incomingWebhookBot(_ post: Requests.IncomingWebhookPost) throws -> User {
        let row = try rows("SELECT token_hash, bot_user_id FROM incoming_webhooks WHERE id = $1 AND room_id = $2",
                           [.text(post.hookID), .text(post.roomID)]).first
        // Compared as hashes: equal-length hex whatever the token, no early exit on a prefix of the secret.
        guard let row, let stored = row[0], let botID = row[1],
              zip(stored.utf8, Webhooks.tokenHash(post.token).utf8).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0,
              let bot = try user(id: botID) else {
            throw StoreError.notFound("Not found.")
        }
        return bot
    }
}
