import ChatWire
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// How every `tcp://` bus socket is set up before it binds or connects: CURVE
/// with this host's keys when they are configured, and ZMTP heartbeats
/// always (docs/protocol.md, "Security"). `ipc://` and `inproc://` sockets
/// are left as they are: file permissions guard the one, the process the other.
public struct BusSecurity: Sendable {
    /// Nil: plain TCP (a loopback bus, or `bus.insecure`).
    public var keys: BusKeys?

    public init(keys: BusKeys?) { self.keys = keys }

    public static let none = BusSecurity(keys: nil)

    /// Which end of the connection a socket is.
    public enum Side: Sendable {
        /// The broker's bound sockets: CURVE server, clients checked by the ZAP handler.
        case server
        /// Frontends' and workers' connecting sockets: CURVE client of the broker's key.
        case client
    }

    /// A PING a second on every tcp connection. Pings are sent and answered
    /// by libzmq's I/O thread, but only while it reads the connection: it
    /// stops reading one whose receive queue is full (back-pressure), and
    /// then neither answers nor hears the peer. So how long silence may last
    /// depends on whether the socket is always read.
    static let heartbeatInterval: Int32 = 1_000
    /// Event sockets (PUB, SUB, XPUB, XSUB) are always read (subscribers drop
    /// past their mark rather than stop), so silence there means the peer is
    /// gone (cable cut, host frozen, process stopped): closed after 5 s, which
    /// is several lost pings rather than one late one, and well inside the
    /// frontend's 10 s request deadline, so commands are resent to a live
    /// worker before their clients are told 503.
    static let eventsHeartbeatTimeout: Int32 = 5_000
    /// Command sockets (PUSH, PULL) go unread on purpose: a busy worker's full
    /// PULL, the broker's queue `.in` while no worker of it is connected. A
    /// 5 s timeout would cut those links and lose what they hold, and the
    /// frontends would resend into the overload. 60 s is far past the 10 s
    /// request deadline (whatever a cut link holds by then has been answered
    /// 503 already) and still notices a half-open link (a peer host gone
    /// without a FIN) within a minute rather than TCP's quarter of an hour.
    static let commandsHeartbeatTimeout: Int32 = 60_000

    /// The heartbeat timeout for a socket of `type` (also its TTL: the peer
    /// is told the same).
    static func heartbeatTimeout(for type: SocketType) -> Int32 {
        switch type {
        case .push, .pull: commandsHeartbeatTimeout
        default: eventsHeartbeatTimeout
        }
    }

    static let unavailable = "this libzmq was built without CURVE (zmq_has(\"curve\") is false), so bus keys cannot be made or used; install a libzmq with libsodium (Debian's libzmq5 has it)"

    /// A new key pair for `chatd keygen`, Z85.
    public static func newKeyPair() throws -> (publicKey: String, secretKey: String) {
        guard Curve.isAvailable else { throw BusSecurityError(unavailable) }
        let pair = try Curve.keyPair()
        return (pair.publicKey, pair.secretKey)
    }

    /// Checks at start that CURVE can be used: libzmq has it, and the key
    /// pair's halves belong together (a hand-edited file would otherwise
    /// fail every handshake, with nothing in the log but refusals).
    public static func check(_ keys: BusKeys?, keyFile: String?) throws {
        guard let keys else { return }
        guard Curve.isAvailable else { throw BusSecurityError(unavailable) }
        guard Curve.publicKey(secret: keys.secretKey) == keys.publicKey else {
            throw BusSecurityError("\(keyFile ?? "bus.key"): the public key is not the secret key's; write a new pair with chatd keygen --force")
        }
    }
}

public struct BusSecurityError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

extension Socket {
    /// A client socket of `type` connected to `endpoint` of `bus`, with that
    /// broker's key (`secure`) and what `configure` sets first; closed again
    /// if any step fails.
    static func connected(
        _ type: SocketType, context: Context, to endpoint: String, of bus: BusAddress, security: BusSecurity,
        configure: (Socket) throws -> Void
    ) throws -> Socket {
        let socket = try Socket(context: context, type: type)
        do {
            try socket.secure(security, bus: bus, as: .client)
            try configure(socket)
            try socket.connect(endpoint)
        } catch {
            socket.close()
            throw error
        }
        return socket
    }

    /// The one place a bus socket gets its keys and heartbeats: call it on
    /// every bus socket, after creating it and before `bind` or `connect`
    /// to `bus`.
    func secure(_ security: BusSecurity, bus: BusAddress, as side: BusSecurity.Side) throws {
        guard case .tcp = bus else { return }
        let timeout = BusSecurity.heartbeatTimeout(for: type)
        try setHeartbeat(
            intervalMilliseconds: BusSecurity.heartbeatInterval, timeoutMilliseconds: timeout, ttlMilliseconds: timeout)
        guard let keys = security.keys else { return }
        switch side {
        case .server:
            try setCurveServer(secretKey: keys.secretKey, zapDomain: BusKeys.zapDomain)
        case .client:
            guard let serverKey = keys.serverKey(for: bus) else {
                throw BusSecurityError("the peers file lists no key for the broker at \(bus.eventsIn)")
            }
            try setCurveClient(serverKey: serverKey, publicKey: keys.publicKey, secretKey: keys.secretKey)
        }
    }
}

/// The broker's allow-list: a ZAP handler that lets in the keys of the
/// peers file and this host's own, and logs every refusal at warning with
/// the client's address and key. libzmq does not retry a refused
/// connection, but the refused host's process exits and is restarted with
/// its supervisor's backoff, and strangers may present any number of keys, so
/// repeats of one (address, key) within a minute are counted into its next
/// line, at most `maxRemembered` pairs are remembered (the oldest go), and at
/// most `maxLinesPerSecond` lines are logged in all (the rest are counted
/// into the next line).
final class BusGatekeeper: Sendable {
    /// One refusal line to log.
    struct Refusal: Equatable {
        var address: String
        var key: String
        /// Refusals of this (address, key) since its last line.
        var repeats: Int
        /// Refusals of any client not logged for the overall rate limit.
        var unlogged: Int
    }

    struct State {
        var keys: BusKeys
        /// When each (address, key) was last logged, and refusals since.
        var logged: [String: (at: UInt64, since: Int)] = [:]
        /// Lines logged in the current second (`second`), and lines not logged.
        var second: UInt64 = 0
        var linesThisSecond = 0
        var unlogged = 0
    }

    private let state: Mutex<State>
    private let logger: Logger
    static let repeatWindow: UInt64 = 60_000_000_000
    /// A thousand distinct refused clients in a minute is an attack or a
    /// misconfigured fleet either way; the map stays a few hundred KiB.
    static let maxRemembered = 1_000
    /// Enough to see every host of a fleet refused at once; few enough that
    /// a flood of strangers cannot fill the journal.
    static let maxLinesPerSecond = 10

    init(keys: BusKeys, logger: Logger) {
        state = Mutex(State(keys: keys))
        self.logger = logger
    }

    /// A reload's peers file: from the next handshake on.
    func update(_ keys: BusKeys) {
        state.withLock { $0.keys = keys }
    }

    /// How many (address, key) pairs are remembered (for tests).
    var remembered: Int { state.withLock { $0.logged.count } }

    func allow(_ request: ZAPHandler.Request, now: UInt64 = monotonicNanos()) -> Bool {
        let (allowed, refusal) = decide(request, now: now)
        if let refusal {
            logger.warning("bus connection refused: its key is not in the peers file (bus.peerKeys)", metadata: [
                "peer.address": "\(refusal.address)", "peer.key": "\(refusal.key)",
                "refusals.since.last.logged": "\(refusal.repeats)", "refusals.not.logged": "\(refusal.unlogged)",
            ])
        }
        return allowed
    }

    /// Whether `request` may in, and the line to log about it if any.
    func decide(_ request: ZAPHandler.Request, now: UInt64) -> (allowed: Bool, log: Refusal?) {
        let key = request.publicKey ?? "none (\(request.mechanism))"
        return state.withLock { state -> (Bool, Refusal?) in
            if let presented = request.publicKey, state.keys.allowed.contains(presented) { return (true, nil) }
            let id = request.address + " " + key
            if let last = state.logged[id], now &- last.at < Self.repeatWindow {
                state.logged[id]?.since += 1
                return (false, nil)
            }
            if now / 1_000_000_000 != state.second {
                state.second = now / 1_000_000_000
                state.linesThisSecond = 0
            }
            guard state.linesThisSecond < Self.maxLinesPerSecond else {
                state.unlogged += 1
                return (false, nil)
            }
            state.linesThisSecond += 1
            let repeats = state.logged[id]?.since ?? 0
            if state.logged[id] == nil { Self.makeRoom(&state.logged, now: now) }
            state.logged[id] = (now, 0)
            let unlogged = state.unlogged
            state.unlogged = 0
            return (false, Refusal(address: request.address, key: key, repeats: repeats, unlogged: unlogged))
        }
    }

    /// Room for one more pair: those past the window go, then the oldest.
    private static func makeRoom(_ logged: inout [String: (at: UInt64, since: Int)], now: UInt64) {
        guard logged.count >= maxRemembered else { return }
        logged = logged.filter { now &- $0.value.at < repeatWindow }
        while logged.count >= maxRemembered, let oldest = logged.min(by: { $0.value.at < $1.value.at }) {
            logged[oldest.key] = nil
        }
    }
}

/// A CURVE handshake with the broker failed: refused by its ZAP handler, or
/// the peers file's key for it is not its key.
struct BusHandshakeFailure: Error, Equatable {
    var address: String
    var hostKey: String
    var event: Int32

    /// Logged at error by the refused process, before it exits (or, for
    /// `what` the supervisor's host status, before it tries again).
    func log(to logger: Logger, what: String? = nil) {
        var metadata: Logger.Metadata = ["broker": "\(address)", "host.key": "\(hostKey)", "event": "\(event)"]
        if let what { metadata["socket"] = "\(what)" }
        logger.error("bus handshake with the broker failed: refused (this host's key is not in the broker's peers file) or the peers file's key for the broker is wrong", metadata: metadata)
    }
}

/// Tells a refusal from a hiccup on one socket's connection to the broker.
/// A ZAP refusal (`handshakeFailedAuth`) and a malformed handshake
/// (`_Protocol`) are final: libzmq never retries them. A broker that cannot
/// open this client's HELLO (the peers file's key for it is wrong) just
/// closes the connection, which looks like any connection lost during a
/// handshake (`_NoDetail`, retried every reconnect interval); so that one
/// counts only `noDetailLimit` times in a row without a handshake succeeding
/// in between, which a broker restarting mid-handshake does not reach.
struct HandshakeWatch {
    static let events = MonitorEvent.handshakeFailed | MonitorEvent.handshakeSucceeded
    static let noDetailLimit = 3
    var hostKey: String
    var noDetailInARow = 0

    mutating func saw(_ event: MonitorEvent) -> BusHandshakeFailure? {
        let failure = BusHandshakeFailure(address: event.address, hostKey: hostKey, event: event.event)
        switch event.event {
        case MonitorEvent.handshakeSucceeded:
            noDetailInARow = 0
        case MonitorEvent.handshakeFailedAuth, MonitorEvent.handshakeFailedProtocol:
            return failure
        case MonitorEvent.handshakeFailedNoDetail:
            noDetailInARow += 1
            if noDetailInARow >= Self.noDetailLimit { return failure }
        default:
            break
        }
        return nil
    }
}
