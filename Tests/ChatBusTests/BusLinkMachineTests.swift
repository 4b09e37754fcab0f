import ChatBus
import Testing

/// A worker's links to several brokers, each with its own readiness: what
/// `BusServer` does with them is only what these machines return.
@Suite struct BusLinkMachineTests {
    let ms: UInt64 = 1_000_000

    /// Ticks every millisecond from `from` to `to` and collects the actions.
    func run(_ machine: inout BusLinkMachine, from: UInt64, to: UInt64) -> [BusLinkMachine.Action] {
        stride(from: from, through: to, by: Int(ms)).flatMap { machine.tick(now: $0) }
    }

    @Test func aLinkEchoesUntilItsEchoComesBackThenTakesCommandsAndHeartbeats() {
        var link = BusLinkMachine(mode: .worker, now: 0)
        #expect(!link.isServing && !link.takesCommands)
        // Every 2 ms while waiting, from the first tick.
        let echoes = run(&link, from: 0, to: 9 * ms)
        #expect(echoes == Array(repeating: .sendEcho, count: 5))
        let echoed = link.echoed(now: 10 * ms)
        #expect(echoed == [.log(.serving(afterNanos: 10 * ms)), .takeCommands, .sendHeartbeat])
        #expect(link.takesCommands)
        // A second echo (the broker forwards every heartbeat) changes nothing.
        #expect(link.echoed(now: 11 * ms).isEmpty)
        // Fast heartbeats (25 ms) in the link's first second, then every 500 ms.
        #expect(run(&link, from: 11 * ms, to: 60 * ms) == [.sendHeartbeat, .sendHeartbeat])
        #expect(link.nextWake(now: 60 * ms) == 85 * ms)
        _ = run(&link, from: 61 * ms, to: 1_010 * ms)
        let slow = run(&link, from: 1_011 * ms, to: 3_010 * ms)
        #expect(slow.count == 4 && slow.allSatisfy { $0 == .sendHeartbeat })
    }

    @Test func waitingLongSlowsTheEchoDown() {
        var link = BusLinkMachine(mode: .worker, now: 0)
        #expect(run(&link, from: 0, to: 999 * ms).count == 500)
        // A broker down for hours costs ten echoes a second, not 500.
        #expect(run(&link, from: 1_000 * ms, to: 2_999 * ms).count == 20)
        #expect(link.nextWake(now: 3_000 * ms).map { $0 <= 3_100 * ms } == true)
    }

    /// Two brokers: losing one stops only its link; the other serves on,
    /// and the lost one serves again once its new broker echoes it.
    @Test func losingOneBrokerStopsOnlyItsLinkUntilItEchoesAgain() {
        var links = [BusLinkMachine(mode: .worker, now: 0), BusLinkMachine(mode: .worker, now: 0)]
        _ = links[0].echoed(now: 5 * ms)
        _ = links[1].echoed(now: 6 * ms)
        #expect(links.allSatisfy { $0.takesCommands })
        let lost = links[0].disconnected(now: 2_000 * ms)
        #expect(lost == [.log(.lost), .stopCommands, .sendEcho])
        #expect(!links[0].takesCommands && links[1].takesCommands)
        #expect(links[0].state == .awaitingEcho(since: 2_000 * ms))
        // The serving link keeps its heartbeats; the lost one echoes fast again.
        #expect(run(&links[1], from: 2_001 * ms, to: 2_600 * ms).contains(.sendHeartbeat))
        #expect(run(&links[0], from: 2_001 * ms, to: 2_010 * ms) == Array(repeating: .sendEcho, count: 5))
        // A second drop report while waiting is nothing new.
        #expect(links[0].disconnected(now: 2_011 * ms).isEmpty)
        let back = links[0].echoed(now: 2_050 * ms)
        #expect(back == [.log(.serving(afterNanos: 50 * ms)), .takeCommands, .sendHeartbeat])
        #expect(links.allSatisfy { $0.takesCommands })
        // Back as a new connection: fast heartbeats again.
        #expect(links[0].nextWake(now: 2_050 * ms) == 2_075 * ms)
    }

    /// Every drop raises the link's generation, carried in its heartbeats
    /// (`Heartbeat.link`): its broker's frontends tell a gap from silence.
    /// A drop while waiting raises it too: an echo sent before it, still on
    /// its way, is of the old generation and does not make the link serve.
    @Test func everyDropRaisesOnlyThatLinksGeneration() {
        var links = [BusLinkMachine(mode: .worker, now: 0), BusLinkMachine(mode: .worker, now: 0)]
        _ = links[0].echoed(now: 5 * ms)
        _ = links[1].echoed(now: 5 * ms)
        #expect(links.map(\.generation) == [0, 0])
        _ = links[0].disconnected(now: 1_000 * ms)
        #expect(links.map(\.generation) == [1, 0])
        _ = links[0].disconnected(now: 1_001 * ms)
        #expect(links[0].generation == 2)
        _ = links[0].echoed(now: 1_100 * ms)
        #expect(links[0].generation == 2 && links[0].takesCommands)
    }

    @Test func aStandbyWaitsEchoedWithoutCommandsOrHeartbeatsUntilPromoted() {
        var serving = BusLinkMachine(mode: .standby, now: 0)
        var waiting = BusLinkMachine(mode: .standby, now: 0)
        #expect(serving.echoed(now: 3 * ms) == [.log(.serving(afterNanos: 3 * ms))])
        #expect(serving.isServing && !serving.takesCommands)
        // Echoed, a standby publishes nothing.
        #expect(run(&serving, from: 4 * ms, to: 5_000 * ms).isEmpty)
        #expect(serving.nextWake(now: 5_000 * ms) == nil)
        // A lost broker while waiting for the assignment: echo again, no commands to stop.
        #expect(serving.disconnected(now: 5_001 * ms) == [.log(.lost), .sendEcho])
        #expect(serving.echoed(now: 5_010 * ms) == [.log(.serving(afterNanos: 9 * ms))])
        // Promoted: the echoed link takes commands and heartbeats at once;
        // the waiting one only when its echo comes.
        #expect(serving.promote(now: 6_000 * ms) == [.takeCommands, .sendHeartbeat])
        #expect(waiting.promote(now: 6_000 * ms).isEmpty)
        #expect(!waiting.takesCommands && waiting.mode == .worker)
        #expect(waiting.echoed(now: 6_001 * ms) == [.log(.serving(afterNanos: 6_001 * ms)), .takeCommands, .sendHeartbeat])
        // Once a worker, promoting again does nothing.
        #expect(serving.promote(now: 6_002 * ms).isEmpty)
    }
}
