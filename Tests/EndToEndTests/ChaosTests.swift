import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 6: invariants 1 and 2 under chaos. 50 clients in 10 rooms chat
    /// while every worker role is SIGKILLed three times and the store shards
    /// get a rolling restart; then every message is stored exactly once and
    /// delivered exactly once to every member, no socket closed, and every
    /// REST call either succeeded or got 503 in time. (`chatd-load --chaos`
    /// runs the same for longer.)
    @Suite struct Chaos {
        @Test func nothingIsLostOrDuplicated() async throws {
            let server = try await TestServer.start(storeWorkers: 2, environment: Steps.noRateLimits)
            defer { server.stop() }
            let outcome = try await ChatTesting.Chaos.run(server, ChatTesting.Chaos.Options())
            #expect(outcome.clientErrors.isEmpty, "\(outcome.clientErrors.prefix(3))")
            #expect(outcome.closedSockets == 0)
            #expect(outcome.sent == 1500)
            #expect(outcome.stored == outcome.sent, "\(outcome.summary)")
            #expect(outcome.storedTwice == 0)
            #expect(outcome.missingDeliveries == 0, "\(outcome.summary)")
            #expect(outcome.duplicateDeliveries == 0, "\(outcome.summary)")
            #expect(outcome.kills == 15 && outcome.rollingRestarts == 1)
            #expect(outcome.restCalls > 0 && outcome.restOther == 0, "\(outcome.summary)")
            #expect(outcome.restSlowest < 12)
        }
    }
}
