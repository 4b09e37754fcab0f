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
    private var recentKeys = Set<String>()
    private var recentOrder: [String] = []
    private var recentNext = 0
    /// Covers several seconds of events at full load; a re-published event
    /// only follows a worker's death, within a retry interval (750 ms).
    static let recentCapacity = 65_536

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

    /// Whether an event with this key is new here. Keys `m:` (message
    /// changes) and `s:` (session presence) are idempotency keys; others are not.
    private func firstDelivery(of key: String) -> Bool {
        guard key.hasPrefix("m:") || key.hasPrefix("s:") else { return true }
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
    func deliver(_ events: [(roomID: String, key: String, frame: ByteBuffer)]) {
        loop.preconditionInEventLoop()
        var touched: [ObjectIdentifier: WebSocketConnection] = [:]
        for event in events {
            guard let members = rooms[event.roomID], firstDelivery(of: event.key) else { continue }
            if let removed = RoomEventKey.removed(event.key) {
                // Membership ended: those sockets get nothing more (api-contract.md "Messages").
                for (id, connection) in members where removed == "*" || connection.identity.id == removed {
                    touched[id] = nil
                    connection.membershipEnded()
                }
                continue
            }
            // `x:<connection>`: everyone but the connection that caused it (typing).
            let excluded = event.key.hasPrefix("x:") ? event.key.dropFirst(2) : nil
            for (id, connection) in members where excluded == nil || connection.key != excluded! {
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
    /// shared by every loop and connection.
    public func fanOut(_ events: [RoomEvent]) {
        let frames = events.map { (roomID: $0.roomID, key: $0.key, frame: ByteBuffer(bytes: $0.body)) }
        for registry in registries.values {
            registry.loop.execute { registry.deliver(frames) }
        }
    }
}
