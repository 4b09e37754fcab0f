import Testing

@testable import ChatFrontend

/// `/healthz`'s record of worker heartbeats, with the clock passed in.
@Suite struct HealthStates {
    /// A heartbeat recorded after `/healthz` read the clock (between its clock
    /// read and its lock) carries a later time than `now`: alive, no trap.
    @Test func aHeartbeatNewerThanNowCountsAsAlive() {
        let health = HealthState()
        health.record("files", at: 10_000_000_000)
        #expect(health.allAlive(["files"], now: 9_999_999_999))
        #expect(health.allAlive(["files"], now: 0))
    }

    @Test func aWorkerIsAliveForThreeSecondsAfterItsHeartbeat() {
        let health = HealthState()
        health.record("files", at: 10_000_000_000)
        health.record("store-0", at: 11_000_000_000)
        #expect(health.allAlive(["files", "store-0"], now: 12_999_999_999))
        #expect(!health.allAlive(["files", "store-0"], now: 13_000_000_000))
        #expect(health.allAlive(["store-0"], now: 13_000_000_000))
        #expect(!health.allAlive(["files", "search"], now: 10_000_000_000))
    }
}
