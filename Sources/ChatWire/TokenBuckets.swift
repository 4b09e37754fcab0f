/// Token buckets by key (a user, an IP address): each holds up to `burst`
/// tokens and refills at `rate` per second. Pure: the caller passes the time
/// (monotonic nanoseconds), so tests drive it without a clock.
public struct TokenBuckets: Sendable {
    public enum Decision: Equatable, Sendable {
        case allowed
        /// Refused; a token will be there in this many seconds.
        case limited(retryAfter: Double)
    }

    public let rate: Double
    public let burst: Double
    private var buckets: [String: (tokens: Double, at: UInt64)] = [:]
    /// Keys held before buckets that have refilled are forgotten (a full
    /// bucket is the same as no bucket), so memory follows active keys only.
    private var sweepAt: Int

    public init(rate: Double, burst: Double, sweepAt: Int = 4096) {
        self.rate = rate
        self.burst = max(1, burst)
        self.sweepAt = sweepAt
    }

    public var count: Int { buckets.count }

    /// Takes `cost` tokens for `key` if, after taking them, at least
    /// `reserve` remain: a higher reserve makes a kind of request the first to
    /// be refused when a key is busy (typing before messages).
    public mutating func take(_ key: String, cost: Double = 1, reserve: Double = 0, now: UInt64) -> Decision {
        var bucket = buckets[key] ?? (burst, now)
        let elapsed = Double(now &- bucket.at) / 1e9
        if now > bucket.at { bucket.tokens = min(burst, bucket.tokens + elapsed * rate) }
        bucket.at = max(bucket.at, now)
        guard bucket.tokens - cost >= reserve else {
            buckets[key] = bucket
            return .limited(retryAfter: (cost + reserve - bucket.tokens) / rate)
        }
        bucket.tokens -= cost
        buckets[key] = bucket
        if buckets.count > sweepAt { sweep(now: now) }
        return .allowed
    }

    /// Tokens `key` holds now (a frontend handover carries them over).
    public func tokens(_ key: String, now: UInt64) -> Double {
        guard let bucket = buckets[key] else { return burst }
        return min(burst, bucket.tokens + Double(now &- bucket.at) / 1e9 * rate)
    }

    /// `key` holds no more than `tokens` from now: a socket handed over keeps
    /// its user's spent budget (the lower of two counts wins).
    public mutating func limit(_ key: String, to tokens: Double, now: UInt64) {
        let held = self.tokens(key, now: now)
        buckets[key] = (min(held, max(0, tokens)), now)
    }

    private mutating func sweep(now: UInt64) {
        buckets = buckets.filter { _, bucket in bucket.tokens + Double(now &- bucket.at) / 1e9 * rate < burst }
        // Every key busy: let the table grow rather than forget a limit.
        sweepAt = max(sweepAt, buckets.count * 2)
    }
}
