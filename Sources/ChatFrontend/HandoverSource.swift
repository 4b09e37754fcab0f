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
    /// Some WebSocket went to a successor: at its stop this process drains
    /// its bus up to the command deadline (`Frontend.drainSeconds`).
    let handedOverAny = Atomic<Bool>(false)
    /// Sends the sockets' states and descriptors, one packet at a time: off
    /// the event loops (a send waits for the successor, up to 2 s, and would
    /// stall every socket of its loop) and off `queue` (the machine goes on).
    private let sends = DispatchQueue(label: "chatd.handover.send")
    // Everything below is touched only on `queue`.
    private let queue = DispatchQueue(label: "chatd.handover.source")
    private var machine = HandoverSender<UInt64>(timing: HandoverSource.timing)
    /// The successor of the handover under way, from its request until the
    /// handover is over: one at a time. Kept once everything moved, to see
    /// it die before this process is retired.
    private var peer: HandoverSocket?
    private var sockets: [UInt64: Socket] = [:]
    /// Each stopped socket's log, until it is handed over.
    private var logs: [UInt64: (written: [UInt64], truncated: Bool)] = [:]
    private var startedAt: UInt64 = 0
    /// When the one timer armed for the machine fires (nil: none armed).
    /// Re-armed only for an earlier wakeup; a timer that fires early for a
    /// wakeup moved later arms the next itself.
    private var armedWakeup: UInt64?

    /// 32 sockets in flight: a socket's pause is about the window times one
    /// socket's trip through both processes, while the pipeline stays full
    /// (chatd-load --handover 1000, debug build: window 512, pause median
    /// 257 ms; window 32, 14 ms, and the whole handover no slower). The
    /// drain bound is 2 s unless `HandoverReport.drainBoundVariable` says otherwise (tests).
    static let timing = HandoverSender<UInt64>.Timing(
        readyTimeout: 10_000_000_000, drainBound: drainBound(ProcessInfo.processInfo.environment), window: 32
    )

    /// How long a stopped socket waits for its replies (`HandoverReport.drainBoundVariable`).
    static func drainBound(_ environment: [String: String]) -> UInt64 {
        guard let text = environment[HandoverReport.drainBoundVariable], let millis = UInt64(text), millis > 0, millis <= 60_000 else { return 2_000_000_000 }
        return millis * 1_000_000
    }

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
        // The last successor died and its reader has not said so yet: that first.
        if let peer, Self.hungUp(peer) { peerClosed(peer) }
        guard peer == nil, machine.state == .idle else {
            // Closed here (`socket` goes): that successor reports a refusal.
            return logger.warning("handover: another one is under way; this new frontend's request is closed")
        }
        logger.info("handover: a new frontend asks for the WebSockets")
        // A stop signal came first: this process is going anyway.
        guard services.life.beginHandover() else {
            return logger.warning("handover: this frontend is stopping; the new frontend's request is closed")
        }
        peer = socket
        startedAt = monotonicNanos()
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
        logger.info("handover: offering WebSockets", metadata: ["connections": "\(open.count)", "rooms": "\(rooms.count)"])
        update { $0.start(sockets: open.map { ($0.number, pending: 0) }, rooms: rooms, now: monotonicNanos()) }
    }

    /// The new process's packets, on this thread until its end closes.
    private func read(from socket: HandoverSocket) {
        while true {
            do {
                guard let packet = try socket.receive(timeoutMillis: -1) else { continue }
                if let fd = packet.descriptor { close(fd) }
                let message = try? HandoverMessage(bytes: packet.bytes)
                queue.async { [self] in
                    guard peer === socket else { return }
                    update { machine in message.map { machine.received($0, now: monotonicNanos()) } ?? machine.peerGone(now: monotonicNanos()) }
                }
                if message == nil { return }
            } catch {
                queue.async { [self] in peerClosed(socket) }
                return
            }
        }
    }

    /// The successor's end closed (it exited, or died): the machine decides
    /// from where the handover is what that means. A successor that has
    /// the slot keeps its end open until it exits.
    private func peerClosed(_ socket: HandoverSocket) {
        guard peer === socket else { return }
        logger.info("handover: the new frontend's end closed")
        update { $0.peerGone(now: monotonicNanos()) }
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

    /// Keys sent in `delivered`: every one the dedupe holds (`RecentKeys`,
    /// 65,536), the same window against a worker's resend (10-15 s) the old
    /// process itself had; ~2 MiB in the compact form, fragmented by `HandoverSocket`.
    static let deliveredKeys = RecentKeys().capacity

    /// `ready` says where the new process's buffers begin: once this
    /// process has caught up to there, sends the idempotency keys it has
    /// delivered (a copy re-published by a worker's resend must not reach
    /// a moved socket twice) to that same successor. Each one's batch is
    /// queued on every loop already, ahead of the stops dispatched after
    /// `seeded`, which the successor sends once the keys are in force: no
    /// socket's pause holds their parse.
    private func sendDelivered() {
        guard let peer else { return }
        catchUp { [self] in
            let keys = services.connections.recentlyDelivered(Self.deliveredKeys)
            queue.async { [self] in
                // Given up meanwhile, or another successor by now: not for it.
                guard self.peer === peer, case .seeding = machine.state else { return }
                send(.delivered(keys: keys), to: peer)
            }
        }
    }

    private func send(_ message: HandoverMessage, to peer: HandoverSocket) {
        do {
            try peer.send(message.encode())
        } catch {
            // Not 65,536 keys in a log line.
            let name = if case .delivered(let keys) = message { "delivered (\(keys.count) keys)" } else { "\(message)" }
            logger.warning("handover: the new frontend did not take \(name)", metadata: ["error": "\(error)"])
            // Its end is closed (its reader may not have seen it yet):
            // not the ready deadline's 10 s of waiting for nobody.
            if let failure = error as? HandoverSocket.Failure, failure.errno == EPIPE || failure.errno == ECONNRESET {
                queue.async { self.peerClosed(peer) }
            }
        }
    }

    private func tick() {
        armedWakeup = nil
        update { $0.tick(now: monotonicNanos()) }
    }

    /// Arms the one timer for the machine's next wakeup, unless one fires by then.
    private func arm() {
        guard let wake = machine.nextWakeup else { return }
        if let armed = armedWakeup, armed <= wake { return }
        armedWakeup = wake
        let now = monotonicNanos()
        queue.asyncAfter(deadline: .now() + Double(wake > now ? wake - now : 0) / 1e9) { [weak self] in
            guard let self, self.armedWakeup == wake else { return }
            self.tick()
        }
    }

    private func perform(_ actions: [HandoverSender<UInt64>.Action]) {
        for action in actions {
            switch action {
            case .send(let message):
                guard let peer else { continue }
                send(message, to: peer)
            case .sendDelivered: sendDelivered()
            case .stopReading(let number): stop(number)
            case .handOver(let number): handOver(number)
            case .closeForRestart(let number):
                guard let socket = sockets.removeValue(forKey: number) else { continue }
                socket.connection.eventLoop.execute { socket.connection.value.closeForRestart() }
            case .resumeServing(let reason):
                logger.warning("handover over, this frontend serves on", metadata: ["reason": "\(reason)"])
                resume()
            case .finished(let moved, let closed):
                let millis = (monotonicNanos() - startedAt) / 1_000_000
                logger.info("handover: no WebSocket left to move", metadata: ["moved": "\(moved)", "closed": "\(closed)", "ms": "\(millis)"])
                // Every socket moved: the supervisor retires this process,
                // which accepts nothing meanwhile (or the successor dies
                // first: `resumeServing`). Failed midway: `resumeServing` follows.
                services.connections.setHandoverMode([])
            }
        }
        arm()
    }

    /// The handover is over and this process serves on: everything the
    /// handover changed goes back (the next one may start), unless a stop
    /// signal came meanwhile: then it stays stopping, accepting nothing.
    private func resume() {
        services.connections.setHandoverMode([])
        peer = nil
        sockets.removeAll()
        logs.removeAll()
        guard services.life.endHandover() else {
            return logger.info("handover: this frontend is stopping; it does not accept again")
        }
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
        perform(change(&machine))
    }

    /// Hands one socket over: its state is taken on its loop (from then on
    /// it neither reads nor writes there), its state and descriptor go to
    /// the successor from `sends`, and back on its loop it is closed, quietly
    /// if it went, with 1012 if not. The descriptor is sent as a duplicate
    /// taken while the channel is open: whatever closes the channel
    /// meanwhile, its number cannot name another socket during the send.
    private func handOver(_ number: UInt64) {
        guard let socket = sockets[number] else { return }
        let connection = socket.connection
        let log = logs.removeValue(forKey: number) ?? ([], false)
        let (peer, logger) = (self.peer, self.logger)
        let finish: @Sendable (Bool) -> Void = { [self] ok in
            if ok { handedOverAny.store(true, ordering: .relaxed) }
            queue.async { [self] in
                sockets[number] = nil
                update { $0.handedOver(number, ok: ok, now: monotonicNanos()) }
            }
        }
        connection.eventLoop.execute { [self] in
            connection.value.takeForHandover { state in
                // Already closing (with 1012, or by its client): nothing to close here.
                guard var state else { return finish(false) }
                guard let peer, let copy = Self.duplicate(socket) else {
                    logger.warning("handover: no descriptor for a WebSocket; closing it with 1012", metadata: ["connection": "\(number)"])
                    connection.value.endHandover(handedOver: false)
                    return finish(false)
                }
                (state.written, state.logTruncated) = log
                let message = HandoverMessage.connection(state)
                self.sends.async {
                    let sent: Bool
                    do {
                        try peer.send(message.encode(), descriptor: copy)
                        sent = true
                    } catch {
                        logger.warning("handover: a WebSocket could not be sent; closing it with 1012", metadata: ["connection": "\(number)", "error": "\(error)"])
                        sent = false
                    }
                    close(copy)
                    connection.eventLoop.execute {
                        connection.value.endHandover(handedOver: sent)
                        finish(sent)
                    }
                }
            }
        }
    }

    /// The other end of `socket` closed (its reader may not have seen it yet).
    private static func hungUp(_ socket: HandoverSocket) -> Bool {
        var entry = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) == 1 && entry.revents & Int16(POLLHUP) != 0
    }

    /// A duplicate of the socket's descriptor (close-on-exec), if the one
    /// found at the offer still has the socket's two addresses. Called on
    /// its loop with its channel open, so the number is still the socket's.
    private static func duplicate(_ socket: Socket) -> CInt? {
        guard let fd = socket.descriptor, let local = socket.local, let remote = socket.remote else { return nil }
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { return nil }
        guard let copyLocal = HandoverDescriptors.address(copy, peer: false), let copyRemote = HandoverDescriptors.address(copy, peer: true),
            HandoverDescriptors.key(local: copyLocal, remote: copyRemote) == HandoverDescriptors.key(local: local, remote: remote)
        else {
            close(copy)
            return nil
        }
        return copy
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
