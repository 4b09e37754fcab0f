import ChatBus
import ChatMetrics
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
        /// A frame (a new message) for every member but these users, who
        /// blocked its sender (`EventKey.parse`).
        case hidden(ByteBuffer, from: [String])
        /// A frame every member gets but the sockets a handover moved here:
        /// its idempotent key reached them through their old process
        /// (`HandoverFanOut.delivered`).
        case notToAdopted(ByteBuffer)
        /// A frame for this user's sockets alone (a call signal), or for
        /// those of one device of theirs (an encrypted message).
        case onlyTo(ByteBuffer, user: String, device: String? = nil)
    }

    /// One event as a handover records it (HandoverRegistry.swift): every
    /// event with a known key, repeats included, so that the old and the new
    /// process record one stream.
    struct Recorded: Sendable {
        /// `HandoverLog.hash` of its key and body.
        let hash: UInt64
        let key: EventKey
        /// Its frame alone, for a new frontend's replay; empty when only logged.
        let frame: ByteBuffer
        /// Not a repeat of an idempotent key delivered before.
        let fresh: Bool
        /// Users whose sockets do not get it (blocks).
        var hiddenFrom: [String] = []
    }

    struct Room: Sendable {
        let roomID: String
        var steps: [Step] = []
        /// Only while a handover runs (`HandoverMode`): each event of the room, in order.
        var recorded: [Recorded] = []
        /// Frames for every member, still growing.
        fileprivate var shared: ByteBuffer?
        /// The accept times of the new messages among its frames (`FrontendMetrics.delivered`).
        var acceptedMillis: [UInt64] = []

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
            guard let (key, hidden) = EventKey.parse(event.key), recent.firstDelivery(of: key) else { continue }
            add(room(event.roomID), key: key, hiddenFrom: hidden, body: event.body)
        }
        for i in rooms.indices { rooms[i].closeShared() }
    }

    /// The plan of a batch while a handover runs: each room also carries its
    /// events as `handover.mode` records them (hashed here, once for every
    /// loop), and a frame of a key in `handover.delivered` is kept from the
    /// sockets moved here. The rest as above.
    init(_ events: [RoomEvent], recent: inout RecentKeys, handover: HandoverFanOut) {
        for event in events {
            guard let (key, hidden) = EventKey.parse(event.key) else { continue }
            let fresh = recent.firstDelivery(of: key)
            let i = room(event.roomID)
            if !handover.mode.isEmpty {
                var frame = ByteBuffer()
                if handover.mode.contains(.buffer) {
                    frame = Self.allocator.buffer(capacity: event.body.count + 10)
                    Self.writeTextFrame(event.body, into: &frame)
                }
                let hash = HandoverLog.hash(key: event.key.utf8, body: event.body)
                rooms[i].recorded.append(Recorded(hash: hash, key: key, frame: frame, fresh: fresh, hiddenFrom: hidden))
            }
            guard fresh else { continue }
            // A hidden message takes its hidden step even then: a copy twice
            // to an adopted socket (a resend, during a handover) rather than
            // one to a blocker's.
            if handover.delivered.contains(key) && hidden.isEmpty {
                rooms[i].closeShared()
                var frame = Self.allocator.buffer(capacity: event.body.count + 10)
                Self.writeTextFrame(event.body, into: &frame)
                rooms[i].steps.append(.notToAdopted(frame))
            } else {
                add(i, key: key, hiddenFrom: hidden, body: event.body)
            }
        }
        for i in rooms.indices { rooms[i].closeShared() }
    }

    /// The index of the room's entry, made on its first event.
    private mutating func room(_ roomID: String) -> Int {
        if let known = index[roomID] { return known }
        index[roomID] = rooms.count
        rooms.append(Room(roomID: roomID))
        return rooms.count - 1
    }

    private mutating func add(_ i: Int, key: EventKey, hiddenFrom: [String], body: [UInt8]) {
        if !hiddenFrom.isEmpty {
            rooms[i].closeShared()
            var frame = Self.allocator.buffer(capacity: body.count + 10)
            Self.writeTextFrame(body, into: &frame)
            rooms[i].steps.append(.hidden(frame, from: hiddenFrom))
            return
        }
        switch key {
        case .removeUser(let user):
            rooms[i].closeShared()
            rooms[i].steps.append(.remove(user: user))
        case .removeEveryone:
            rooms[i].closeShared()
            rooms[i].steps.append(.remove(user: nil))
        case .onlyUser(let user):
            rooms[i].closeShared()
            var frame = Self.allocator.buffer(capacity: body.count + 10)
            Self.writeTextFrame(body, into: &frame)
            rooms[i].steps.append(.onlyTo(frame, user: user))
        case .onlyDevice(let user, let device):
            rooms[i].closeShared()
            var frame = Self.allocator.buffer(capacity: body.count + 10)
            Self.writeTextFrame(body, into: &frame)
            rooms[i].steps.append(.onlyTo(frame, user: user, device: device))
        case .except(let connection):
            rooms[i].closeShared()
            var frame = Self.allocator.buffer(capacity: body.count + 10)
            Self.writeTextFrame(body, into: &frame)
            rooms[i].steps.append(.frames(frame, excluded: connection))
        case .none, .message, .session:
            if ChatMetrics.isEnabled, case .message(let id, .created) = key, let millis = FrontendMetrics.acceptedMillis(messageID: id[...]) {
                rooms[i].acceptedMillis.append(millis)
            }
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

    /// The last `count` keys kept, oldest first (a handover's `delivered`).
    func last(_ count: Int) -> [EventKey] {
        guard order.count == capacity else { return Array(order.suffix(count)) }
        return Array((order[next...] + order[..<next]).suffix(count))
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
