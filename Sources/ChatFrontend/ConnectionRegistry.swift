import ChatBus
import ChatWire
import NIOCore
import NIOWebSocket
import Synchronization

/// Which WebSocket connections are in which room, one registry per event loop.
/// A bus event costs one hop per loop, not per connection: the loop writes the
/// shared frame bytes to each of its connections and flushes each once.
final class LoopRegistry: @unchecked Sendable {
    // Everything below is touched only on `loop`.
    let loop: any EventLoop
    private var rooms: [String: [ObjectIdentifier: WebSocketConnection]] = [:]
    /// Keys of recently delivered events: a command resent after a worker died
    /// may publish the same message twice; members see it once.
    private var recentKeys = Set<EventKey>()
    private var recentOrder: [EventKey] = []
    private var recentNext = 0
    /// Covers several seconds of events at full load; a re-published event
    /// only follows a worker's death, within a retry interval (750 ms).
    static let recentCapacity = 65_536
    /// A handover's log or buffer (HandoverRegistry.swift).
    var handover = HandoverLoopState()

    init(loop: any EventLoop) {
        self.loop = loop
        recentOrder.reserveCapacity(Self.recentCapacity)
    }

    func add(_ connection: WebSocketConnection, room: String) {
        loop.preconditionInEventLoop()
        rooms[room, default: [:]][ObjectIdentifier(connection)] = connection
    }

    func remove(_ connection: WebSocketConnection, room: String) {
        loop.preconditionInEventLoop()
        rooms[room]?[ObjectIdentifier(connection)] = nil
        if rooms[room]?.isEmpty == true { rooms[room] = nil }
    }

    var connectionCount: Int { rooms.values.reduce(0) { $0 + $1.count } }

    var connections: [WebSocketConnection] { rooms.values.flatMap(\.values) }

    /// The last `count` idempotency keys delivered here, newest last (a handover's `delivered`).
    func recentlyDelivered(_ count: Int) -> [EventKey] {
        guard recentOrder.count == Self.recentCapacity else { return Array(recentOrder.suffix(count)) }
        let ordered = recentOrder[recentNext...] + recentOrder[..<recentNext]
        return Array(ordered.suffix(count))
    }

    /// Whether an event with this key is new here: only idempotency keys
    /// (message changes, session presence) repeat.
    func firstDelivery(of key: EventKey) -> Bool {
        guard key.isIdempotent else { return true }
        guard recentKeys.insert(key).inserted else { return false }
        if recentOrder.count < Self.recentCapacity {
            recentOrder.append(key)
        } else {
            recentKeys.remove(recentOrder[recentNext])
            recentOrder[recentNext] = key
            recentNext = (recentNext + 1) % Self.recentCapacity
        }
        return true
    }

    /// Writes each event to the room's connections, then flushes each touched connection once.
    func deliver(_ events: [(roomID: String, key: EventKey, frame: ByteBuffer, hash: UInt64)], handoverMode: HandoverMode = []) {
        loop.preconditionInEventLoop()
        var touched: [ObjectIdentifier: WebSocketConnection] = [:]
        for event in events {
            if !handoverMode.isEmpty {
                let fresh = firstDelivery(of: event.key)
                handover.record(room: event.roomID, hash: event.hash, key: event.key, frame: event.frame, fresh: fresh, mode: handoverMode)
                guard fresh else { continue }
            } else if rooms[event.roomID] == nil || !firstDelivery(of: event.key) {
                continue
            }
            guard let members = rooms[event.roomID] else { continue }
            let excluded: ConnectionRef?
            switch event.key {
            case .removeUser, .removeEveryone:
                // Membership ended: those sockets get nothing more (api-contract.md "Messages").
                for (id, connection) in members where event.key == .removeEveryone || event.key == .removeUser(connection.identity.id) {
                    touched[id] = nil
                    connection.membershipEnded()
                }
                continue
            case .except(let connection): excluded = connection  // its own typing
            case .none, .message, .session: excluded = nil
            }
            for (id, connection) in members where connection.key != excluded {
                // A moved socket got its copy from its old process (HandoverRegistry.swift).
                if connection.adopted && handover.delivered.contains(event.key) { continue }
                connection.write(text: event.frame)
                touched[id] = connection
            }
        }
        for connection in touched.values { connection.flush() }
    }
}

/// All loops' registries.
public final class ConnectionRegistry: Sendable {
    let registries: [ObjectIdentifier: LoopRegistry]
    private let nextID = Atomic<UInt64>(0)
    /// `HandoverMode` bits: while set, each event is hashed once here and logged or buffered per loop.
    let handoverMode = Atomic<Int>(0)

    /// A connection id unique within this frontend process.
    func makeConnectionID() -> UInt64 { nextID.add(1, ordering: .relaxed).newValue }

    public init(group: any EventLoopGroup) {
        var registries: [ObjectIdentifier: LoopRegistry] = [:]
        for loop in group.makeIterator() {
            registries[ObjectIdentifier(loop)] = LoopRegistry(loop: loop)
        }
        self.registries = registries
    }

    func registry(for loop: any EventLoop) -> LoopRegistry {
        guard let registry = registries[ObjectIdentifier(loop)] else {
            preconditionFailure("connection on an event loop outside the server's group")
        }
        return registry
    }

    /// Called on the bus thread with a batch of events: one buffer per event,
    /// shared by every loop and connection. An event whose key no worker
    /// writes is dropped: what it orders is unknown.
    public func fanOut(_ events: [RoomEvent]) {
        let mode = HandoverMode(rawValue: handoverMode.load(ordering: .sequentiallyConsistent))
        let frames = events.compactMap { event in
            EventKey(event.key).map { key in
                let hash = mode.isEmpty ? 0 : HandoverLog.hash(key: event.key.utf8, body: event.body)
                return (roomID: event.roomID, key: key, frame: ByteBuffer(bytes: event.body), hash: hash)
            }
        }
        for registry in registries.values {
            registry.loop.execute { registry.deliver(frames, handoverMode: mode) }
        }
    }
}
