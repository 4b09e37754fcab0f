@testable import ChatPostgres
import Foundation
import Logging
import Testing

/// `PostgresRetry.run` through its injection points: which failures run the
/// body again, how often, and not past the time budget.
struct PostgresRetryTests {
    struct Retryable: Error {}
    struct Fatal: Error {}

    /// A body failing `failures` times with `error`, then returning its try count.
    final class Body {
        var tries = 0
        var sleeps: [TimeInterval] = []
        let failures: Int
        let error: any Error
        init(failures: Int, error: any Error = Retryable()) { (self.failures, self.error) = (failures, error) }
        func callAsFunction() throws -> Int {
            tries += 1
            if tries <= failures { throw error }
            return tries
        }
    }

    static let logger = Logger(label: "test")
    static func isRetryable(_ error: any Error) -> Bool { error is Retryable }

    func run(_ body: Body, clock: @escaping () -> TimeInterval = { 0 }) throws -> Int {
        try PostgresRetry.run(logger: Self.logger, isRetryable: Self.isRetryable, now: clock, sleep: { body.sleeps.append($0) }) { try body() }
    }

    @Test func aRetryableFailureRunsTheBodyAgainAfterOnePause() throws {
        let body = Body(failures: 1)
        #expect(try run(body) == 2)
        #expect(body.sleeps.count == 1)
    }

    @Test func anOtherFailureIsNotRetried() {
        let body = Body(failures: 1, error: Fatal())
        #expect(throws: Fatal.self) { try run(body) }
        #expect(body.tries == 1 && body.sleeps.isEmpty)
    }

    @Test func itStopsAfterThreeTries() {
        let body = Body(failures: 5)
        #expect(throws: Retryable.self) { try run(body) }
        #expect(body.tries == PostgresRetry.attempts && body.sleeps.count == PostgresRetry.attempts - 1)
    }

    /// A try that failed after the budget had passed is the last: no pause, no new try.
    @Test func noNewTryAfterTheBudget() {
        let body = Body(failures: 5)
        var now: TimeInterval = 100
        let clock = { () -> TimeInterval in
            defer { now += PostgresRetry.budget * 0.6 }
            return now
        }
        // Reads: the start (100), after try 1 (0.6 budgets in: retried), after try 2 (1.2: over).
        #expect(throws: Retryable.self) { try run(body, clock: clock) }
        #expect(body.tries == 2 && body.sleeps.count == 1)
    }

    @Test func aLockTimeoutIsNotRetried() {
        #expect(!PostgresRetry.retryable.contains("55P03"))
        #expect(PostgresRetry.retryable.contains("40P01"))
    }
}
