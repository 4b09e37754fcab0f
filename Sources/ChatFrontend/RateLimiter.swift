import ChatBus
import ChatConfig
import ChatWire
import Synchronization

/// The frontend's rate and connection limits (`rateLimits: on`, the
/// default): REST requests and WebSocket events per user, handshakes per IP,
/// open WebSockets per user. Counted per frontend process.
final class RateLimiter: Sendable {
    private let rest: Mutex<TokenBuckets>
    private let events: Mutex<TokenBuckets>
    private let handshakes: Mutex<TokenBuckets>
    private let sockets = Mutex<[String: Int]>([:])
    let socketsPerUser: Int

    init(config: ChatConfig) {
        rest = Mutex(TokenBuckets(rate: config.restRequestsPerSecond, burst: config.restBurst))
        events = Mutex(TokenBuckets(rate: config.socketEventsPerSecond, burst: config.socketEventBurst))
        handshakes = Mutex(TokenBuckets(rate: config.handshakesPerSecondPerIP, burst: config.handshakeBurst))
        socketsPerUser = config.socketsPerUser
    }

    func request(user: String) -> TokenBuckets.Decision {
        Self.counted(rest.withLock { $0.take(user, now: monotonicNanos()) }, .rest)
    }

    /// A refusal counted (`chatd_rate_limit_refusals_total`), after the lock.
    private static func counted(_ decision: TokenBuckets.Decision, _ limit: FrontendMetrics.Limit) -> TokenBuckets.Decision {
        if decision != .allowed { limit.counter.increment() }
        return decision
    }

    /// A WebSocket event. Typing keeps half the burst in reserve, so a busy
    /// user's typing events are refused before their messages are.
    func event(user: String, typing: Bool) -> TokenBuckets.Decision {
        // The reserve leaves room for at least one token of burst.
        Self.counted(events.withLock { $0.take(user, reserve: typing ? min($0.burst / 2, $0.burst - 1) : 0, now: monotonicNanos()) }, .socketEvent)
    }

    /// The user's WebSocket event tokens now, for a handover.
    func eventTokens(user: String) -> Double {
        events.withLock { $0.tokens(user, now: monotonicNanos()) }
    }

    /// A socket handed over brings its user's spent event budget along.
    func adoptEventTokens(user: String, tokens: Double) {
        events.withLock { $0.limit(user, to: tokens, now: monotonicNanos()) }
    }

    func handshake(ip: String) -> TokenBuckets.Decision {
        Self.counted(handshakes.withLock { $0.take(ip, now: monotonicNanos()) }, .handshake)
    }

    /// Takes one of the user's socket slots; false (nothing taken) at the limit.
    func reserveSocket(user: String) -> Bool {
        let reserved = sockets.withLock { open in
            let count = open[user, default: 0]
            guard count < socketsPerUser else { return false }
            open[user] = count + 1
            return true
        }
        if !reserved { FrontendMetrics.Limit.socketsPerUser.counter.increment() }
        return reserved
    }

    /// A socket a handover brought counts toward its user's limit, past it or not: it is open already.
    func adoptSocket(user: String) {
        sockets.withLock { $0[user, default: 0] += 1 }
    }

    func socketClosed(user: String) {
        sockets.withLock { open in
            let count = open[user, default: 0] - 1
            open[user] = count > 0 ? count : nil
        }
    }
}

extension TokenBuckets.Decision {
    /// Whole seconds for `Retry-After` (RFC 9110 10.2.3), at least 1.
    var retryAfterSeconds: Int? {
        guard case .limited(let seconds) = self else { return nil }
        // Clamped: a tiny configured rate must not overflow the conversion.
        return max(1, Int(min(seconds, 86_400).rounded(.up)))
    }
}
