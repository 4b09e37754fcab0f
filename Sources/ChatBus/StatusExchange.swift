import ChatWire
import Foundation
import Logging
import ZeroMQ

/// A supervisor's sockets for `ctl status` across hosts (`HostStatus`): a
/// PUB to each broker it publishes its own status to (its own on a frontend
/// host, every peer's on a workers host), and a SUB to each of the other
/// hosts' brokers, subscribed to every host's status. Not
/// thread-safe: one queue (the supervisor's) uses it.
public final class StatusExchange {
    private let context: Context
    private let security: BusSecurity
    /// A socket per broker, not one connected to all: CURVE gives a socket
    /// one server key, and each broker has its own.
    private var publishers: [Peer] = []
    private var subscribers: [Peer] = []

    /// One status socket and the monitor of its connection. libzmq never
    /// reconnects after a protocol error: a refused handshake (with keys),
    /// or a document over `HostStatus.maxDocumentBytes`. Such a link would
    /// stay silent (its host missing from `ctl status`) until a restart.
    struct Peer {
        let bus: BusAddress
        let type: SocketType
        var socket: Socket
        let monitor: Socket
        /// With keys: tells a refusal from a hiccup.
        var watch: HandshakeWatch?
        /// Disconnected (monotonic) and no handshake since: remade
        /// `retryNanos` later.
        var downSince: UInt64?
        var refusalLogged = false

        func close() {
            monitor.close()
            socket.close()
        }
    }

    /// A status socket down this long without a handshake is made again: a
    /// key added to that broker's peers file gets in without a restart, and
    /// a link cut by an oversized document comes back.
    public static let retryNanos: UInt64 = 10_000_000_000

    /// - Parameters:
    ///   - publishTo: brokers that carry this host's status (their events in).
    ///   - readFrom: brokers whose hosts' statuses this host reads (their events out).
    ///   - security: CURVE keys and heartbeats for `tcp://` brokers.
    public init(publishTo: [BusAddress], readFrom: [BusAddress], security: BusSecurity = .none) throws {
        context = try Context()
        self.security = security
        do {
            for bus in publishTo { publishers.append(try peer(.pub, bus)) }
            for bus in readFrom { subscribers.append(try peer(.sub, bus)) }
        } catch {
            close()
            throw error
        }
    }

    /// Makes and connects a socket to one broker: the one place where what
    /// the supervisor's bus sockets need before they connect is set.
    private func peer(_ type: SocketType, _ bus: BusAddress) throws -> Peer {
        var monitor: Socket?
        // That broker's server key (the peers file's line for its address).
        let socket = try Socket.connected(type, context: context, to: type == .pub ? bus.eventsIn : bus.eventsOut, of: bus, security: security) {
            // A broker that restarts (its host did) is reconnected to within a second.
            try $0.setReconnectInterval(milliseconds: 200)
            if type == .pub {
                // A few small documents a second; the newest is all that counts.
                try $0.setHighWaterMarks(send: 100, receive: 100)
            } else {
                try $0.setHighWaterMarks(send: 1_000, receive: 1_000)
                // Only authenticated peers publish here, but a document
                // is held whole in memory before it is read: bounded.
                try $0.setMaxMessageSize(bytes: Int64(HostStatus.maxDocumentBytes))
                try $0.subscribe(HostStatus.topicPrefix)
            }
            let events = MonitorEvent.disconnected | HandshakeWatch.events
            monitor = try $0.monitor(name: "status-\(getpid())-\(UInt64.random(in: 0...UInt64.max))", events: events)
        }
        let watch: HandshakeWatch? = if let keys = security.keys, case .tcp = bus { HandshakeWatch(hostKey: keys.publicKey) } else { nil }
        // `monitor` was set: the configuration ran without throwing.
        return Peer(bus: bus, type: type, socket: socket, monitor: monitor!, watch: watch)
    }

    /// Sends this host's status to every broker it is connected to (PUB
    /// drops it for one that is not there).
    public func publish(_ status: HostStatus) throws {
        let frames = status.event.encode()
        for publisher in publishers { try publisher.socket.send(frames, dontWait: true) }
    }

    /// Every status that arrived since the last call.
    public func received() throws -> [HostStatus] {
        var statuses: [HostStatus] = []
        for subscriber in subscribers {
            while let frames = try subscriber.socket.receive(dontWait: true) {
                if let event = try? Event(frames: frames), let status = HostStatus(event) { statuses.append(status) }
            }
        }
        return statuses
    }

    /// Reads the sockets' monitors (call it with `received`): logs a
    /// broker's refusal, once per refusal, and makes a socket down
    /// `retryNanos` without a handshake again.
    public func checkConnections(logger: Logger, now: UInt64 = monotonicNanos()) {
        check(&publishers, logger: logger, now: now)
        check(&subscribers, logger: logger, now: now)
    }

    private func check(_ peers: inout [Peer], logger: Logger, now: UInt64) {
        for index in peers.indices {
            while let frames = try? peers[index].monitor.receive(dontWait: true), let event = MonitorEvent(frames: frames) {
                if event.event == MonitorEvent.disconnected, peers[index].downSince == nil { peers[index].downSince = now }
                if event.event == MonitorEvent.handshakeSucceeded {
                    peers[index].downSince = nil
                    peers[index].refusalLogged = false
                }
                if let failure = peers[index].watch?.saw(event), !peers[index].refusalLogged {
                    failure.log(to: logger, what: "host status")
                    peers[index].refusalLogged = true
                    peers[index].downSince = peers[index].downSince ?? now
                }
            }
            guard let since = peers[index].downSince, now &- since >= Self.retryNanos, let fresh = try? peer(peers[index].type, peers[index].bus)
            else { continue }
            peers[index].close()
            peers[index] = fresh
        }
    }

    public func close() {
        subscribers.forEach { $0.close() }
        publishers.forEach { $0.close() }
        context.shutdown()
    }
}
