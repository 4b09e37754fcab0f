import Foundation
import Testing

@testable import ChatSupervisor

/// Steps that wait for children run on the event that completes them, or fail at their deadline.
@Suite struct WaitersTests {
    @Test func aConditionThatHoldsRunsAtOnce() {
        let waiters = Waiters()
        var ran = false
        waiters.wait(on: DispatchQueue(label: "t"), until: .distantFuture, { true }, then: { ran = true }, failure: { Issue.record("failed") })
        #expect(ran)
    }

    @Test func resumedByTheEventThatMakesItHoldInTheOrderTheyBegan() {
        let waiters = Waiters()
        var ready = false
        var order: [Int] = []
        for step in 0..<3 {
            waiters.wait(on: DispatchQueue(label: "t"), until: .distantFuture, { ready }, then: { order.append(step) }, failure: { Issue.record("failed") })
        }
        waiters.resume()
        #expect(order.isEmpty, "nothing happened yet")
        ready = true
        waiters.resume()
        #expect(order == [0, 1, 2])
        waiters.resume()
        #expect(order == [0, 1, 2], "each step runs once")
    }

    @Test func aStepMayBeginTheNextWaitWhileBeingResumed() {
        let waiters = Waiters()
        var phase = 0
        var done = false
        waiters.wait(on: DispatchQueue(label: "t"), until: .distantFuture, { phase >= 1 }) {
            waiters.wait(on: DispatchQueue(label: "t"), until: .distantFuture, { phase >= 2 }, then: { done = true }, failure: {})
        } failure: {}
        phase = 1
        waiters.resume()
        #expect(!done)
        phase = 2
        waiters.resume()
        #expect(done)
    }

    @Test func failsAtTheDeadlineOrWhenAllFail() async throws {
        let queue = DispatchQueue(label: "t")
        let waiters = Waiters()
        let failed = DispatchSemaphore(value: 0)
        queue.sync {
            waiters.wait(on: queue, until: Uptime.now() + 0.05, { false }, then: { Issue.record("ran") }, failure: { failed.signal() })
        }
        #expect(failed.wait(timeout: .now() + 5) == .success)
        var failures = 0
        waiters.wait(on: queue, until: .distantFuture, { false }, then: {}, failure: { failures += 1 })
        waiters.failAll()
        waiters.failAll()
        #expect(failures == 1)
    }

    @Test func aStepBegunAfterTheStopFailsAtOnce() {
        let waiters = Waiters()
        waiters.failAll()
        var failed = 0
        // Not at its deadline, after the supervisor has gone: `ctl` would get no answer.
        waiters.wait(on: DispatchQueue(label: "t"), until: .distantFuture, { false }, then: { Issue.record("ran") }, failure: { failed += 1 })
        // Nor does it go on when its condition happens to hold.
        waiters.wait(on: DispatchQueue(label: "t"), until: .distantFuture, { true }, then: { Issue.record("ran") }, failure: { failed += 1 })
        #expect(failed == 2)
    }
}
