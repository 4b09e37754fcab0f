import ChatWire
import Foundation
import ZeroMQ

/// A supervisor's sockets for `ctl status` across hosts (`HostStatus`): a
/// PUB to each broker it publishes its own status to (its own on a frontend
/// host, every peer's on a workers host), and a SUB to each of the other
/// hosts' brokers, subscribed to every host's status. Not
/// thread-safe: one queue (the supervisor's) uses it.
public final class StatusExchange {
    private let context: Context
    /// A socket per broker, not one connected to all: CURVE gives a socket
    /// one server key, and each broker has its own.
    private var publishers: [Socket] = []
    private var subscribers: [Socket] = []

    /// - Parameters:
    ///   - publishTo: brokers that carry this host's status (their events in).
    ///   - readFrom: brokers whose hosts' statuses this host reads (their events out).
    ///   - security: CURVE keys and heartbeats for `tcp://` brokers.
    public init(publishTo: [BusAddress], readFrom: [BusAddress], security: BusSecurity = .none) throws {
        context = try Context()
        do {
            for bus in publishTo {
                publishers.append(try connect(.pub, to: bus.eventsIn, of: bus, security: security) {
                    // A few small documents a second; the newest is all that counts.
                    try $0.setHighWaterMarks(send: 100, receive: 100)
                })
            }
            for bus in readFrom {
                subscribers.append(try connect(.sub, to: bus.eventsOut, of: bus, security: security) {
                    try $0.setHighWaterMarks(send: 1_000, receive: 1_000)
                    try $0.subscribe(HostStatus.topicPrefix)
                })
            }
        } catch {
            close()
            throw error
        }
    }

    /// Makes and connects a socket to one broker: the one place where what
    /// the supervisor's bus sockets need before they connect is set.
    private func connect(
        _ type: SocketType, to endpoint: String, of bus: BusAddress, security: BusSecurity, configure: (Socket) throws -> Void
    ) throws -> Socket {
        // That broker's server key (the peers file's line for its address).
        try Socket.connected(type, context: context, to: endpoint, of: bus, security: security) { socket in
            // A broker that restarts (its host did) is reconnected to within a second.
            try socket.setReconnectInterval(milliseconds: 200)
            try configure(socket)
        }
    }

    /// Sends this host's status to every broker it is connected to (PUB
    /// drops it for one that is not there).
    public func publish(_ status: HostStatus) throws {
        let frames = status.event.encode()
        for publisher in publishers { try publisher.send(frames, dontWait: true) }
    }

    /// Every status that arrived since the last call.
    public func received() throws -> [HostStatus] {
        var statuses: [HostStatus] = []
        for subscriber in subscribers {
            while let frames = try subscriber.receive(dontWait: true) {
                if let event = try? Event(frames: frames), let status = HostStatus(event) { statuses.append(status) }
            }
        }
        return statuses
    }

    public func close() {
        subscribers.forEach { $0.close() }
        publishers.forEach { $0.close() }
        context.shutdown()
    }
}
