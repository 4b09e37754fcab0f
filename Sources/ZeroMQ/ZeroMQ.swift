import CZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// A libzmq failure, carrying the `errno` libzmq reported.
public struct ZMQError: Error, CustomStringConvertible, Equatable, Sendable {
    public let code: Int32
    public let operation: String

    init(_ operation: String, code: Int32 = zmq_errno()) {
        self.operation = operation
        self.code = code
    }

    public var description: String {
        "\(operation): \(String(cString: zmq_strerror(code))) (errno \(code))"
    }

    /// The call would block (a non-blocking send or receive found nothing to do).
    public var isAgain: Bool { code == EAGAIN }
    /// The context was terminated while the socket was in use.
    public var isTerminated: Bool { code == ETERM }
}

/// A ZeroMQ context: owns the I/O threads. One per process.
///
/// `zmq_ctx_*` functions are thread-safe, so the context is `Sendable`; sockets are not.
public final class Context: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    public init(ioThreads: Int32 = 1) throws {
        guard let handle = zmq_ctx_new() else { throw ZMQError("zmq_ctx_new") }
        self.handle = handle
        zmq_ctx_set(handle, ZMQ_IO_THREADS, ioThreads)
        // Every socket we open sets its own linger; this only guards against a
        // forgotten one blocking process exit.
        zmq_ctx_set(handle, ZMQ_BLOCKY, 0)
    }

    /// Terminates the context: blocked calls on its sockets return `ETERM`.
    /// Sockets must still be closed; `zmq_ctx_term` waits for them, so it runs in `deinit`.
    public func shutdown() {
        zmq_ctx_shutdown(handle)
    }

    deinit {
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }
}

/// Socket types used by chatd.
public enum SocketType: Int32, Sendable {
    case pair = 0, pub = 1, sub = 2, req = 3, rep = 4, dealer = 5, router = 6
    case pull = 7, push = 8, xpub = 9, xsub = 10
}

/// One ZeroMQ socket. Not thread-safe: a socket is created, used and closed on
/// one thread (the process's bus thread). Closing sets linger first so a close
/// never waits for an unreachable peer.
public final class Socket {
    public private(set) var handle: UnsafeMutableRawPointer?
    public let type: SocketType
    private let context: Context
    /// How long unsent messages may hold the socket open at close.
    public var lingerMilliseconds: Int32 = 0

    public init(context: Context, type: SocketType) throws {
        guard let handle = zmq_socket(context.handle, type.rawValue) else {
            throw ZMQError("zmq_socket")
        }
        self.handle = handle
        self.type = type
        self.context = context
        try setOption(ZMQ_LINGER, Int32(0))
    }

    deinit { close() }

    /// Closes the socket (idempotent).
    public func close() {
        guard let handle else { return }
        var linger = lingerMilliseconds
        zmq_setsockopt(handle, ZMQ_LINGER, &linger, MemoryLayout<Int32>.size)
        zmq_close(handle)
        self.handle = nil
    }

    fileprivate func live(_ op: String) throws -> UnsafeMutableRawPointer {
        guard let handle else { throw ZMQError(op, code: ENOTSOCK) }
        return handle
    }

    public func bind(_ endpoint: String) throws {
        if zmq_bind(try live("zmq_bind"), endpoint) != 0 { throw ZMQError("zmq_bind \(endpoint)") }
    }

    public func connect(_ endpoint: String) throws {
        if zmq_connect(try live("zmq_connect"), endpoint) != 0 { throw ZMQError("zmq_connect \(endpoint)") }
    }

    /// Connection events of this socket (`zmq_socket_monitor`), delivered to
    /// a PAIR socket this returns, connected to `inproc://<name>`. Read them
    /// with `MonitorEvent(frames:)`.
    public func monitor(name: String, events: Int32) throws -> Socket {
        let endpoint = "inproc://" + name
        if zmq_socket_monitor(try live("zmq_socket_monitor"), endpoint, events) != 0 { throw ZMQError("zmq_socket_monitor") }
        let pair = try Socket(context: context, type: .pair)
        try pair.connect(endpoint)
        return pair
    }

    // MARK: Options

    public func setOption(_ option: Int32, _ value: Int32) throws {
        var value = value
        if zmq_setsockopt(try live("zmq_setsockopt"), option, &value, MemoryLayout<Int32>.size) != 0 {
            throw ZMQError("zmq_setsockopt \(option)")
        }
    }

    /// Largest frame this socket takes in (`ZMQ_MAXMSGSIZE`, an int64):
    /// a peer that sends a bigger one is disconnected, its frame never read.
    public func setMaxMessageSize(bytes: Int64) throws {
        var value = bytes
        if zmq_setsockopt(try live("zmq_setsockopt"), ZMQ_MAXMSGSIZE, &value, MemoryLayout<Int64>.size) != 0 {
            throw ZMQError("zmq_setsockopt ZMQ_MAXMSGSIZE")
        }
    }

    public func setOption(_ option: Int32, bytes: [UInt8]) throws {
        let handle = try live("zmq_setsockopt")
        let rc = bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        if rc != 0 { throw ZMQError("zmq_setsockopt \(option)") }
    }

    public func getInt32(_ option: Int32) throws -> Int32 {
        var value: Int32 = 0
        var size = MemoryLayout<Int32>.size
        if zmq_getsockopt(try live("zmq_getsockopt"), option, &value, &size) != 0 {
            throw ZMQError("zmq_getsockopt \(option)")
        }
        return value
    }

    /// The endpoint the last `bind` or `connect` used, with the port the
    /// system chose for `tcp://host:*` (`ZMQ_LAST_ENDPOINT`).
    public var lastEndpoint: String? {
        var buffer = [CChar](repeating: 0, count: 256)
        var size = buffer.count
        guard let handle, zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size) == 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Subscribes a SUB socket to a topic prefix (empty: everything).
    public func subscribe(_ prefix: String) throws {
        try setOption(ZMQ_SUBSCRIBE, bytes: Array(prefix.utf8))
    }

    public func unsubscribe(_ prefix: String) throws {
        try setOption(ZMQ_UNSUBSCRIBE, bytes: Array(prefix.utf8))
    }

    /// Send and receive high-water marks, in messages (0 = unbounded). Set
    /// before `bind`/`connect`: they apply to pipes created after.
    public func setHighWaterMarks(send: Int32, receive: Int32) throws {
        try setOption(ZMQ_SNDHWM, send)
        try setOption(ZMQ_RCVHWM, receive)
    }

    /// Keep only the newest message waiting (`ZMQ_CONFLATE`): for wake-ups,
    /// where a second one says nothing the first did not. Single-frame
    /// messages only; set before `connect`.
    public func setConflate() throws {
        try setOption(ZMQ_CONFLATE, Int32(1))
    }

    /// Reconnect interval: restarted peers are reached again within this many ms.
    public func setReconnectInterval(milliseconds: Int32) throws {
        try setOption(ZMQ_RECONNECT_IVL, milliseconds)
    }

    /// Longest reconnect interval (`ZMQ_RECONNECT_IVL_MAX`): past the first
    /// failed attempt the interval doubles up to this, instead of retrying
    /// every `setReconnectInterval` forever. Set before `connect`.
    public func setReconnectIntervalMax(milliseconds: Int32) throws {
        try setOption(ZMQ_RECONNECT_IVL_MAX, milliseconds)
    }

    /// Whether more frames of the current multipart message are waiting.
    public var hasMore: Bool { ((try? getInt32(ZMQ_RCVMORE)) ?? 0) != 0 }

    /// Events ready now (`ZMQ_POLLIN`/`ZMQ_POLLOUT` bits).
    public var events: Int32 { (try? getInt32(ZMQ_EVENTS)) ?? 0 }

    // MARK: Send and receive

    /// Sends one multipart message. Returns false when `dontWait` is set and
    /// the message could not be queued (high-water mark or no peer).
    @discardableResult
    public func send(_ frames: [[UInt8]], dontWait: Bool = false) throws -> Bool {
        let handle = try live("zmq_send")
        precondition(!frames.isEmpty, "a ZeroMQ message has at least one frame")
        for (index, frame) in frames.enumerated() {
            var flags: Int32 = dontWait ? ZMQ_DONTWAIT : 0
            if index < frames.count - 1 { flags |= ZMQ_SNDMORE }
            while true {
                let rc = frame.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
                if rc >= 0 { break }
                let err = zmq_errno()
                if err == EINTR { continue }
                // Only the first frame can fail with EAGAIN: once a part is
                // queued, the rest of the message is always accepted.
                if err == EAGAIN && index == 0 { return false }
                throw ZMQError("zmq_send", code: err)
            }
        }
        return true
    }

    /// Moves one whole multipart message from this socket to `destination`
    /// frame by frame as `zmq_msg_t`s, so the payloads are handed over, not
    /// copied (a successful `zmq_msg_send` takes the frame's content). Returns
    /// false when nothing is waiting. `destination` must be able to take the
    /// message (XPUB drops at its high-water mark; a PUSH is checked for
    /// `ZMQ_POLLOUT` first), because a received message cannot be put back.
    @discardableResult
    ///
    /// With `dropped` given, the send never blocks: a message the destination
    /// cannot take at once (no peer, or its pipe full) is dropped whole and
    /// counted, for a caller whose senders resend what is not answered.
    public func forward(to destination: Socket, dropped: UnsafeMutablePointer<Int>? = nil) throws -> Bool {
        let source = try live("zmq_msg_recv")
        let target = try destination.live("zmq_msg_send")
        var msg = zmq_msg_t()
        zmq_msg_init(&msg)
        defer { zmq_msg_close(&msg) }
        var first = true
        var discarding = false
        while true {
            // Only the first frame may be absent: the rest of a multipart
            // message arrives with it (ZeroMQ delivers messages atomically).
            let rc = zmq_msg_recv(&msg, source, first ? ZMQ_DONTWAIT : 0)
            if rc < 0 {
                let err = zmq_errno()
                if err == EINTR { continue }
                if err == EAGAIN && first { return false }
                throw ZMQError("zmq_msg_recv", code: err)
            }
            let more = zmq_msg_more(&msg) != 0
            if discarding {
                if !more { return true }
                continue
            }
            // Only the first frame can be refused: once it is queued, ZeroMQ
            // takes the rest of the message with it.
            let noWait = first && dropped != nil
            first = false
            while zmq_msg_send(&msg, target, (more ? ZMQ_SNDMORE : 0) | (noWait ? ZMQ_DONTWAIT : 0)) < 0 {
                let err = zmq_errno()
                if err == EINTR { continue }
                if err == EAGAIN && noWait {
                    dropped?.pointee += 1
                    discarding = true
                    break
                }
                throw ZMQError("zmq_msg_send", code: err)
            }
            if discarding && !more { return true }
            if !more { return true }
        }
    }

    /// Receives one whole multipart message, or nil when `dontWait` is set and
    /// nothing is waiting.
    public func receive(dontWait: Bool = false) throws -> [[UInt8]]? {
        let handle = try live("zmq_msg_recv")
        var frames: [[UInt8]] = []
        var msg = zmq_msg_t()
        zmq_msg_init(&msg)
        defer { zmq_msg_close(&msg) }
        while true {
            let flags: Int32 = (dontWait && frames.isEmpty) ? ZMQ_DONTWAIT : 0
            let rc = zmq_msg_recv(&msg, handle, flags)
            if rc < 0 {
                let err = zmq_errno()
                if err == EINTR { continue }
                if err == EAGAIN && frames.isEmpty { return nil }
                throw ZMQError("zmq_msg_recv", code: err)
            }
            let size = zmq_msg_size(&msg)
            if size == 0 {
                frames.append([])
            } else {
                let data = zmq_msg_data(&msg)!.assumingMemoryBound(to: UInt8.self)
                frames.append(Array(UnsafeBufferPointer(start: data, count: size)))
            }
            if zmq_msg_more(&msg) == 0 { return frames }
        }
    }
}

/// One entry of a poll set: a ZeroMQ socket or a plain file descriptor.
public enum PollTarget {
    case socket(Socket)
    case fd(Int32)
}

/// `zmq_poll` over sockets and file descriptors.
public struct Poller {
    private var targets: [PollTarget] = []
    private var events: [Int16] = []

    public init() {}

    /// Adds a target; returns its index in `poll`'s result.
    @discardableResult
    public mutating func add(_ target: PollTarget, events: Int16 = Int16(ZMQ_POLLIN)) -> Int {
        targets.append(target)
        self.events.append(events)
        return targets.count - 1
    }

    /// Waits until a target is ready or `timeoutMilliseconds` pass (-1: forever).
    /// Returns the ready events of each target, by index.
    public func poll(timeoutMilliseconds: Int) throws -> [Int16] {
        var items = [zmq_pollitem_t]()
        items.reserveCapacity(targets.count)
        for (index, target) in targets.enumerated() {
            switch target {
            case .socket(let socket):
                items.append(zmq_pollitem_t(socket: socket.handle, fd: -1, events: events[index], revents: 0))
            case .fd(let fd):
                items.append(zmq_pollitem_t(socket: nil, fd: fd, events: events[index], revents: 0))
            }
        }
        while true {
            let rc = zmq_poll(&items, Int32(items.count), timeoutMilliseconds)
            if rc >= 0 { return items.map(\.revents) }
            let err = zmq_errno()
            if err == EINTR { continue }
            throw ZMQError("zmq_poll", code: err)
        }
    }
}

public let pollIn = Int16(ZMQ_POLLIN)
public let pollOut = Int16(ZMQ_POLLOUT)

/// A counter file descriptor that wakes a poll loop from another thread.
public final class Wakeup: @unchecked Sendable {
    public let fd: Int32

    public init() throws {
        fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        if fd < 0 { throw ZMQError("eventfd", code: errno) }
    }

    deinit { Glibc.close(fd) }

    /// Makes the fd readable (thread-safe).
    public func signal() {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    /// Resets the counter; call after a poll reported the fd readable.
    public func drain() {
        var value: UInt64 = 0
        _ = read(fd, &value, 8)
    }
}

/// One event from a socket monitor: the first frame holds the event (16 bits)
/// and a value (32 bits) in native byte order (little-endian wherever chatd
/// runs); the second, the peer's address.
public struct MonitorEvent: Sendable, Equatable {
    public static let connected = Int32(ZMQ_EVENT_CONNECTED)
    public static let disconnected = Int32(ZMQ_EVENT_DISCONNECTED)
    public static let handshakeSucceeded = Int32(ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
    /// The peer's handshake was not ZMTP, or its CURVE boxes did not open
    /// (a client that has the wrong server key).
    public static let handshakeFailedProtocol = Int32(ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
    /// The ZAP handler refused (the value is its status code, 400).
    public static let handshakeFailedAuth = Int32(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
    /// The handshake failed without a reason libzmq names (the peer closed
    /// the connection during it: a server that refused this client).
    public static let handshakeFailedNoDetail = Int32(ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    /// Every way a handshake fails.
    public static let handshakeFailed = handshakeFailedProtocol | handshakeFailedAuth | handshakeFailedNoDetail

    public var event: Int32
    /// The event's value: an errno, a ZAP status code, a protocol error.
    public var value: UInt32
    public var address: String

    public init?(frames: [[UInt8]]) {
        guard frames.count == 2, frames[0].count >= 6 else { return nil }
        event = Int32(UInt16(frames[0][0]) | UInt16(frames[0][1]) << 8)
        value = (2..<6).reduce(UInt32(0)) { $0 | UInt32(frames[0][$1]) << (8 * UInt32($1 - 2)) }
        address = String(decoding: frames[1], as: UTF8.self)
    }
}
