import Testing

@testable import ChatFrontend

/// The close code a shutdown gives WebSockets, and the socket count the heartbeat carries.
@Suite struct FrontendLifeTests {
    @Test func aStopSays1001AndARestart1012() {
        let life = FrontendLife()
        #expect(life.shutdownCloseCode == 1001)
        life.stopForRestart()
        #expect(life.shutdownCloseCode == 1012)
    }

    @Test func aHandoverThatEndsServesAgainUnlessAStopCameMeanwhile() {
        let life = FrontendLife()
        #expect(life.beginHandover())
        #expect(life.isStopping && life.shutdownCloseCode == 1012)
        #expect(life.endHandover())
        #expect(!life.isStopping)

        let stopped = FrontendLife()
        #expect(stopped.beginHandover())
        stopped.stopForGood()
        #expect(!stopped.endHandover(), "the stop wins: the handover's end does not make it serve")
        #expect(stopped.isStopping && stopped.shutdownCloseCode == 1001)
    }

    @Test func aProcessStoppingAlreadyBeginsNoHandover() {
        let life = FrontendLife()
        life.stopForRestart()
        #expect(!life.beginHandover(), "a stop came first: the handover is refused")
        #expect(life.shutdownCloseCode == 1012, "and the stop is not turned into a handover")
        #expect(!life.endHandover())

        let twice = FrontendLife()
        #expect(twice.beginHandover())
        #expect(!twice.beginHandover(), "one handover at a time")
    }

    @Test func openWebSocketsAreCounted() {
        let life = FrontendLife()
        for _ in 0..<3 { life.webSocketOpened() }
        life.webSocketClosed()
        #expect(life.webSockets == 2)
    }
}
