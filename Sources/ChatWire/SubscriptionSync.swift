/// How a frontend learns that its room subscriptions are in force at the
/// broker, so that a WebSocket it accepts misses no event of its room.
///
/// A SUB socket's subscription travels to the broker's XPUB on the same
/// pipe, in order, as everything else the SUB sends; XPUB applies each
/// subscription to its filter as it reads it from the pipe, before the
/// broker's `zmq_recv` returns it (libzmq 4.3 `xpub_t::xread_activated`).
/// So after subscribing to rooms a frontend subscribes to a topic of its
/// own, `sync.<frontend-id>.<n>` (`n` counts up per frontend process);
/// when the broker receives that subscription, every room subscription the
/// frontend sent before it is applied, and the broker publishes this event
/// on the sync topic. Only that frontend is subscribed to it, and XPUB's
/// pipe to it is FIFO: every room event the broker forwards after the sync
/// reaches the frontend after it. The number tells a sync requested after
/// an unsubscribe from an older one still in flight.
public struct SubscriptionSync: Sendable, Equatable {
    public var frontendID: String
    public var number: UInt64

    public init(frontendID: String, number: UInt64) {
        self.frontendID = frontendID
        self.number = number
    }

    /// The topic the frontend subscribes to, and the broker answers on.
    public var topic: String { Topic.syncPrefix + frontendID + "." + String(number) }

    /// The broker's answer.
    public var event: Event { Event(topic: topic, kind: .synced, key: String(number), body: []) }

    /// Reads a sync topic; nil for any other.
    public init?(topic: String) {
        guard topic.hasPrefix(Topic.syncPrefix) else { return nil }
        let rest = topic.dropFirst(Topic.syncPrefix.count)
        guard let dot = rest.lastIndex(of: ".") else { return nil }
        let frontendID = rest[..<dot]
        guard !frontendID.isEmpty, let number = UInt64(rest[rest.index(after: dot)...]) else { return nil }
        self.init(frontendID: String(frontendID), number: number)
    }

    /// Reads the broker's answer; nil for anything else.
    public init?(_ event: Event) {
        guard event.kind == .synced, let sync = SubscriptionSync(topic: event.topic), event.key == String(sync.number) else { return nil }
        self = sync
    }
}

/// What the broker does with a message a subscriber sent it through XPUB:
/// a subscription (`1` then the topic) or an unsubscription (`0` then the
/// topic), as libzmq hands them up.
public enum UpstreamMessage: Equatable, Sendable {
    /// Pass it on to the publishers (replies, heartbeats, control topics).
    case forward
    /// Keep it: the broker subscribes upstream to every room itself
    /// (`Topic.roomPrefix`), so room events always reach it and XPUB's
    /// filter alone decides which frontend gets which.
    case room
    /// A sync request: publish `sync.event`.
    case sync(SubscriptionSync)
    /// The end of a sync request, or a malformed one: no publisher has
    /// anything on its topic.
    case drop

    public init(_ message: [UInt8]) {
        guard let flag = message.first, flag <= 1 else {
            self = .forward
            return
        }
        let topic = message.dropFirst()
        if topic.starts(with: Topic.roomPrefix.utf8) {
            self = .room
        } else if topic.starts(with: Topic.syncPrefix.utf8) {
            let sync = SubscriptionSync(topic: String(decoding: topic, as: UTF8.self))
            self = flag == 1 ? sync.map { .sync($0) } ?? .drop : .drop
        } else {
            self = .forward
        }
    }

    /// The broker's own upstream subscription to every room's events.
    public static var allRooms: [UInt8] { [1] + Array(Topic.roomPrefix.utf8) }
}
