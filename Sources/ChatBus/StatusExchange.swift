import ChatWire
import Foundation
import ZeroMQ

/// A supervisor's sockets for `ctl status` across hosts (`HostStatus`): a
/// PUB connected to the brokers it publishes its own status to (its own on
/// a frontend host, every peer's on a workers host), and a SUB connected to
/// the other hosts' brokers, subscribed to every host's status. Not
/// thread-safe: one queue (the supervisor's) uses it.
public final class StatusExchange {
    private let context: Context
    private let publisher: Socket
    private let subscriber: Socket

    /// - Parameters:
    ///   - publishTo: brokers that carry this host's status (their events in).
    ///   - readFrom: brokers whose hosts' statuses this host reads (their events out).
    public init(publishTo: [BusAddress], readFrom: [BusAddress]) throws {
        context = try Context()
        publisher = try Socket(context: context, type: .pub)
        subscriber = try Socket(context: context, type: .sub)
        // A few small documents a second; the newest is all that counts.
        try publisher.setHighWaterMarks(send: 100, receive: 100)
        try subscriber.setHighWaterMarks(send: 1_000, receive: 1_000)
        try subscriber.subscribe(HostStatus.topicPrefix)
        for bus in publishTo { try connect(publisher, to: bus.eventsIn, of: bus) }
        for bus in readFrom { try connect(subscriber, to: bus.eventsOut, of: bus) }
    }

    /// Connects a socket to one broker: the one place where what the
    /// supervisor's bus sockets need before they connect is set.
    private func connect(_ socket: Socket, to endpoint: String, of bus: BusAddress) throws {
        // A broker that restarts (its host did) is reconnected to within a second.
        try socket.setReconnectInterval(milliseconds: 200)
        try socket.connect(endpoint)
    }

    /// Sends this host's status to every broker it is connected to (PUB
    /// drops it for one that is not there).
    public func publish(_ status: HostStatus) throws {
        try publisher.send(status.event.encode(), dontWait: true)
    }

    /// Every status that arrived since the last call.
    public func received() throws -> [HostStatus] {
        var statuses: [HostStatus] = []
        while let frames = try subscriber.receive(dontWait: true) {
            if let event = try? Event(frames: frames), let status = HostStatus(event) { statuses.append(status) }
        }
        return statuses
    }

    public func close() {
        subscriber.close()
        publisher.close()
        context.shutdown()
    }
}
