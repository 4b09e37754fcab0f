import ChatBus
import ChatWire
import NIOCore
import NIOWebSocket
import Synchronization

/// Which WebSocket connections are in which room, one registry per event loop.
/// A batch of bus events costs one hop per loop, not per connection: the loop
/// writes each room's shared frame bytes to each of its connections and
/// flushes each once (`DeliveryPlan`).
final class LoopRegistry: @unchecked Sendable {
    // Everything below is touched only on `loop`.
    let loop: any EventLoop
    private var rooms: [String: [ObjectIdentifier: WebSocketConnection]] = [:]
    /// A handover's log or buffer (HandoverRegistry.swift).
    var handover = HandoverLoopState()

    init(loop: any EventLoop) {
        self.loop = loop
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

    /// Closes with 1012 every connection here in a room `affects` says.
    func closeRooms(where affects: (String) -> Bool) {
        loop.preconditionInEventLoop()
        // Collected first: a closing connection leaves `rooms`.
        let closing = rooms.filter { affects($0.key) }.values.flatMap(\.values)
        for connection in closing { connection.closeForRestart() }
    }

    /// Each room's steps to each of its connections here, in order. A
    /// connection that closes on the way (a removal) leaves `rooms` at once;
    /// the loop goes on over the members as they were. While a handover
    /// runs, each room's events are logged or buffered first, in the same
    /// turn (HandoverRegistry.swift).
    func deliver(_ plan: [DeliveryPlan.Room], recording mode: HandoverMode = []) {
        loop.preconditionInEventLoop()
        for room in plan {
            if !mode.isEmpty { handover.record(room: room.roomID, room.recorded, mode: mode) }
            guard let members = rooms[room.roomID] else { continue }
            for connection in members.values { connection.deliver(room.steps) }
            FrontendMetrics.delivered(acceptedMillis: room.acceptedMillis, sockets: members.count)
        }
    }
}

/// All loops' registries.
public final class ConnectionRegistry: Sendable {
    let registries: [ObjectIdentifier: LoopRegistry]
    private let nextID = Atomic<UInt64>(0)
    /// Taken by the bus thread (`fanOut`), and by a handover to change its
    /// part or read the keys: never contended outside a handover.
    let fanOutState = Mutex(FanOutState())

    struct FanOutState: Sendable {
        var recent = RecentKeys()
        var handover = HandoverFanOut()
    }

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

    /// A worker's link to this host's broker was down (`LinkGap`): the
    /// sockets of the rooms it affects missed events nothing would bring
    /// them. Closed with 1012, their clients reconnect and fetch what they
    /// missed with `after`, as after a frontend's restart. Called on the bus
    /// thread after the events that came before the gap's end were handed on.
    public func closeRooms(affectedBy gap: LinkGap) {
        for registry in registries.values {
            registry.loop.execute { registry.closeRooms(where: gap.affects(room:)) }
        }
    }

    /// Called on the bus thread with a batch of events: framed once, in
    /// buffers shared by every loop and connection (`DeliveryPlan`).
    public func fanOut(_ events: [RoomEvent]) {
        fanOutState.withLock { state in
            let plan =
                state.handover.isIdle
                ? DeliveryPlan(events, recent: &state.recent) : DeliveryPlan(events, recent: &state.recent, handover: state.handover)
            guard !plan.rooms.isEmpty else { return }
            let rooms = plan.rooms
            let mode = state.handover.mode
            // Handed to every loop under the lock: a handover's change of its
            // part falls between the same two batches on every loop.
            for registry in registries.values {
                registry.loop.execute { registry.deliver(rooms, recording: mode) }
            }
        }
    }
}
