import Synchronization

/// What the frontend process as a whole is doing, for its connections and its
/// heartbeats: how many WebSockets are open, and whether it is stopping for a
/// restart (the service goes on: 1012) or for good (1001).
public final class FrontendLife: Sendable {
    private let openWebSockets = Atomic<Int>(0)
    /// 0 serving, 1 stopping for good, 2 stopping for a restart, 3 handing
    /// its WebSockets over to a new process.
    private let stop = Atomic<Int>(0)

    public init() {}

    /// Open WebSockets now (`CHATD_WEBSOCKETS` in the heartbeat, `ctl status`).
    public var webSockets: Int { openWebSockets.load(ordering: .relaxed) }

    func webSocketOpened() { openWebSockets.add(1, ordering: .relaxed) }
    func webSocketClosed() { openWebSockets.subtract(1, ordering: .relaxed) }

    /// The supervisor restarts this frontend (SIGUSR1): its WebSockets close
    /// with 1012 instead of 1001, so clients reconnect at once, to a sibling.
    func stopForRestart() { stop.store(2, ordering: .sequentiallyConsistent) }

    /// A handover began: a handshake finishing now is refused (503) and a
    /// socket opening now closed with 1012, as in a restart, since the
    /// sockets offered to the new process are counted already. False when
    /// it is stopping already (a stop signal came first): no handover then.
    func beginHandover() -> Bool { stop.compareExchange(expected: 0, desired: 3, ordering: .sequentiallyConsistent).exchanged }

    /// The handover is over and this process serves on (refused, or its
    /// new process died): serving as before. False when a stop signal came
    /// meanwhile: stopping wins.
    @discardableResult
    func endHandover() -> Bool { stop.compareExchange(expected: 3, desired: 0, ordering: .sequentiallyConsistent).exchanged }

    /// SIGTERM or SIGINT: the service stops (1001).
    func stopForGood() { stop.store(1, ordering: .sequentiallyConsistent) }

    /// A stop began: a handshake finishing now is refused, a socket opening
    /// now is closed at once, since the server's shutdown already told the
    /// open ones.
    var isStopping: Bool { stop.load(ordering: .sequentiallyConsistent) != 0 }

    /// The close code of a server shutdown: 1012 (service restart) or 1001 (going away).
    var shutdownCloseCode: Int {
        stop.load(ordering: .sequentiallyConsistent) >= 2 ? 1012 : 1001
    }
}
