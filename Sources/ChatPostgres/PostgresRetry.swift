import Foundation
import Logging
import PostgresNIO

/// A write transaction PostgreSQL aborted to break a lock cycle, run again
/// from its start.
///
/// Two workers' batches can lock rows in crossing orders (the store worker
/// takes a sender's `room_participants` row with each message, the receipts
/// worker a reader's with each receipt, both in their commands' order, which
/// no lock order can sort). PostgreSQL then aborts one of them (40P01); the
/// other goes on. Without a rerun, every command of the aborted batch got a
/// 503 for a conflict that a second try settles. The body must be safe to
/// run again: what it collects outside the database starts empty each time
/// (BatchProcessor's events are built per attempt; StoreWorker keeps what it
/// published pending until the commit).
enum PostgresRetry {
    /// deadlock_detected, serialization_failure: the transaction was rolled
    /// back as a whole and nothing of it is kept. Not lock_not_available
    /// (55P03): a lock timeout has already cost `lock_timeout` (4 s, see
    /// PostgresPool), and a second wait as long would run the worker's bus
    /// thread, which also sends its heartbeats, past the supervisor's 10 s
    /// hang timeout.
    static let retryable: Set<String> = ["40P01", "40001"]
    /// Tries in all. The winner of a deadlock commits while the loser
    /// backs off, so the second try nearly always passes; a third covers a
    /// second cycle (a deadlock costs `deadlock_timeout`, 1 s by default, to detect).
    static let attempts = 3
    /// No new try once this long has passed since the first began: the
    /// bus thread runs the transaction and must send a heartbeat within
    /// the supervisor's 10 s hang timeout, and a try can itself wait up to
    /// `lock_timeout` (4 s) for a lock, so 2 s + 4 s stay inside it.
    static let budget: TimeInterval = 2

    static func isRetryable(_ error: any Error) -> Bool {
        guard let code = (error as? PSQLError)?.serverInfo?[.sqlState] else { return false }
        return retryable.contains(code)
    }

    /// A pause before try `attempt + 1`: 10–40 ms times the tries so far,
    /// jittered so that two losers do not meet again in step.
    static func backoff(afterAttempt attempt: Int) -> TimeInterval {
        Double(attempt) * Double.random(in: 0.010...0.040)
    }

    /// Seconds on a monotonic clock.
    static func monotonicNow() -> TimeInterval { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// Runs `body`, again while it fails with a retryable error, `attempts`
    /// times at most and not after `budget` has passed since the first try began.
    static func run<T>(
        logger: Logger, attempts: Int = attempts, budget: TimeInterval = budget, isRetryable: (any Error) -> Bool = isRetryable,
        now: () -> TimeInterval = monotonicNow,
        sleep: (TimeInterval) -> Void = { Thread.sleep(forTimeInterval: $0) }, _ body: () throws -> T
    ) throws -> T {
        let start = now()
        var attempt = 1
        while true {
            do {
                return try body()
            } catch where attempt < attempts && isRetryable(error) && now() - start < budget {
                let pause = backoff(afterAttempt: attempt)
                logger.warning("transaction aborted by the database, retried", metadata: [
                    "sqlstate": "\((error as? PSQLError)?.serverInfo?[.sqlState] ?? "?")", "attempt": "\(attempt)", "pause_ms": "\(Int(pause * 1000))",
                ])
                sleep(pause)
                attempt += 1
            }
        }
    }
}
