import Foundation

/// When a failed delivery is tried again: exponential backoff with jitter,
/// until the retry window since the event ends; then it is a failure for
/// good. Pure (time and randomness passed in), unit-tested.
public struct WebhookRetryPolicy: Sendable, Equatable {
    /// The delay after the first failure before jitter, seconds: with the
    /// jitter (×0.5 to ×1) the first retry comes within 2 to 4 s, inside the
    /// contract's 10 s.
    public var firstDelay: Double = 4
    /// No wait grows past an hour: a receiver back after a long outage gets its backlog within the hour.
    public var maxDelay: Double = 3600
    /// How long after the event deliveries are still tried (`webhooks.retryWindowSeconds`).
    public var window: Double = 86_400

    public init(window: Double = 86_400) { self.window = window }

    /// When to try again after `attempts` failed attempts (1 after the first),
    /// microseconds, or nil: keep it as a failure. `jitter` is in 0..<1.
    public func nextAttempt(attempts: Int, createdAt: Int64, now: Int64, jitter: Double) -> Int64? {
        let end = createdAt + Int64(window * 1_000_000)
        guard now < end else { return nil }
        let exponent = Double(min(max(attempts - 1, 0), 30))
        let delay = min(maxDelay, firstDelay * pow(2, exponent)) * (0.5 + 0.5 * min(max(jitter, 0), 1))
        // The last try falls at the window's end, not past it.
        return min(now + Int64(delay * 1_000_000), end)
    }
}

/// Which due deliveries a webhooks worker claims now: at most `perTarget`
/// in flight to one webhook and `maxInFlight` in all, so that a slow or
/// dead receiver holds only its own few slots, never everyone's. Pure.
public struct WebhookDispatchPlan: Sendable, Equatable {
    public var perTarget = 4
    public var maxInFlight = 64

    public init(perTarget: Int = 4, maxInFlight: Int = 64) { (self.perTarget, self.maxInFlight) = (perTarget, maxInFlight) }

    /// The candidates (oldest first) to claim, given what is in flight per
    /// webhook, leaving out the webhooks `backingOff` (one of their deliveries
    /// just failed): a dead receiver's backlog, oldest and so always first,
    /// would otherwise take every free slot again as soon as it timed out.
    public func pick(
        _ candidates: [(id: String, webhookID: String)], inFlight: [String: Int], backingOff: Set<String> = []
    ) -> [(id: String, webhookID: String)] {
        var counts = inFlight
        var total = inFlight.values.reduce(0, +)
        var picked: [(id: String, webhookID: String)] = []
        for candidate in candidates where total < maxInFlight {
            guard counts[candidate.webhookID, default: 0] < perTarget, !backingOff.contains(candidate.webhookID) else { continue }
            counts[candidate.webhookID, default: 0] += 1
            total += 1
            picked.append(candidate)
        }
        return picked
    }
}
