import ChatBus
import ChatWire
import Foundation
import Logging
import NIOCore
import NIOWebSocket
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The old frontend's side of a handover, carried out: it listens on
/// `<runtime>/handover.<pid>.sock` from its start; the process the supervisor
/// starts to replace it connects there, and this one offers it every open
/// WebSocket (`HandoverSender` decides what happens when). Its queue owns
/// the machine; the connections are touched only on their loops.
final class HandoverSource: @unchecked Sendable {
    struct Socket: Sendable {
        let number: UInt64
        let room: String
        let connection: NIOLoopBound<WebSocketConnection>
        let local: SocketAddress?
        let remote: SocketAddress?
        /// Its descriptor (found by its addresses at the offer).
        var descriptor: CInt?
    }

    let services: FrontendServices
    let logger: Logger
    /// The server's listening channel: it stops accepting during a handover.
    let server = Mutex<(any Channel)?>(nil)
    // Everything below is touched only on `queue`.
    private let queue = DispatchQueue(label: "chatd.handover.source")
    private var machine: HandoverSender<UInt64>?
    private var peer: HandoverSocket?
    private var sockets: [UInt64: Socket] = [:]
    /// Each stopped socket's log, until it is handed over.
    private var logs: [UInt64: (written: [UInt64], truncated: Bool)] = [:]
    private var peerGone = false
    private var startedAt: UInt64 = 0

    /// 32 sockets in flight: a socket's pause is about the window times one
    /// socket's trip through both processes, while the pipeline stays full
    /// (chatd-load --handover 1000, debug build: window 512, pause median
    /// 257 ms; window 32, 14 ms, and the whole handover no slower).
    static let timing = HandoverSender<UInt64>.Timing(readyTimeout: 10_000_000_000, drainBound: 2_000_000_000, window: 32)

    init(services: FrontendServices, logger: Logger) {
        self.services = services
        self.logger = logger
    }

    /// Where the process `pid`'s handover socket is.
    static func path(runtimeDir: String, pid: Int32) -> String {
        HandoverReport.socketPath(runtimeDir: runtimeDir, pid: pid)
    }

    /// Listens at `path` on a thread of its own; one handover at a time.
    func listen(at path: String) throws {
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HandoverSocket.Failure(call: "socket", errno: errno) }
        guard Self.bind(fd, path), Glibc.listen(fd, 4) == 0 else {
            let failure = HandoverSocket.Failure(call: "bind", errno: errno)
            close(fd)
            throw failure
        }
        Thread.detachNewThread { [self] in
            while true {
                let peer = accept(fd, nil, nil)
                guard peer >= 0 else {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return
                }
                // Close-on-exec like every descriptor of ours: none should outlive an exec.
                _ = fcntl(peer, F_SETFD, FD_CLOEXEC)
                queue.async { self.begin(HandoverSocket(fd: peer)) }
            }
        }
    }

    static func bind(_ fd: CInt, _ path: String) -> Bool {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes + [0]) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
    }

    // MARK: The sequence

    private func begin(_ socket: HandoverSocket) {
        guard machine == nil || machine?.state == .serving else { return }  // one at a time; this one is closed
        logger.info("handover: a new frontend asks for the WebSockets")
        peer = socket
        peerGone = false
        startedAt = monotonicNanos()
        machine = HandoverSender(timing: Self.timing)
        services.life.beginHandover()
        pauseAccepting(true)
        // From now on each room's events are logged: before the offer, so
        // before the new process subscribes.
        services.connections.setHandoverMode(.log)
        let registries = Array(services.connections.registries.values)
        let lists = registries.map { registry in
            registry.loop.submit {
                registry.connections.map { connection in
                    let (local, remote) = connection.addresses
                    return Socket(
                        number: connection.key.number, room: connection.roomID, connection: NIOLoopBound(connection, eventLoop: registry.loop),
                        local: local, remote: remote
                    )
                }
            }
        }
        EventLoopFuture.whenAllSucceed(lists, on: registries[0].loop).whenComplete { result in
            self.queue.async { self.offer((try? result.get())?.flatMap { $0 } ?? []) }
        }
        Thread.detachNewThread { [self] in read(from: socket) }
    }

    private func offer(_ open: [Socket]) {
        let descriptors = HandoverDescriptors.scan()
        sockets = Dictionary(open.map { socket in
            var socket = socket
            if let local = socket.local, let remote = socket.remote { socket.descriptor = descriptors[HandoverDescriptors.key(local: local, remote: remote)] }
            return (socket.number, socket)
        }, uniquingKeysWith: { first, _ in first })
        let rooms = Array(Set(open.map(\.room))).sorted()
        perform(machine?.start(sockets: open.map { ($0.number, pending: 0) }, rooms: rooms, now: monotonicNanos()) ?? [])
    }

    /// The new process's packets, on this thread until its end closes.
    private func read(from socket: HandoverSocket) {
        while true {
            do {
                guard let packet = try socket.receive(timeoutMillis: -1) else { continue }
                if let fd = packet.descriptor { close(fd) }
                let message = try? HandoverMessage(bytes: packet.bytes)
                let deliver: @Sendable () -> Void = { [self] in
                    queue.async { [self] in
                        guard peer === socket else { return }
                        update { machine in message.map { machine.received($0, now: monotonicNanos()) } ?? machine.peerGone(now: monotonicNanos()) }
                    }
                }
                // `ready` says where the new process's buffers begin; this
                // process's sockets stop only once it has caught up to there,
                // and once the new one knows what it delivered.
                if message == .ready { catchUp { self.sendDelivered(then: deliver) } } else { deliver() }
                if message == nil { return }
            } catch {
                queue.async { [self] in
                    guard peer === socket else { return }
                    peerGone = true
                    perform(machine?.peerGone(now: monotonicNanos()) ?? [])
                }
                return
            }
        }
    }

    /// Calls `then` once every room event the broker forwarded before the
    /// new process's `ready` has reached this process's event loops. This
    /// process may lag behind the broker; a socket stopped before it caught
    /// up would miss what lies between where it stopped and where the new
    /// process's buffer begins. A subscription sync requested now is
    /// answered after all of it (the broker is one thread and the pipe
    /// FIFO): a room nobody publishes to is subscribed for that. A second
    /// hold on it, answered at once but on a later turn of the bus thread,
    /// comes after that turn's events were handed to the loops, so the
    /// stops dispatched from here run after them.
    private func catchUp(then: @escaping @Sendable () -> Void) {
        let bus = services.bus
        let barrier = "handover-barrier-" + bus.frontendID
        bus.subscribe(room: barrier) { first in
            bus.subscribe(room: barrier) { second in
                if case .success = first { bus.unsubscribe(room: barrier) }
                if case .success = second { bus.unsubscribe(room: barrier) }
                then()
            }
        }
    }

    /// Most keys sent in `delivered`: several seconds of messages at full
    /// load, the window in which a worker's resend re-publishes; well within a packet.
    static let deliveredKeys = 2_048

    /// Sends the idempotency keys this process has delivered (a copy
    /// re-published by a worker's resend must not reach a moved socket
    /// twice). Each one's batch is queued on every loop already, ahead of
    /// the stops dispatched after this.
    private func sendDelivered(then: @escaping @Sendable () -> Void) {
        let keys = services.connections.recentlyDelivered(Self.deliveredKeys).map(\.description)
        queue.async {
            _ = try? self.peer?.send(HandoverMessage.delivered(keys: keys).encode())
            then()
        }
    }

    private func tick() {
        guard let actions = machine?.tick(now: monotonicNanos()) else { return }
        perform(actions)
    }

    private func perform(_ actions: [HandoverSender<UInt64>.Action]) {
        for action in actions {
            switch action {
            case .send(let message):
                if (try? peer?.send(message.encode())) == nil { logger.warning("handover: the new frontend did not take \(message)") }
            case .stopReading(let number): stop(number)
            case .handOver(let number): handOver(number)
            case .closeForRestart(let number):
                guard let socket = sockets.removeValue(forKey: number) else { continue }
                socket.connection.eventLoop.execute { socket.connection.value.closeForRestart() }
            case .resumeServing(let reason):
                logger.warning("handover off, serving on", metadata: ["reason": "\(reason)"])
                end(resume: true)
            case .finished(let moved, let closed):
                let millis = (monotonicNanos() - startedAt) / 1_000_000
                logger.info("handover finished", metadata: ["moved": "\(moved)", "closed": "\(closed)", "ms": "\(millis)"])
                // Moved: the supervisor stops this process now. Its peer died
                // midway: it serves on, and the supervisor restarts it.
                end(resume: peerGone)
            }
        }
        if let wake = machine?.nextWakeup {
            let delay = Double(wake > monotonicNanos() ? wake - monotonicNanos() : 0) / 1e9
            queue.asyncAfter(deadline: .now() + delay) { [weak self] in self?.tick() }
        }
    }

    private func end(resume: Bool) {
        services.connections.setHandoverMode([])
        peer = nil
        guard resume else { return }
        services.life.endHandover()
        pauseAccepting(false)
    }

    private func pauseAccepting(_ paused: Bool) {
        guard let server = server.withLock({ $0 }) else { return }
        server.setOption(ChannelOptions.autoRead, value: !paused).whenComplete { _ in }
    }

    /// Stops one socket; its commands' replies are reported while it waits.
    private func stop(_ number: UInt64) {
        guard let socket = sockets[number] else { return }
        let connection = socket.connection
        connection.eventLoop.execute { [self] in
            // Counts are read when the queue gets to them: the latest is the truth.
            let commands = connection.value.commands
            commands.watch.withLock { watch in
                watch = { [self] in queue.async { self.update { $0.replied(number, pending: commands.pending, now: monotonicNanos()) } } }
            }
            connection.value.stopForHandover { result in
                self.queue.async {
                    switch result {
                    case .stopped(let written, let truncated, _):
                        self.logs[number] = (written, truncated)
                        self.update { $0.stopped(number, pending: commands.pending, now: monotonicNanos()) }
                    case .gone:
                        self.sockets[number] = nil
                        self.update { $0.gone(number, now: monotonicNanos()) }
                    }
                }
            }
        }
    }

    private func update(_ change: (inout HandoverSender<UInt64>) -> [HandoverSender<UInt64>.Action]) {
        // Changed in place: a copy taken out and put back would copy every
        // socket's entry on each event (copy-on-write: O(sockets) per event).
        guard machine != nil else { return }
        perform(change(&machine!))
    }

    /// Sends one socket's state and descriptor from its own loop (see
    /// `WebSocketConnection.handOver`); it is closed there once sent.
    private func handOver(_ number: UInt64) {
        guard let socket = sockets[number] else { return }
        let connection = socket.connection
        let log = logs.removeValue(forKey: number) ?? ([], false)
        let (peer, logger) = (self.peer, self.logger)
        connection.eventLoop.execute { [self] in
            connection.value.handOver({ state in
                guard let peer, let fd = socket.descriptor else {
                    logger.warning("handover: no descriptor for a WebSocket", metadata: ["connection": "\(number)"])
                    return false
                }
                var state = state
                (state.written, state.logTruncated) = log
                do {
                    try peer.send(HandoverMessage.connection(state).encode(), descriptor: fd)
                    return true
                } catch {
                    logger.warning("handover: a WebSocket could not be sent", metadata: ["error": "\(error)"])
                    return false
                }
            }, done: { ok in
                self.queue.async {
                    self.sockets[number] = nil
                    self.update { $0.handedOver(number, ok: ok, now: monotonicNanos()) }
                }
            })
        }
    }
}

/// The process's TCP sockets by their two addresses: NIO does not say
/// which descriptor a channel has, its addresses name it all the same.
enum HandoverDescriptors {
    static func key(local: SocketAddress, remote: SocketAddress) -> String {
        "\(local.ipAddress ?? "?"):\(local.port ?? 0)|\(remote.ipAddress ?? "?"):\(remote.port ?? 0)"
    }

    static func scan() -> [String: CInt] {
        var found: [String: CInt] = [:]
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return found }
        for name in names {
            guard let fd = CInt(name), let local = address(fd, peer: false), let remote = address(fd, peer: true) else { continue }
            found[key(local: local, remote: remote)] = fd
        }
        return found
    }

    static func address(_ fd: CInt, peer: Bool) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return nil }
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee, host: "") } }
        case AF_INET6:
            return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee, host: "") } }
        default:
            return nil
        }
    }
}
