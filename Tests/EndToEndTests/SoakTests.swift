import ChatTesting
import Foundation
import Testing

extension LongRuns {
    /// Issue 10: bounded memory on the bus. Load bursts while the search
    /// worker (a subscriber) is stopped with SIGSTOP: the supervisor's RSS
    /// stays under a bound, the WebSocket clients get every message of every
    /// burst, every acknowledged message is in history, and once resumed the
    /// search worker catches up from the database.
    ///
    /// CI runs a small size. The long form (docs/benchmarks.md §8):
    /// `CHATD_SOAK_BURSTS=10 CHATD_SOAK_MESSAGES=1000 swift test --filter Soak`.
    @Suite struct Soak {
        /// The supervisor's resident memory may grow at most this much over
        /// its idle size, whatever the number of bursts. By design it holds
        /// at most ~2 MB per command queue plus ~3 MB of nudges for a stopped
        /// search worker (docs/protocol.md "Memory bounds"). Before the bound,
        /// a stopped search worker made it grow ~1.2 KB per message without
        /// limit: +29 MB over this test's 24,000 messages (measured with the
        /// previous binary), so this size tells the two apart.
        static let supervisorGrowthBound = 16 << 20

        @Test func aStoppedSubscriberCostsTheSupervisorBoundedMemory() async throws {
            let environment = ProcessInfo.processInfo.environment
            var options = ChatTesting.Soak.Options()
            options.bursts = environment["CHATD_SOAK_BURSTS"].flatMap(Int.init) ?? 3
            options.messagesPerBurst = environment["CHATD_SOAK_MESSAGES"].flatMap(Int.init) ?? 500
            options.stopSearch = true
            // Rate limits (when present) would refuse a load test's bursts.
            // The supervisor would kill a stopped worker after its hang timeout
            // (10 s): the point is a subscriber that stays stopped.
            let server = try await TestServer.start(storeWorkers: 1, environment: ["CHAT_RATE_LIMITS": "off", "CHAT_HANG_TIMEOUT_SECONDS": "600"])
            defer { server.stop() }
            let outcome = try await ChatTesting.Soak.run(server, options)
            print(outcome.summary)
            #expect(outcome.clientErrors.isEmpty, "\(outcome.clientErrors.prefix(3))")
            #expect(outcome.bursts.count == options.bursts)
            // The other subscribers were not held up: every member got every
            // message of its room live, in every burst.
            #expect(outcome.missingDeliveries == 0)
            let sent = options.rooms * options.perRoom * options.messagesPerBurst * options.bursts
            #expect(outcome.confirmed == sent)
            #expect(outcome.confirmedStored == outcome.confirmed)
            let idle = outcome.idleRSS.first { $0.process == "supervisor" }?.bytes ?? 0
            #expect(idle > 0)
            #expect(outcome.peak("supervisor") - idle < Self.supervisorGrowthBound, "\(outcome.summary)")
            #expect(outcome.searchCaughtUpSeconds != nil, "\(outcome.summary)")
        }
    }
}
