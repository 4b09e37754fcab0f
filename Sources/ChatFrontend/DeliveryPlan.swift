import ChatBus
import ChatWire
import NIOCore

/// A batch of room events (what the bus thread read in one pass) as each
/// room's sockets receive it: per room, in the bus's order, steps that every
/// member of the room applies in turn. The frames are WebSocket-framed once
/// here (a server's frames are unmasked, so every socket gets the same
/// bytes), and consecutive frames that every member gets are joined into one
/// buffer: a socket costs one write and one flush per room per batch,
/// however many events the batch holds for its room. Nothing waits for a
/// batch to fill: a lone event is a batch of one.
struct DeliveryPlan: Sendable {
    enum Step: Sendable, Equatable {
        /// Wire bytes (one or more text frames) for every member but `excluded`.
        case frames(ByteBuffer, excluded: ConnectionRef?)
        /// The membership of this user (every member's, when nil) ended:
        /// those sockets close with 4403 and get nothing more.
        case remove(user: String?)
    }

    struct Room: Sendable {
        let roomID: String
        var steps: [Step] = []
        /// Frames for every member, still growing.
        fileprivate var shared: ByteBuffer?

        fileprivate mutating func closeShared() {
            if let shared { steps.append(.frames(shared, excluded: nil)) }
            shared = nil
        }
    }

    private(set) var rooms: [Room] = []
    private var index: [String: Int] = [:]

    /// The plan of a batch; an event whose key no worker writes is dropped
    /// (what it orders is unknown), and so is a repeat of an idempotent key.
    init(_ events: [RoomEvent], recent: inout RecentKeys) {
        for event in events {
            guard let key = EventKey(event.key), recent.firstDelivery(of: key) else { continue }
            add(roomID: event.roomID, key: key, body: event.body)
        }
        for i in rooms.indices { rooms[i].closeShared() }
    }

    private mutating func add(roomID: String, key: EventKey, body: [UInt8]) {
        let i: Int
        if let known = index[roomID] {
            i = known
        } else {
            i = rooms.count
            index[roomID] = i
            rooms.append(Room(roomID: roomID))
        }
        switch key {
        case .removeUser(let user):
            rooms[i].closeShared()
            rooms[i].steps.append(.remove(user: user))
        case .removeEveryone:
            rooms[i].closeShared()
            rooms[i].steps.append(.remove(user: nil))
        case .except(let connection):
            rooms[i].closeShared()
            var frame = Self.allocator.buffer(capacity: body.count + 10)
            Self.writeTextFrame(body, into: &frame)
            rooms[i].steps.append(.frames(frame, excluded: connection))
        case .none, .message, .session:
            if rooms[i].shared == nil { rooms[i].shared = Self.allocator.buffer(capacity: body.count + 10) }
            Self.writeTextFrame(body, into: &rooms[i].shared!)
        }
    }

    private static let allocator = ByteBufferAllocator()

    /// One final, unmasked text frame (RFC 6455 5.2), as NIO's
    /// `WebSocketFrameEncoder` writes it: the shortest length form.
    static func writeTextFrame(_ payload: [UInt8], into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(0x81))  // FIN, opcode 1 (text)
        switch payload.count {
        case ..<126: buffer.writeInteger(UInt8(payload.count))
        case ...Int(UInt16.max):
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(payload.count))
        default:
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(payload.count))
        }
        buffer.writeBytes(payload)
    }
}

/// Keys of recently delivered events: a command resent after a worker died
/// may publish the same message twice; members see it once. Kept by the bus
/// thread, once for every event loop.
struct RecentKeys: Sendable {
    private var keys = Set<EventKey>()
    private var order: [EventKey] = []
    private var next = 0
    /// Covers several seconds of events at full load; a re-published event
    /// only follows a worker's death, within a retry interval (750 ms).
    let capacity: Int

    init(capacity: Int = 65_536) {
        self.capacity = capacity
    }

    /// Whether an event with this key is new: only idempotency keys
    /// (message changes, session presence) repeat.
    mutating func firstDelivery(of key: EventKey) -> Bool {
        guard key.isIdempotent else { return true }
        guard keys.insert(key).inserted else { return false }
        if order.count < capacity {
            order.append(key)
        } else {
            keys.remove(order[next])
            order[next] = key
            next = (next + 1) % capacity
        }
        return true
    }
}
