import ChatWire
import Foundation
import Logging
import Testing
import ZeroMQ

@testable import ChatBus

/// How bus sockets are secured (`Socket.secure`), the broker's allow-list
/// (`BusGatekeeper`), and how a client tells a refusal from a hiccup
/// (`HandshakeWatch`).
@Suite struct BusSecurityTests {
    static let tcp = BusAddress.tcp(host: "127.0.0.1", basePort: 1)

    /// A command link under back-pressure, configured as chatd configures
    /// it: the reader stops reading with its queue full for 10 s (twice the
    /// event sockets' heartbeat timeout); the link stays up and everything
    /// sent arrives afterwards. Fails with the 5 s timeout on PUSH/PULL.
    @Test func aCommandLinkSurvivesAStalledReaderWithAFullQueue() throws {
        let context = try Context()
        let pull = try Socket(context: context, type: .pull)
        try pull.secure(.none, bus: Self.tcp, as: .server)
        try pull.setHighWaterMarks(send: HighWaterMarks.commands, receive: HighWaterMarks.commands)
        let pullEvents = try pull.monitor(name: "stall-pull", events: MonitorEvent.disconnected)
        try pull.bind("tcp://127.0.0.1:*")
        let push = try Socket(context: context, type: .push)
        try push.secure(.none, bus: Self.tcp, as: .client)
        try push.setHighWaterMarks(send: HighWaterMarks.commands, receive: HighWaterMarks.commands)
        let pushEvents = try push.monitor(name: "stall-push", events: MonitorEvent.disconnected | MonitorEvent.connected)
        try push.connect(try #require(pull.lastEndpoint))
        defer { [pullEvents, pushEvents, push, pull].forEach { $0.close() } }
        #expect(try Self.next(on: pushEvents, within: 10_000)?.event == MonitorEvent.connected)
        // Fill both queues and the kernel's buffers until PUSH refuses.
        let body = [UInt8](repeating: 0x78, count: 4_000)
        var sent = 0
        while sent < 1_000_000, try push.send([body], dontWait: true) { sent += 1 }
        #expect(sent >= Int(HighWaterMarks.commands))
        // The stall (a busy worker, a queue with no worker): nothing reads.
        #expect(try Self.next(on: pushEvents, within: 10_000) == nil)
        #expect(try Self.next(on: pullEvents, within: 0) == nil)
        var received = 0
        var poller = Poller()
        poller.add(.socket(pull))
        while received < sent, try poller.poll(timeoutMilliseconds: 10_000)[0] & pollIn != 0 {
            while try pull.receive(dontWait: true) != nil { received += 1 }
        }
        #expect(received == sent)
        #expect(try Self.next(on: pullEvents, within: 0) == nil)
    }

    @Test func eventSocketsTimeOutFastAndCommandSocketsSlowly() {
        #expect(BusSecurity.heartbeatTimeout(for: .sub) == 5_000)
        #expect(BusSecurity.heartbeatTimeout(for: .xpub) == 5_000)
        #expect(BusSecurity.heartbeatTimeout(for: .push) == 60_000)
        #expect(BusSecurity.heartbeatTimeout(for: .pull) == 60_000)
    }

    /// The next monitor event within `milliseconds`, or nil.
    static func next(on monitor: Socket, within milliseconds: Int) throws -> MonitorEvent? {
        var poller = Poller()
        poller.add(.socket(monitor))
        guard try poller.poll(timeoutMilliseconds: milliseconds)[0] & pollIn != 0 else { return nil }
        return try monitor.receive(dontWait: true).flatMap(MonitorEvent.init(frames:))
    }

    // MARK: The allow-list

    static let second: UInt64 = 1_000_000_000

    func keys(_ peers: [String]) -> BusKeys {
        BusKeys(publicKey: "own", secretKey: "secret", peers: peers.map { BusKeys.Peer(publicKey: $0, host: $0) })
    }

    func request(_ key: String, from address: String = "10.0.0.9") -> ZAPHandler.Request {
        ZAPHandler.Request(domain: BusKeys.zapDomain, address: address, mechanism: "CURVE", publicKey: key)
    }

    @Test func listedKeysAndTheHostsOwnAreLetInQuietly() {
        let gate = BusGatekeeper(keys: keys(["a"]), logger: Logger(label: "test"))
        #expect(gate.decide(request("a"), now: 1).allowed)
        #expect(gate.decide(request("own"), now: 1).allowed)
        #expect(gate.decide(request("a"), now: 1).log == nil)
    }

    @Test func repeatsOfOneRefusalAreCountedIntoItsNextLine() {
        let gate = BusGatekeeper(keys: keys(["a"]), logger: Logger(label: "test"))
        let first = gate.decide(request("x"), now: 1)
        #expect(!first.allowed && first.log == .init(address: "10.0.0.9", key: "x", repeats: 0, unlogged: 0))
        for i in 0..<5 { #expect(gate.decide(request("x"), now: 2 + UInt64(i) * Self.second).log == nil) }
        let later = gate.decide(request("x"), now: 1 + BusGatekeeper.repeatWindow)
        #expect(later.log == .init(address: "10.0.0.9", key: "x", repeats: 5, unlogged: 0))
        // Another address with the same key is another line.
        #expect(gate.decide(request("x", from: "10.0.0.8"), now: 1 + BusGatekeeper.repeatWindow).log?.repeats == 0)
    }

    @Test func aReloadedPeersFileLetsInItsKeysAndShutsOutRemovedOnes() {
        let gate = BusGatekeeper(keys: keys(["a"]), logger: Logger(label: "test"))
        #expect(!gate.decide(request("b"), now: 1).allowed)
        gate.update(keys(["b"]))
        #expect(gate.decide(request("b"), now: 2).allowed)
        #expect(!gate.decide(request("a"), now: 2).allowed)
    }

    @Test func refusalLinesAreRateLimitedAndTheMapIsCapped() {
        let gate = BusGatekeeper(keys: keys(["a"]), logger: Logger(label: "test"))
        // A flood of strangers, 3,000 keys in one second.
        let logged = (0..<3_000).filter { gate.decide(request("k\($0)"), now: 5 * Self.second + UInt64($0)).log != nil }
        #expect(logged.count == BusGatekeeper.maxLinesPerSecond)
        // The next second's first line says how many went unlogged.
        #expect(gate.decide(request("late"), now: 6 * Self.second).log?.unlogged == 3_000 - BusGatekeeper.maxLinesPerSecond)
        // Five minutes of new strangers, each logged (ten a second): what is
        // remembered stays within the cap, past the window's worth.
        var most = 0
        for i in 0..<(3 * BusGatekeeper.maxRemembered) {
            #expect(gate.decide(request("s\(i)"), now: 7 * Self.second + UInt64(i) * Self.second / 10).log != nil)
            most = max(most, gate.remembered)
        }
        #expect(most == BusGatekeeper.maxRemembered)
        #expect(gate.remembered <= BusGatekeeper.maxRemembered)
    }

    // MARK: A client's handshakes

    func event(_ kind: Int32) -> MonitorEvent {
        var frame = [UInt8](repeating: 0, count: 6)
        frame[0] = UInt8(kind & 0xff)
        frame[1] = UInt8(kind >> 8 & 0xff)
        return MonitorEvent(frames: [frame, Array("tcp://10.0.0.1:7000".utf8)])!
    }

    @Test func aRefusalIsFinalAtOnce() {
        var watch = HandshakeWatch(hostKey: "mine")
        let failure = watch.saw(event(MonitorEvent.handshakeFailedAuth))
        #expect(failure == BusHandshakeFailure(address: "tcp://10.0.0.1:7000", hostKey: "mine", event: MonitorEvent.handshakeFailedAuth))
        var other = HandshakeWatch(hostKey: "mine")
        #expect(other.saw(event(MonitorEvent.handshakeFailedProtocol)) != nil)
    }

    @Test func aConnectionLostInAHandshakeCountsOnlyRepeatedWithoutSuccess() {
        var watch = HandshakeWatch(hostKey: "mine")
        #expect(watch.saw(event(MonitorEvent.handshakeFailedNoDetail)) == nil)
        #expect(watch.saw(event(MonitorEvent.handshakeFailedNoDetail)) == nil)
        #expect(watch.saw(event(MonitorEvent.handshakeSucceeded)) == nil)
        #expect(watch.saw(event(MonitorEvent.handshakeFailedNoDetail)) == nil)
        #expect(watch.saw(event(MonitorEvent.handshakeFailedNoDetail)) == nil)
        #expect(watch.saw(event(MonitorEvent.handshakeFailedNoDetail))?.event == MonitorEvent.handshakeFailedNoDetail)
    }
}
