import ChatConfig
import Logging
import Testing

@testable import ChatSupervisor

/// A frontend retired after a handover drains its bus after its HTTP
/// shutdown: its SIGKILL comes after the grace plus that drain, by the
/// longer of the deadline it started with and a reloaded one.
@Suite struct RetiredKillTests {
    func supervisor(requestTimeoutMilliseconds: Int) -> Supervisor {
        var config = ChatConfig()
        config.requestTimeoutMilliseconds = requestTimeoutMilliseconds
        return Supervisor(
            config: config, reload: { [config] in config }, executable: "/bin/false", baseArguments: [], logger: Logger(label: "test"), graceSeconds: 10
        )
    }

    @Test func theKillWaitsForTheGraceAndTheDrain() {
        let supervisor = supervisor(requestTimeoutMilliseconds: 20_000)
        #expect(supervisor.retiredAfterHandoverKillDelay == 10 + 20 + 1)
    }

    /// A reload lowered the deadline (applied in place before its frontend
    /// restarts): the frontends it retires still drain by the one they read.
    @Test func aLoweredDeadlineDoesNotShortenTheDrainOfThoseStartedBefore() {
        let supervisor = supervisor(requestTimeoutMilliseconds: 20_000)
        supervisor.config.requestTimeoutMilliseconds = 5_000
        #expect(supervisor.retiredAfterHandoverKillDelay == 10 + 20 + 1)
        supervisor.config.requestTimeoutMilliseconds = 30_000
        #expect(supervisor.retiredAfterHandoverKillDelay == 10 + 30 + 1)
    }
}
