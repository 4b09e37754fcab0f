import ChatCore
import Foundation
import Testing

@testable import ChatWorkers

/// The webhooks worker's pure rules: when a failed delivery is tried again,
/// and which due deliveries it claims.
struct WebhookRetryTests {
    let second: Int64 = 1_000_000

    @Test func firstRetryWithinTenSecondsWhateverTheJitter() {
        let policy = WebhookRetryPolicy()
        for jitter in [0, 0.5, 0.999] {
            let next = policy.nextAttempt(attempts: 1, createdAt: 0, now: 0, jitter: jitter)
            #expect(next != nil && next! >= 2 * second && next! <= 10 * second)
        }
    }

    @Test func delaysGrowExponentiallyUpToTheCap() {
        let policy = WebhookRetryPolicy()
        let delays = (1...16).map { policy.nextAttempt(attempts: $0, createdAt: 0, now: 0, jitter: 1)! }
        #expect(delays[0] == 4 * second && delays[1] == 8 * second && delays[2] == 16 * second)
        #expect(delays.last == 3600 * second)
        #expect(zip(delays, delays.dropFirst()).allSatisfy { $0 <= $1 })
    }

    @Test func jitterSpreadsTheDelay() {
        let policy = WebhookRetryPolicy()
        let low = policy.nextAttempt(attempts: 3, createdAt: 0, now: 0, jitter: 0)!
        let high = policy.nextAttempt(attempts: 3, createdAt: 0, now: 0, jitter: 0.99)!
        #expect(low == 8 * second && high > low)
    }

    @Test func givesUpWhenTheWindowEnds() {
        let policy = WebhookRetryPolicy(window: 86_400)
        let created: Int64 = 1_000 * second
        let end = created + 86_400 * second
        // Near the end the last try falls on the window's end, then none.
        #expect(policy.nextAttempt(attempts: 30, createdAt: created, now: end - 10 * second, jitter: 1) == end)
        #expect(policy.nextAttempt(attempts: 31, createdAt: created, now: end, jitter: 1) == nil)
        #expect(policy.nextAttempt(attempts: 31, createdAt: created, now: end + 1, jitter: 0) == nil)
    }

    @Test func aShortWindowForTests() {
        let policy = WebhookRetryPolicy(window: 3)
        #expect(policy.nextAttempt(attempts: 1, createdAt: 0, now: 1 * second, jitter: 1) == 3 * second)
        #expect(policy.nextAttempt(attempts: 2, createdAt: 0, now: 3 * second, jitter: 1) == nil)
    }

    @Test func planKeepsEachTargetToItsSlots() {
        let plan = WebhookDispatchPlan(perTarget: 2, maxInFlight: 5)
        let due = [("a1", "dead"), ("a2", "dead"), ("a3", "dead"), ("b1", "live"), ("c1", "other"), ("c2", "other")]
            .map { (id: $0.0, webhookID: $0.1) }
        // The dead target already has one in flight: one more slot, then the others.
        let picked = plan.pick(due, inFlight: ["dead": 1]).map(\.id)
        #expect(picked == ["a1", "b1", "c1", "c2"])
        // At the overall limit nothing more is claimed.
        #expect(plan.pick(due, inFlight: ["dead": 2, "x": 3]).isEmpty)
        // A full target does not hold back the next one.
        #expect(plan.pick(due, inFlight: ["dead": 2]).map(\.id) == ["b1", "c1", "c2"])
    }

    /// A webhook backing off (its last attempt failed) takes no slot, however
    /// old its backlog: many dead receivers cannot fill every slot again each
    /// time their attempts time out.
    @Test func aWebhookBackingOffTakesNoSlot() {
        let plan = WebhookDispatchPlan(perTarget: 2, maxInFlight: 4)
        let due = [("d1", "dead"), ("d2", "dead"), ("e1", "dead2"), ("e2", "dead2"), ("l1", "live")].map { (id: $0.0, webhookID: $0.1) }
        #expect(plan.pick(due, inFlight: [:]).map(\.id) == ["d1", "d2", "e1", "e2"])
        #expect(plan.pick(due, inFlight: [:], backingOff: ["dead", "dead2"]).map(\.id) == ["l1"])
    }
}
