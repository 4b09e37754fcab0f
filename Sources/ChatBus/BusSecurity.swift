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

    /// A PING a second; a connection silent for 5 s is closed. Pings are sent
    /// by libzmq's I/O thread, so a worker busy in a long batch still
    /// answers; only a peer that is gone (cable cut, host frozen, process
    /// stopped) stays silent. 5 s: several lost pings, not one late one, and
    /// well inside the frontend's 10 s request deadline, so commands are
    /// resent to a live worker before their clients are told 503. A ping is
    /// a few dozen bytes, per connection and second: nothing beside the traffic.
    static let heartbeatInterval: Int32 = 1_000
    static let heartbeatTimeout: Int32 = 5_000

    /// A new key pair for `chatd keygen`, Z85.
    public static func newKeyPair() throws -> (publicKey: String, secretKey: String) {
        guard Curve.isAvailable else { throw BusSecurityError("this libzmq was built without CURVE (zmq_has(\"curve\") is false)") }
        let pair = try Curve.keyPair()
        return (pair.publicKey, pair.secretKey)
    }

    /// Checks at start that CURVE can be used: libzmq has it, and the key
    /// pair's halves belong together (a hand-edited file would otherwise
    /// fail every handshake, with nothing in the log but refusals).
    public static func check(_ keys: BusKeys?, keyFile: String?) throws {
        guard let keys else { return }
        guard Curve.isAvailable else {
            throw BusSecurityError("this libzmq was built without CURVE (zmq_has(\"curve\") is false), so bus.key cannot be used; install a libzmq with libsodium (Debian's libzmq5 has it)")
        }
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
    /// The one place a bus socket gets its keys and heartbeats: call it on
    /// every bus socket, after creating it and before `bind` or `connect`
    /// to `bus`.
    func secure(_ security: BusSecurity, bus: BusAddress, as side: BusSecurity.Side) throws {
        guard case .tcp = bus else { return }
        try setHeartbeat(
            intervalMilliseconds: BusSecurity.heartbeatInterval, timeoutMilliseconds: BusSecurity.heartbeatTimeout,
            ttlMilliseconds: BusSecurity.heartbeatTimeout)
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
/// the client's address and key. A refused client retries its connection
/// every few milliseconds, so repeats of one (address, key) within a
/// minute are counted, and the count logged with the next line.
final class BusGatekeeper: Sendable {
    private struct State {
        var keys: BusKeys
        /// When each (address, key) was last logged, and refusals since.
        var logged: [String: (at: UInt64, since: Int)] = [:]
    }

    private let state: Mutex<State>
    private let logger: Logger
    static let repeatWindow: UInt64 = 60_000_000_000

    init(keys: BusKeys, logger: Logger) {
        state = Mutex(State(keys: keys))
        self.logger = logger
    }

    /// A reload's peers file: from the next handshake on.
    func update(_ keys: BusKeys) {
        state.withLock { $0.keys = keys }
    }

    func allow(_ request: ZAPHandler.Request, now: UInt64 = monotonicNanos()) -> Bool {
        let key = request.publicKey ?? "none (\(request.mechanism))"
        let (allowed, repeats) = state.withLock { state -> (Bool, Int?) in
            if let presented = request.publicKey, state.keys.allowed.contains(presented) { return (true, nil) }
            let id = request.address + " " + key
            if let last = state.logged[id], now - last.at < Self.repeatWindow {
                state.logged[id]?.since += 1
                return (false, nil)
            }
            // Bounded whatever keys strangers try: entries past the window go.
            if state.logged.count > 10_000 { state.logged = state.logged.filter { now - $0.value.at < Self.repeatWindow } }
            let repeats = state.logged[id]?.since ?? 0
            state.logged[id] = (now, 0)
            return (false, repeats)
        }
        if let repeats {
            logger.warning("bus connection refused: its key is not in the peers file (bus.peerKeys)", metadata: [
                "peer.address": "\(request.address)", "peer.key": "\(key)",
                "refusals.since.last.logged": "\(repeats)",
            ])
        }
        return allowed
    }
}
