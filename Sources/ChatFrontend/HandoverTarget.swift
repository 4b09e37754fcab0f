import ChatCore
import ChatBus
import ChatWire
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOWebSocket
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The new frontend's side of a handover, carried out: it connects to its
/// predecessor's socket (`CHATD_HANDOVER_FROM`), subscribes to every room
/// offered and buffers their events, then adopts each WebSocket sent to it
/// (`HandoverReceiver` decides when). Its queue owns the machine.
final class HandoverTarget: @unchecked Sendable {
    typealias Outcome = HandoverReport

    let services: FrontendServices
    let group: any EventLoopGroup
    let logger: Logger
    /// The state version this process reads (`HandoverReport.readsVariable`).
    let reads: UInt16
    // Everything below is touched only on `queue`.
    private let queue = DispatchQueue(label: "chatd.handover.target")
    private var machine: HandoverReceiver
    private var peer: HandoverSocket?
    private var outcome = Outcome()
    private let startedAt = monotonicNanos()
    /// Adoptions under way: the buffers stay until they are all in.
    private var adopting = 0
    private var releasing: [String]?
    /// The machine finished: what is left is the adoptions under way.
    private var over = false
    /// Each adopted socket's pause, ns.
    private var pauses: [UInt64] = []
    private var finished: (@Sendable (Outcome) -> Void)?

    init(services: FrontendServices, group: any EventLoopGroup, logger: Logger, reads: UInt16 = HandoverMessage.version) {
        self.services = services
        self.group = group
        self.logger = logger
        self.reads = reads
        machine = HandoverReceiver(timeout: 10_000_000_000, now: monotonicNanos(), reads: reads)
    }

    /// Connects to `path` and runs the handover; `done` is called once, on the handover's queue.
    func run(from path: String, done: @escaping @Sendable (Outcome) -> Void) {
        queue.async { [self] in
            finished = done
            let fd = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0, Self.connect(fd, path) else {
                if fd >= 0 { close(fd) }
                return update { $0.peerGone(now: monotonicNanos()) }
            }
            let connected = HandoverSocket(fd: fd)
            peer = connected
            Thread.detachNewThread { [self] in read(from: connected) }
            schedule()
        }
    }

    static func connect(_ fd: CInt, _ path: String) -> Bool {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes + [0]) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
    }

    private func read(from socket: HandoverSocket) {
        while true {
            let packet: (bytes: [UInt8], descriptor: CInt?)
            do {
                guard let received = try socket.receive(timeoutMillis: -1) else { continue }
                packet = received
            } catch {
                return queue.async { [self] in update { $0.peerGone(now: monotonicNanos()) } }
            }
            let message = Result { () throws(HandoverError) in try HandoverMessage(bytes: packet.bytes, accepting: reads) }
            queue.async { [self] in
                let actions = updating { $0.received(message, now: monotonicNanos()) }
                // A descriptor nobody adopts is closed, so its client sees the end.
                let adopts = actions.contains { if case .adopt = $0 { true } else { false } }
                if let fd = packet.descriptor, !adopts { close(fd) }
                perform(actions, descriptor: packet.descriptor)
            }
        }
    }

    private func updating(_ change: (inout HandoverReceiver) -> [HandoverReceiver.Action]) -> [HandoverReceiver.Action] {
        change(&machine)
    }

    private func update(_ change: (inout HandoverReceiver) -> [HandoverReceiver.Action]) {
        perform(change(&machine), descriptor: nil)
    }

    private func schedule() {
        guard let wake = machine.nextWakeup else { return }
        let now = monotonicNanos()
        queue.asyncAfter(deadline: .now() + Double(wake > now ? wake - now : 0) / 1e9) { [weak self] in
            self?.update { $0.tick(now: monotonicNanos()) }
        }
    }

    private func perform(_ actions: [HandoverReceiver.Action], descriptor: CInt?) {
        for action in actions {
            switch action {
            case .send(let message):
                _ = try? peer?.send(message.encode())
            case .subscribe(let rooms):
                for room in rooms {
                    services.bus.subscribe(room: room) { [self] result in
                        queue.async { [self] in
                            switch result {
                            case .success: update { $0.roomReady(room, now: monotonicNanos()) }
                            case .failure: update { $0.roomFailed(room, now: monotonicNanos()) }
                            }
                        }
                    }
                }
                schedule()
            case .beginBuffering:
                barrier { [self] passed in
                    if passed { services.connections.setHandoverMode(.buffer) }
                    queue.async { [self] in
                        guard case .buffering = machine.state else {
                            // Refused meanwhile (its deadline): no buffer is left on.
                            if passed && over { services.connections.setHandoverMode([]) }
                            return
                        }
                        update { passed ? $0.bufferingBegan(now: monotonicNanos()) : $0.bufferingFailed(now: monotonicNanos()) }
                    }
                }
            case .adopt(let state):
                guard let descriptor else { continue }
                adopt(state, descriptor: descriptor)
            case .seed(let keys):
                services.connections.seedDelivered(keys) { [self] in
                    queue.async { [self] in update { $0.keysSeeded(now: monotonicNanos()) } }
                }
            case .release(let rooms):
                releasing = rooms
            case .finished(_, let refused):
                outcome.refused = refused
                over = true
                peer = nil
                releaseOnceAdopted()
            }
        }
    }

    /// Calls `then` on the bus thread once every room event the broker
    /// forwarded before now has been handed to the loops, and none after:
    /// so that what is buffered from `then` on was forwarded after the
    /// offer (false: no answer in time). A room of its own, never subscribed before (the number), needs
    /// a new subscription sync, answered after everything forwarded before
    /// it; its answer comes amid a turn of the bus thread whose events are
    /// handed over at the turn's end, so a second hold on it, answered at
    /// once on the next turn, is where that turn's events have gone and the
    /// next one's have not (as `HandoverSource.catchUp`).
    private func barrier(then: @escaping @Sendable (_ passed: Bool) -> Void) {
        let bus = services.bus
        let room = "handover-buffer-\(bus.frontendID)-\(Self.barriers.add(1, ordering: .relaxed).newValue)"
        bus.subscribe(room: room) { first in
            bus.subscribe(room: room) { second in
                if case .success = first { bus.unsubscribe(room: room) }
                if case .success = second { bus.unsubscribe(room: room) }
                // Without the first answer nothing is known of where the stream is.
                if case .success = first { then(true) } else { then(false) }
            }
        }
    }

    /// Numbers the barrier rooms: each one new to the bus client.
    private static let barriers = Atomic<Int>(0)

    /// The buffers and the handover's room holds go once every socket sent
    /// is adopted (its replay read them); then the outcome is told.
    private func releaseOnceAdopted() {
        guard over, adopting == 0, finished != nil else { return }
        services.connections.setHandoverMode([])
        for room in releasing ?? [] { services.bus.unsubscribe(room: room) }
        releasing = nil
        finish()
    }

    private func finish() {
        outcome.millis = (monotonicNanos() - startedAt) / 1_000_000
        let sorted = pauses.sorted()
        outcome.pauseMedianMicros = sorted.isEmpty ? 0 : sorted[sorted.count / 2] / 1_000
        outcome.pauseMaxMicros = (sorted.last ?? 0) / 1_000
        finished?(outcome)
        finished = nil
    }

    private func adopt(_ state: HandoverConnection, descriptor: CInt) {
        guard let identity = try? JSONDecoder().decode(Identity.self, from: Data(state.identityJSON)),
            let session = try? JSONDecoder().decode(Requests.Session.self, from: Data(state.sessionJSON))
        else {
            // Its client sees the end and reconnects with `after`: a gap, counted as one.
            logger.warning("handover: a WebSocket's state could not be read", metadata: ["room": "\(state.roomID)"])
            close(descriptor)
            outcome.gaps += 1
            return
        }
        adopting += 1
        let services = self.services
        if let tokens = state.eventTokens { services.limiter?.adoptEventTokens(user: identity.id, tokens: tokens) }
        let adoption = HandoverAdoption(
            state: state, identity: identity, session: session,
            expires: Date(timeIntervalSince1970: Double(state.expiresMicros) / 1_000_000)
        ) { [self] replayed, pause in
            queue.async { [self] in
                if let replayed { outcome.adopted += 1; outcome.replayed += replayed } else { outcome.gaps += 1 }
                pauses.append(pause)
                adopting -= 1
                releaseOnceAdopted()
            }
        }
        ClientBootstrap(group: group)
            .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let hold = HandoverHold(pending: channel.allocator.buffer(capacity: 0))
                    try channel.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
                    try channel.pipeline.syncOperations.addHandler(HandoverGate(hold: hold, maxFrameSize: services.config.chat.maxFrameBytes))
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: services.config.chat.maxFrameBytes))
                    )
                    try ChatChannel.addWebSocketHandlers(to: channel, services: services)
                    // The socket's count and its own hold on its room (in force
                    // already: the handover's holds), taken with the handler that
                    // gives them back when it ends: a socket that never gets it
                    // (NIO refused the descriptor) holds neither.
                    services.limiter?.adoptSocket(user: identity.id)
                    services.bus.subscribe(room: state.roomID) { _ in }
                    do {
                        try channel.pipeline.syncOperations.addHandler(WebSocketConnection(adopting: adoption, services: services, hold: hold))
                    } catch {
                        services.limiter?.socketClosed(user: identity.id)
                        services.bus.unsubscribe(room: state.roomID)
                        throw error
                    }
                }
            }
            .withConnectedSocket(descriptor)
            .whenFailure { [self] error in
                logger.warning("handover: a WebSocket could not be adopted", metadata: ["error": "\(error)"])
                queue.async { [self] in
                    outcome.gaps += 1
                    adopting -= 1
                    releaseOnceAdopted()
                }
            }
    }
}
