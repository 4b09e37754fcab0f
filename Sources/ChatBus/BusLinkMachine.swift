/// The logic of one of a worker's links to a broker (`BusServer`), without
/// sockets or clocks: every input comes with the time (monotonic
/// nanoseconds), every effect is an `Action` returned.
///
/// A worker keeps one link per broker (one per frontend host with
/// `peers:`). A link waits for its own echo before it takes commands: its
/// PUB drops what it sends until the broker's forwarded subscriptions reach
/// it, and a command handled in that window would have its reply and room
/// event dropped. A lost broker (its host restarted or cut off) sends only
/// that link back to waiting: the others go on serving.
public struct BusLinkMachine: Sendable {
    public enum State: Equatable, Sendable {
        /// Sending the echo frames until one comes back through the broker.
        case awaitingEcho(since: UInt64)
        /// Echoed: it takes commands (a worker) and heartbeats.
        case serving(since: UInt64)
    }

    /// What a link is for: a worker takes commands and heartbeats once
    /// echoed; a standby only waits, echoed, until it is promoted.
    public enum Mode: Equatable, Sendable {
        case worker
        case standby
    }

    public enum Action: Equatable, Sendable {
        /// Publish the echo frames on this link (the heartbeat, or a standby's echo).
        case sendEcho
        /// Publish the worker's heartbeat on this link.
        case sendHeartbeat
        /// Read this link's queue from now on (connect it the first time).
        case takeCommands
        /// Stop reading this link's queue until it serves again.
        case stopCommands
        case log(Fact)
    }

    public enum Fact: Equatable, Sendable {
        /// The echo came back after this long: the link serves.
        case serving(afterNanos: UInt64)
        /// The broker's connection dropped while the link served.
        case lost
    }

    /// Echoes while waiting: every 2 ms for `fastEchoNanos` (a worker
    /// replacing a dead one, its queue waiting, is answered within a few ms
    /// of its broker's subscriptions arriving), then every 100 ms, so a link
    /// to a host that is down for hours costs ten tiny sends a second, not 500.
    public static let fastEchoInterval: UInt64 = 2_000_000
    public static let slowEchoInterval: UInt64 = 100_000_000
    public static let fastEchoNanos: UInt64 = 1_000_000_000
    /// Heartbeats while serving: every 500 ms; every 25 ms in the link's
    /// first second, because the first heartbeat a frontend hears from a new
    /// pid is what makes it resend what the worker this one replaces took down.
    public static let heartbeatInterval: UInt64 = 500_000_000
    public static let fastHeartbeatInterval: UInt64 = 25_000_000

    public private(set) var state: State
    public private(set) var mode: Mode
    /// Raised each time the broker's connection drops, and carried in what
    /// the link sends (`Heartbeat.link`): the same pid with another
    /// generation tells that broker's frontends the room events published
    /// while it was down never reached them. An echo of an earlier
    /// generation, still on its way when the connection dropped, is not
    /// this one's: it does not make the link serve before the new
    /// connection's subscriptions arrived.
    public private(set) var generation: UInt32 = 0
    /// When the echo or the heartbeat was last sent.
    var lastSent: UInt64?

    /// A link just connected: waiting for its echo.
    public init(mode: Mode, now: UInt64) {
        self.mode = mode
        self.state = .awaitingEcho(since: now)
    }

    public var isServing: Bool {
        if case .serving = state { return true }
        return false
    }

    /// Takes commands: serving, as a worker.
    public var takesCommands: Bool { isServing && mode == .worker }

    // MARK: Inputs

    /// The time passed: sends what is due.
    public mutating func tick(now: UInt64) -> [Action] {
        guard let interval = interval(now: now) else { return [] }
        guard lastSent.map({ now &- $0 >= interval }) ?? true else { return [] }
        lastSent = now
        return [isServing ? .sendHeartbeat : .sendEcho]
    }

    /// This link's own echo came back through its broker.
    public mutating func echoed(now: UInt64) -> [Action] {
        guard case .awaitingEcho(let since) = state else { return [] }
        state = .serving(since: now)
        lastSent = nil
        var actions: [Action] = [.log(.serving(afterNanos: now &- since))]
        if mode == .worker { actions.append(.takeCommands) }
        return actions + tick(now: now)
    }

    /// The PUB's connection to the broker dropped (its monitor said so).
    /// The generation rises even while the link waits: an echo sent before
    /// the drop must not be taken for this connection's.
    public mutating func disconnected(now: UInt64) -> [Action] {
        generation &+= 1
        if generation == 0 { generation = 1 }  // 0 means "never dropped" on the wire
        guard case .serving = state else { return [] }
        state = .awaitingEcho(since: now)
        lastSent = nil
        var actions: [Action] = [.log(.lost)]
        if mode == .worker { actions.append(.stopCommands) }
        return actions + tick(now: now)
    }

    /// A standby became a worker: a serving link takes commands and
    /// heartbeats at once (fast, as a new pid), a waiting one once echoed.
    public mutating func promote(now: UInt64) -> [Action] {
        guard mode == .standby else { return [] }
        mode = .worker
        guard case .serving = state else { return [] }
        state = .serving(since: now)
        lastSent = nil
        return [.takeCommands] + tick(now: now)
    }

    // MARK: Timing

    /// When `tick` has something to send next; nil: nothing is ever due
    /// (a serving standby publishes nothing).
    public func nextWake(now: UInt64) -> UInt64? {
        guard let interval = interval(now: now) else { return nil }
        guard let lastSent else { return now }
        return lastSent &+ interval
    }

    private func interval(now: UInt64) -> UInt64? {
        switch state {
        case .awaitingEcho(let since):
            return now &- since < Self.fastEchoNanos ? Self.fastEchoInterval : Self.slowEchoInterval
        case .serving(let since):
            guard mode == .worker else { return nil }
            return now &- since < Self.fastEchoNanos ? Self.fastHeartbeatInterval : Self.heartbeatInterval
        }
    }
}
