#if canImport(Glibc)
import Glibc
#endif

/// The inter-process protocol of chatd, version 1: every multipart message that
/// crosses the ZeroMQ bus is built and parsed here, and nowhere else.
///
/// Commands (frontend → worker, PUSH/PULL):
///
///     [version, kind, requestID, origin, user, body, stream, deadline]
///
/// `stream` is `<seq>/<floor>` for commands to a store shard (see
/// `StreamSequencer`), empty otherwise. `deadline` is when the frontend gives
/// up on the command (CLOCK_REALTIME nanoseconds, so that a worker on another
/// host can tell; hosts keep their clocks in sync with NTP), empty for none:
/// a worker drops a command it gets after it.
///
/// Events and replies (worker → frontends, PUB/SUB):
///
///     [topic, version, kind, key, status, body]
///
/// `topic` is `room.<id>` for news every frontend with clients in that room
/// needs, `reply.<frontend-id>` for the answer to one request, `hb.<worker>`
/// for worker heartbeats (`Heartbeat`). For replies `key` is the request id; for room events
/// it is an `EventKey`: an idempotency key (`m:`, `s:`) that lets a frontend
/// drop the second copy of an event a retried command caused, `x:<frontend>/<n>`
/// naming the one connection that must not get the event (its own typing),
/// `k:<user>`/`k:*` ordering sockets closed, or empty. `body` of a room event
/// is the client-facing JSON, encoded once by the worker and forwarded as is;
/// `body` of a reply with an error status is a `ReplyError`.
public enum Wire {
    /// Version 2 (issue 11): error replies carry a `ReplyError`, and
    /// `room.open_direct` exists. A process of another version refuses every
    /// message of this one (and logs it) rather than misreading it.
    public static let version = "chat/2"
    static let versionBytes = Array(version.utf8)
}

/// What a command asks a worker to do. The prefix names the role that does it:
/// `room.*` and `message.*` go to the store shard of the room, `receipt.*`,
/// `typing.*` and `session.*` to the receipts role.
public enum CommandKind: String, Sendable, CaseIterable {
    case roomList = "room.list"
    case roomCreate = "room.create"
    case roomGet = "room.get"
    case roomUpdate = "room.update"
    case roomDelete = "room.delete"
    case roomDirect = "room.direct"
    /// `room.direct` for a WebSocket handshake: the reply body is the room's
    /// id as `Requests.RoomRef`, not the client's room JSON.
    case roomOpenDirect = "room.open_direct"
    case roomLeave = "room.leave"
    case roomJoin = "room.join"
    /// Authorises a WebSocket handshake: does the room exist, may the user enter.
    case roomEnter = "room.enter"
    /// Roles (`Requests.RoomPage`, `RoomUpdate`, `MemberRef`).
    case memberList = "member.list"
    case memberAdd = "member.add"
    case memberRole = "member.role"
    case memberRemove = "member.remove"
    case roomTransfer = "room.transfer"
    /// Pins (`Requests.MessageRef`, `RoomPage`).
    case messagePin = "message.pin"
    case messageUnpin = "message.unpin"
    case pinList = "pin.list"
    case messageList = "message.list"
    case messageGet = "message.get"
    case messageCreate = "message.create"
    case messageUpdate = "message.update"
    case messageDelete = "message.delete"
    case messageReact = "message.react"
    /// Marks every unread message of a room read (REST `mark_read` of a room).
    case receiptRoom = "receipt.room"
    /// Marks one message read (REST `mark_read` of a message, WebSocket `read_receipt`).
    case receiptMessage = "receipt.message"
    case typingSet = "typing.set"
    case typingList = "typing.list"
    case sessionOpen = "session.open"
    case sessionPing = "session.ping"
    case sessionClose = "session.close"
    case sessionActive = "session.active"
    case sessionCleanup = "session.cleanup"
    /// A frontend (re)started: sessions its predecessor in the same slot left
    /// active are over. Carries no user.
    case sessionReset = "session.reset"
    /// `users/me`: the caller's user. `user.*` go to the store shard of the caller's id.
    case userMe = "user.me"
    /// `users/?q=`: the user lookup.
    case userSearch = "user.search"
    case userBlock = "user.block"
    case userUnblock = "user.unblock"
    /// `users/blocked/`: the caller's blocked users, paginated.
    case userBlocked = "user.blocked"
    case searchMessages = "search.messages"
    case searchRooms = "search.rooms"
    /// Validates a staged upload and stores it content-addressed.
    case fileStore = "file.store"
    /// May this user download this message's attachment; where is it.
    case fileOpen = "file.open"
    /// A piece of an upload for the files worker's staging file
    /// (`attachments: bus`; `FileChunk`, raw bytes after a header).
    case fileChunk = "file.chunk"
    /// A piece of a stored blob; the reply's body is its bytes (`FileRead`).
    case fileRead = "file.read"
    /// Mutes a room for the caller (issue 16), at the room's shard.
    case roomMute = "room.mute"
    case roomUnmute = "room.unmute"
    /// Sets the caller's notification level for a room.
    case roomNotifications = "room.notifications"
    /// The caller's mentions feed, at the caller's shard like `room.list`
    /// (every store shard reads the one database).
    case mentionList = "mention.list"
    // Issue 16's webhooks: kept by the room's store shard, which writes the
    // outbox in the transaction of each event (the webhooks role only sends).
    case webhookCreate = "webhook.create"
    case webhookList = "webhook.list"
    case webhookDelete = "webhook.delete"
    case webhookFailures = "webhook.failures"
    case webhookIncomingCreate = "webhook.incoming_create"
    /// A message posted to an incoming webhook's secret URL: carries no user.
    case webhookIncomingPost = "webhook.incoming_post"
    // Issue 17's calls: every change at the call's room's shard, which
    // publishes its room events (so they keep the room's order and gap
    // recovery); the frontend learns a call's room first (`call.get`, at
    // any shard: every one reads the one database).
    case callStart = "call.start"
    case callAction = "call.action"
    case callGet = "call.get"
    case callList = "call.list"
    /// A WebSocket `call_signal`, at the socket's room's shard: checked and
    /// published to the addressee's sockets only (`EventKey.onlyUser`).
    case callSignal = "call.signal"
    /// Ringing calls past their time (a read at any shard), and `call.expire`
    /// for each at its room's shard: a frontend's sweep, carrying no user.
    case callDue = "call.due"
    case callExpire = "call.expire"
    // Issue 17's device key directory: at the shard of the device's owner
    // (publish, delete) or of the user whose keys are claimed, so that one
    // user's claims queue on one shard.
    case keysPublish = "keys.publish"
    case keysClaim = "keys.claim"
    case keysDelete = "keys.delete"

    /// Sent by the server itself, with no user: the worker provisions and checks nobody.
    public var hasNoCaller: Bool {
        self == .webhookIncomingPost || self == .callDue || self == .callExpire
    }

    /// The worker role that handles this kind.
    public var role: Role {
        switch self {
        case .receiptRoom, .receiptMessage, .typingSet, .typingList, .sessionOpen, .sessionPing, .sessionClose, .sessionReset,
            .sessionActive, .sessionCleanup:
            .receipts
        case .searchMessages, .searchRooms:
            .search
        case .fileStore, .fileOpen, .fileChunk, .fileRead:
            .files
        default:
            .store
        }
    }
}

/// Worker roles.
public enum Role: String, Sendable, CaseIterable {
    case store, receipts, search, files
    /// Sends the outbox's deliveries; takes no commands (issue 16).
    case webhooks

    /// Whether the role has a command queue. Webhooks has none: its work
    /// comes from the database's outbox, and TCP ports stay as they were.
    public var hasQueue: Bool { self != .webhooks }
}

/// The outcome of a command, as it crosses the bus. Only the frontend maps
/// these to HTTP statuses and WebSocket close codes.
public enum Status: String, Sendable, CaseIterable {
    case ok, created
    case noContent = "no_content"
    case badRequest = "bad_request"
    case forbidden
    case notFound = "not_found"
    case unavailable
    case `internal`
}

/// Why a bus message could not be decoded.
public enum WireError: Error, Equatable, Sendable {
    case frameCount(Int)
    case version(String)
    case unknownKind(String)
    case unknownStatus(String)
    case emptyField(String)
    /// A frame that does not parse (a reply error's body).
    case malformed(String)
}

/// A request from a frontend to a worker role.
public struct Command: Sendable, Equatable {
    public var kind: CommandKind
    /// Unique per frontend process; a resend reuses it.
    public var requestID: String
    /// The id of the frontend that wants the reply (`reply.<origin>`).
    public var origin: String
    /// The authenticated user as JSON (see `Identity`), empty for system commands.
    public var user: [UInt8]
    public var body: [UInt8]
    /// Position in the frontend's stream to a store shard, and the lowest
    /// position it still awaits a reply for.
    public var stream: (seq: UInt64, floor: UInt64)?
    /// CLOCK_REALTIME nanoseconds after which the frontend no longer waits.
    public var deadline: UInt64?

    public init(kind: CommandKind, requestID: String, origin: String, user: [UInt8], body: [UInt8], stream: (seq: UInt64, floor: UInt64)? = nil) {
        self.kind = kind
        self.requestID = requestID
        self.origin = origin
        self.user = user
        self.body = body
        self.stream = stream
    }

    public static func == (a: Command, b: Command) -> Bool {
        a.kind == b.kind && a.requestID == b.requestID && a.origin == b.origin && a.user == b.user && a.body == b.body
            && a.stream?.seq == b.stream?.seq && a.stream?.floor == b.stream?.floor && a.deadline == b.deadline
    }

    public func encode() -> [[UInt8]] {
        let position = stream.map { Array("\($0.seq)/\($0.floor)".utf8) } ?? []
        return [Wire.versionBytes, Array(kind.rawValue.utf8), Array(requestID.utf8), Array(origin.utf8), user, body, position,
                deadline.map { Array(String($0).utf8) } ?? []]
    }

    public init(frames: [[UInt8]]) throws(WireError) {
        guard frames.count == 8 else { throw .frameCount(frames.count) }
        guard frames[0] == Wire.versionBytes else { throw .version(String(decoding: frames[0], as: UTF8.self)) }
        let kindName = String(decoding: frames[1], as: UTF8.self)
        guard let kind = CommandKind(rawValue: kindName) else { throw .unknownKind(kindName) }
        guard !frames[2].isEmpty else { throw .emptyField("requestID") }
        guard !frames[3].isEmpty else { throw .emptyField("origin") }
        self.kind = kind
        self.requestID = String(decoding: frames[2], as: UTF8.self)
        self.origin = String(decoding: frames[3], as: UTF8.self)
        self.user = frames[4]
        self.body = frames[5]
        if !frames[6].isEmpty {
            let parts = String(decoding: frames[6], as: UTF8.self).split(separator: "/")
            guard parts.count == 2, let seq = UInt64(parts[0]), let floor = UInt64(parts[1]), floor <= seq else {
                throw .emptyField("stream")
            }
            self.stream = (seq, floor)
        }
        if !frames[7].isEmpty {
            guard let deadline = UInt64(String(decoding: frames[7], as: UTF8.self)) else { throw .emptyField("deadline") }
            self.deadline = deadline
        }
    }
}

/// Topic names of the PUB/SUB side.
public enum Topic {
    public static let roomPrefix = "room."
    public static let replyPrefix = "reply."
    public static let heartbeatPrefix = "hb."
    /// The store shard count frontends spread commands over (body: the count),
    /// repeated by the supervisor's broker.
    public static let storeShards = "ctl.shards"
    /// "The database has news": one frame (the topic), published by a store
    /// worker after a batch that wrote; the search worker wakes on it and
    /// reads the database. Frontends do not subscribe.
    public static let searchNudge = "nudge.search"
    /// `sync.<frontend-id>.<n>`: a frontend subscribes to it after room
    /// subscriptions and the broker answers on it (`SubscriptionSync`).
    public static let syncPrefix = "sync."
    /// Every process's metrics in Prometheus text format, merged by the
    /// supervisor and repeated by its broker every 5 s (`MetricsReport`).
    public static let metrics = "ctl.metrics"

    public static func room(_ id: String) -> String { roomPrefix + id }
    public static func reply(_ frontendID: String) -> String { replyPrefix + frontendID }
    public static func heartbeat(_ role: String) -> String { heartbeatPrefix + role }
}

/// Kinds of published events.
public enum EventKind: String, Sendable {
    /// The answer to one command.
    case reply
    /// A client-facing WebSocket event for a room (body = the JSON frame).
    case roomEvent = "room.event"
    /// A worker is alive (`Heartbeat`).
    case heartbeat
    /// The store shard count (`ShardCount`), from the supervisor.
    case storeShards = "store.shards"
    /// Every process's metrics (`MetricsReport`), from the supervisor.
    case metrics
    /// The broker's answer to a sync request (`SubscriptionSync`): the
    /// frontend's earlier subscriptions are in force.
    case synced
    /// A host's status for `ctl status` (`HostStatus`), from its supervisor.
    case hostStatus = "host.status"
}

/// A message published by a worker.
public struct Event: Sendable, Equatable {
    public var topic: String
    public var kind: EventKind
    public var key: String
    public var status: Status
    public var body: [UInt8]

    public init(topic: String, kind: EventKind, key: String, status: Status = .ok, body: [UInt8]) {
        self.topic = topic
        self.kind = kind
        self.key = key
        self.status = status
        self.body = body
    }

    public static func reply(to command: Command, status: Status, body: [UInt8]) -> Event {
        Event(topic: Topic.reply(command.origin), kind: .reply, key: command.requestID, status: status, body: body)
    }

    public func encode() -> [[UInt8]] {
        [Array(topic.utf8), Wire.versionBytes, Array(kind.rawValue.utf8), Array(key.utf8), Array(status.rawValue.utf8), body]
    }

    public init(frames: [[UInt8]]) throws(WireError) {
        guard frames.count == 6 else { throw .frameCount(frames.count) }
        guard frames[1] == Wire.versionBytes else { throw .version(String(decoding: frames[1], as: UTF8.self)) }
        let kindName = String(decoding: frames[2], as: UTF8.self)
        guard let kind = EventKind(rawValue: kindName) else { throw .unknownKind(kindName) }
        let statusName = String(decoding: frames[4], as: UTF8.self)
        guard let status = Status(rawValue: statusName) else { throw .unknownStatus(statusName) }
        self.topic = String(decoding: frames[0], as: UTF8.self)
        self.kind = kind
        self.key = String(decoding: frames[3], as: UTF8.self)
        self.status = status
        self.body = frames[5]
    }
}

/// Routing: which store shard owns a room. FNV-1a over the id's bytes, so every
/// process computes the same shard without coordination.
public enum Shard {
    public static func of(_ key: String, count: Int) -> Int {
        precondition(count > 0)
        return Int(FNV1a.hash(key.utf8) % UInt64(count))
    }
}

/// Bus endpoint names, shared by the broker (which binds) and its peers (which connect).
public enum Endpoints {
    /// A command queue: `store-<n>` for a store shard, `receipts` for the receipts role.
    public static func queue(_ role: Role, shard: Int = 0) -> String {
        role == .store ? "store-\(shard)" : role.rawValue
    }
}

/// Where the bus's endpoints are. The broker binds them, everyone else
/// connects, with the same code either way.
public enum BusAddress: Sendable, Equatable {
    /// One host: ipc files in the runtime directory.
    case ipc(directory: String)
    /// Several hosts: TCP ports from `basePort` on the broker's host.
    /// `basePort` is events in, +1 events out, then an in and an out port per
    /// queue: receipts, search, files, store-0, store-1 ... (store shards
    /// last, so that adding one adds ports without moving the others).
    case tcp(host: String, basePort: Int)
    /// One process: `inproc://<name>.<endpoint>` endpoints, for a broker,
    /// workers and a frontend that share one ZeroMQ context (in-process tests).
    case inproc(name: String)

    /// Frontends PUSH a queue's commands here.
    public func queueIn(_ queue: String) -> String { endpoint(queue + ".in", port: Self.queueIndex(queue).map { 2 + 2 * $0 }) }
    /// The queue's workers PULL from here (round robin when there are several).
    public func queueOut(_ queue: String) -> String { endpoint(queue + ".out", port: Self.queueIndex(queue).map { 3 + 2 * $0 }) }
    /// Workers PUB events into the broker here.
    public var eventsIn: String { endpoint("events.in", port: 0) }
    /// Frontends SUB to events here.
    public var eventsOut: String { endpoint("events.out", port: 1) }

    private func endpoint(_ file: String, port offset: Int?) -> String {
        switch self {
        case .ipc(let directory): "ipc://\(directory)/\(file)"
        case .inproc(let name): "inproc://\(name).\(file)"
        // An unknown queue name has no port; ZeroMQ refuses the endpoint.
        case .tcp(let host, let base): "tcp://\(host):\(offset.map { String(base + $0) } ?? "invalid")"
        }
    }

    static func queueIndex(_ queue: String) -> Int? {
        if let index = [Role.receipts, .search, .files].firstIndex(where: { Endpoints.queue($0) == queue }) { return index }
        guard queue.hasPrefix("store-"), let shard = Int(queue.dropFirst(6)), shard >= 0 else { return nil }
        return 3 + shard
    }
}

/// Wall-clock nanoseconds: what command deadlines are written in.
public func wallClockNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
