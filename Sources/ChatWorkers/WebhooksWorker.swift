import AsyncHTTPClient
import ChatBus
import ChatConfig
import ChatCore
import ChatStore
import ChatWire
import Foundation
import Logging
import NIOCore

/// The `webhooks` role: takes due deliveries from the outbox the store
/// shards write, claims them (a lease, so that two webhooks workers never
/// send one at once, and a killed worker's claims come due again), POSTs
/// them, and records each outcome: done, retried later, or kept as a failure.
///
/// The database is touched only on the bus thread (`tick`); the requests
/// run as tasks on async-http-client's event loops and hand their outcomes
/// back through `finished`.
public final class WebhooksWorker: @unchecked Sendable {
    /// An attempt's result, handed from a request's task to the bus thread.
    struct Outcome: Sendable {
        var delivery: WebhookStore.Delivery
        var lease: String
        var status: Int?
        var error: String?
        var succeeded: Bool { error == nil }
    }

    let database: any StoreEngine
    let logger: Logger
    let allowPrivate: Bool
    let policy: WebhookRetryPolicy
    let plan = WebhookDispatchPlan()
    let client: HTTPClient
    /// The contract's limit: a 2xx within 10 s.
    static let timeout = TimeAmount.seconds(10)
    /// A claim's length: past the request's 10 s and a slow DNS answer, so a
    /// live worker's delivery is never claimed twice; a killed worker's is
    /// due again this long after it was claimed.
    static let leaseMicros: Int64 = 20_000_000
    /// The whole attempt's limit, DNS check and response body included:
    /// async-http-client's deadline ends with the response head, and a
    /// receiver trickling its body must not hold a slot past the lease.
    static let attemptLimit: Duration = .seconds(15)
    /// Deliveries in flight per webhook (bus thread only).
    var inFlight: [String: Int] = [:]
    /// Webhooks whose last attempt failed, and when their retry is due: none
    /// of their deliveries is sent before (bus thread only).
    var backoffUntil: [String: Int64] = [:]
    private let lock = NSLock()
    private var finished: [Outcome] = []
    /// Clients pinned to a vetted address, by "host|address" (under `lock`):
    /// async-http-client resolves a host itself, and the guard's answer must
    /// be the one it connects to. A few distinct receivers at a time; past
    /// `maxPinnedClients`, the oldest is shut down.
    private var pinned: [(key: String, client: HTTPClient)] = []
    static let maxPinnedClients = 32
    let configuration: HTTPClient.Configuration
    private var lastPoll: UInt64 = 0

    public init(database: any StoreEngine, config: ChatConfig, logger: Logger) {
        self.database = database
        self.logger = logger
        self.allowPrivate = config.webhooksAllowPrivateTargets
        self.policy = WebhookRetryPolicy(window: config.webhooksRetryWindowSeconds)
        // No redirects: a 3xx is a failed attempt, so a receiver cannot send us to another host.
        // The pool's per-host limit is the worker's whole limit: webhooks on one host must not
        // queue behind each other there (the worker's own plan limits each webhook).
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: Self.timeout))
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: plan.maxInFlight)
        self.configuration = configuration
        self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// async-http-client wants its client shut down before it goes (a debug
    /// build traps otherwise): the worker's loop ends on SIGTERM and drops it.
    deinit {
        try? client.syncShutdown()
        for entry in pinned { try? entry.client.syncShutdown() }
    }

    /// The client for a request to `host` that must connect to `address`:
    /// one whose DNS override maps the host to it (TLS still names and
    /// verifies the host). An address in the URL needs none.
    func pinnedClient(host: String, address: String) -> HTTPClient {
        guard host != address else { return client }
        let key = host + "|" + address
        let (found, evicted) = lock.withLock { () -> (HTTPClient, HTTPClient?) in
            if let found = pinned.first(where: { $0.key == key }) { return (found.client, nil) }
            var pinning = self.configuration
            pinning.dnsOverride = [host: address]
            let made = HTTPClient(eventLoopGroupProvider: .singleton, configuration: pinning)
            pinned.append((key, made))
            return (made, pinned.count > Self.maxPinnedClients ? pinned.removeFirst().client : nil)
        }
        // Its requests in flight fail (a failed attempt, retried later with a fresh client).
        if let evicted { Task { try? await evicted.shutdown() } }
        return found
    }

    /// The role takes no commands (the store shards keep the webhooks).
    public func handle(_ batch: [Command]) -> [Event] {
        batch.map { .reply(to: $0, error: .detail(.badRequest, "The webhooks role takes no commands.")) }
    }

    /// Records what finished, then claims and sends what is due (at most every 100 ms).
    public func tick() -> [Event] {
        record()
        let now = monotonicNanos()
        guard now &- lastPoll >= 100_000_000 else { return [] }
        lastPoll = now
        dispatch()
        return []
    }

    /// Writes the outcomes the requests handed back, in one transaction.
    func record() {
        let outcomes = lock.withLock { () -> [Outcome] in
            defer { finished.removeAll() }
            return finished
        }
        guard !outcomes.isEmpty else { return }
        for outcome in outcomes {
            inFlight[outcome.delivery.webhookID, default: 1] -= 1
            if inFlight[outcome.delivery.webhookID] ?? 0 <= 0 { inFlight[outcome.delivery.webhookID] = nil }
        }
        let now = Timestamp.now().micros
        do {
            try database.write { db in
                for outcome in outcomes {
                    let delivery = outcome.delivery
                    if outcome.succeeded {
                        try db.deliveryDone(id: delivery.id, lease: outcome.lease)
                        backoffUntil[delivery.webhookID] = nil
                        continue
                    }
                    let attempts = delivery.attempts + 1
                    let next = policy.nextAttempt(attempts: attempts, createdAt: delivery.createdAt, now: now, jitter: Double.random(in: 0..<1))
                    if let next { backoffUntil[delivery.webhookID] = max(backoffUntil[delivery.webhookID] ?? 0, next) }
                    try db.deliveryFailed(id: delivery.id, lease: outcome.lease, attempts: attempts, nextAt: next, now: now,
                                          status: outcome.status, error: outcome.error ?? "")
                    logger.info(next == nil ? "webhook delivery failed for good" : "webhook delivery failed; retrying", metadata: [
                        "delivery": "\(delivery.id)", "webhook": "\(delivery.webhookID)", "attempts": "\(attempts)",
                        "status": "\(outcome.status.map(String.init) ?? "-")", "error": "\(outcome.error ?? "")",
                    ])
                }
            }
        } catch {
            // The leases run out and the deliveries are sent again: at least once.
            logger.error("recording webhook outcomes failed", metadata: ["error": "\(error)"])
        }
    }

    /// Claims due deliveries the plan allows and starts their requests.
    func dispatch() {
        let now = Timestamp.now().micros
        let lease = IDs.uuid7()
        let claimed: [WebhookStore.Delivery]
        do {
            claimed = try database.write { db in
                let due = try db.dueDeliveries(now: now, perWebhook: plan.perTarget, limit: plan.maxInFlight * 2)
                backoffUntil = backoffUntil.filter { $0.value > now }
                let picked = plan.pick(due, inFlight: inFlight, backingOff: Set(backoffUntil.keys))
                var any = false
                for candidate in picked {
                    any = try db.claimDelivery(id: candidate.id, lease: lease, leaseUntil: now + Self.leaseMicros, now: now) || any
                }
                return any ? try db.claimedDeliveries(lease: lease) : []
            }
        } catch {
            logger.error("claiming webhook deliveries failed", metadata: ["error": "\(error)"])
            return
        }
        for delivery in claimed {
            inFlight[delivery.webhookID, default: 0] += 1
            Task { [self] in
                let outcome = await attempt(delivery, lease: lease)
                lock.withLock { finished.append(outcome) }
            }
        }
    }

    /// `send` within `attemptLimit` (cancelled past it: a failed attempt).
    func attempt(_ delivery: WebhookStore.Delivery, lease: String) async -> Outcome {
        await withTaskGroup(of: Outcome?.self) { group in
            group.addTask { await self.send(delivery, lease: lease) }
            group.addTask {
                try? await Task.sleep(for: Self.attemptLimit)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            if let first { return first }
            var outcome = Outcome(delivery: delivery, lease: lease)
            outcome.error = "no whole answer within \(Self.attemptLimit)"
            return outcome
        }
    }

    /// One attempt: the SSRF guard again (DNS may have changed), then the
    /// signed POST, to the address the guard checked.
    func send(_ delivery: WebhookStore.Delivery, lease: String) async -> Outcome {
        var outcome = Outcome(delivery: delivery, lease: lease)
        let allowPrivate = allowPrivate
        // getaddrinfo blocks: off the cooperative pool.
        let vetted = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: WebhookTarget.vet(delivery.url, allowPrivate: allowPrivate)) }
        }
        let client: HTTPClient
        switch vetted {
        case .failure(let refusal):
            outcome.error = "refused: \(refusal.message)"
            return outcome
        // With private targets allowed there is nothing to pin (and the client's
        // own lookup tries every address, as `localhost`'s IPv4 and IPv6).
        case .success(let target): client = allowPrivate ? self.client : pinnedClient(host: target.host, address: target.address)
        }
        var request = HTTPClientRequest(url: delivery.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "chatd-webhooks/\(ChatdVersion.version)")
        request.headers.add(name: "X-Chat-Event", value: delivery.event)
        request.headers.add(name: "X-Chat-Delivery", value: delivery.id)
        request.headers.add(name: "X-Chat-Signature", value: Webhooks.signature(body: delivery.body, secret: delivery.secret))
        request.body = .bytes(ByteBuffer(bytes: delivery.body))
        do {
            let response = try await client.execute(request, timeout: Self.timeout)
            outcome.status = Int(response.status.code)
            // Read (and drop) what the receiver says, bounded; a longer answer only closes the connection.
            _ = try? await response.body.collect(upTo: 64 << 10)
            if !(200..<300).contains(response.status.code) { outcome.error = "HTTP \(response.status.code)" }
        } catch {
            outcome.error = "\(error)"
        }
        return outcome
    }
}
