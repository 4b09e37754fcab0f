import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The old and the new frontend's end of a handover: a SOCK_SEQPACKET
/// Unix socket (message boundaries kept, in order, reliable), each message
/// one `HandoverMessage`, with at most one file descriptor riding along
/// (SCM_RIGHTS). A message longer than a packet (an offer of every room, the
/// delivered keys) goes as fragments, reassembled on receipt: callers send
/// and receive whole messages. A thin wrapper of sendmsg/recvmsg: it
/// blocks, so it runs on the handover's own thread. Its descriptor is
/// closed with it.
// @unchecked: `fd` never changes; the kernel orders what threads do with it.
// `assembling` is touched only by the one thread that receives.
final class HandoverSocket: @unchecked Sendable {
    let fd: CInt
    /// The largest message this end takes in (`maxMessage`; less in tests).
    let limit: Int

    /// The largest packet sent: a connection's state with its unread bytes
    /// (under one frame, `maxFrameBytes`, 64 KiB by default) and its log
    /// (32 KiB) fits one, so a handover's sockets go one packet each; the
    /// send buffer asked for holds two.
    static let maxPacket = 256 << 10
    /// The largest message taken in: the offer of every room and the
    /// delivered keys (`RecentKeys`, 65,536 of them, ~2 MiB) fit well
    /// within it; a broken peer's fragments stop here, not at the memory's end.
    static let maxMessage = 64 << 20

    /// A fragment: `CHF`, then 1 if more of the message follows, 0 on its
    /// last (which carries the descriptor, if any), then its part of the
    /// message. A whole message (`HandoverMessage`, magic `CHH`) goes as it is.
    static let fragmentMagic: [UInt8] = Array("CHF".utf8)
    private static var fragmentHeader: Int { fragmentMagic.count + 1 }

    /// The fragments received so far of a message.
    private var assembling: [UInt8] = []
    /// Held for a whole message's packets: the old frontend sends from
    /// every event loop, and one message's fragments must not interleave
    /// with another's.
    private let sending = Mutex(())

    struct Failure: Error, CustomStringConvertible {
        let call: String
        let errno: CInt
        var description: String { "\(call): \(String(cString: strerror(errno)))" }
    }

    /// Takes ownership of `fd`. A send waits at most 2 s for room in the
    /// peer's buffer: the old frontend sends from its event loops.
    init(fd: CInt, limit: Int = HandoverSocket.maxMessage) {
        self.fd = fd
        self.limit = limit
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // A packet up to `maxPacket` must fit the send buffer whole (the
        // default, net.core.wmem_default, is ~208 KiB): accepted and
        // connected sockets too, not only a pair's.
        var size = CInt(Self.maxPacket * 2)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<CInt>.size))
    }

    deinit { close(fd) }

    /// A connected pair, close-on-exec (the supervisor clears the flag on
    /// the end it hands a child).
    static func pair(limit: Int = HandoverSocket.maxMessage) throws -> (HandoverSocket, HandoverSocket) {
        var fds: [CInt] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw Failure(call: "socketpair", errno: errno)
        }
        return (HandoverSocket(fd: fds[0], limit: limit), HandoverSocket(fd: fds[1], limit: limit))
    }

    /// Sends one message, with `descriptor` (duplicated into the receiver)
    /// if given: one packet, or fragments when it is longer than one.
    func send(_ bytes: [UInt8], descriptor: CInt? = nil) throws {
        guard bytes.count <= limit else { throw Failure(call: "sendmsg", errno: EMSGSIZE) }
        try sending.withLock { _ in
            guard bytes.count > Self.maxPacket else { return try sendPacket(bytes, descriptor: descriptor) }
            let part = Self.maxPacket - Self.fragmentHeader
            var start = 0
            while start < bytes.count {
                let end = min(start + part, bytes.count)
                let last = end == bytes.count
                try sendPacket(Self.fragmentMagic + [last ? 0 : 1] + bytes[start..<end], descriptor: last ? descriptor : nil)
                start = end
            }
        }
    }

    /// SCM_RIGHTS and MSG_CMSG_CLOEXEC (linux/socket.h; not exported to Swift).
    private static let rightsType: CInt = 1
    private static let cmsgCloexec: CInt = 0x4000_0000

    /// The control buffer: a cmsghdr and one descriptor, aligned as CMSG_SPACE would.
    private static var controlSpace: Int { MemoryLayout<cmsghdr>.size + 8 }

    /// Sends one packet, with `descriptor` (duplicated into the receiver) if given.
    private func sendPacket(_ bytes: [UInt8], descriptor: CInt?) throws {
        var control = [UInt64](repeating: 0, count: Self.controlSpace / 8)
        let sent = bytes.withUnsafeBytes { data in
            control.withUnsafeMutableBytes { control in
                var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: data.baseAddress), iov_len: data.count)
                return withUnsafeMutablePointer(to: &vector) { vector in
                    var message = msghdr()
                    message.msg_iov = vector
                    message.msg_iovlen = 1
                    if let descriptor {
                        var header = cmsghdr()
                        header.cmsg_len = MemoryLayout<cmsghdr>.size + MemoryLayout<CInt>.size
                        header.cmsg_level = SOL_SOCKET
                        header.cmsg_type = Self.rightsType
                        control.storeBytes(of: header, as: cmsghdr.self)
                        control.storeBytes(of: descriptor, toByteOffset: MemoryLayout<cmsghdr>.size, as: CInt.self)
                        message.msg_control = control.baseAddress
                        message.msg_controllen = control.count
                    }
                    var sent: Int
                    repeat { sent = sendmsg(fd, &message, CInt(MSG_NOSIGNAL)) } while sent < 0 && errno == EINTR
                    return sent
                }
            }
        }
        guard sent == bytes.count else { throw Failure(call: "sendmsg", errno: sent < 0 ? errno : EMSGSIZE) }
    }

    /// Waits up to `timeoutMillis` (-1: for ever, each packet) for a
    /// message: nil when none came whole in time (the fragments received
    /// are kept for the next call); throws at the end of the stream (the
    /// peer is gone), and for a message past `limit` or a descriptor on
    /// a fragment but the last. A descriptor received is close-on-exec and
    /// the caller's to close.
    func receive(timeoutMillis: CInt) throws -> (bytes: [UInt8], descriptor: CInt?)? {
        while true {
            guard let packet = try receivePacket(timeoutMillis: timeoutMillis) else { return nil }
            guard packet.bytes.starts(with: Self.fragmentMagic), packet.bytes.count >= Self.fragmentHeader else {
                // A whole message: none may come between a message's fragments.
                guard assembling.isEmpty else { throw refuse(packet.descriptor, "a message inside another") }
                return packet
            }
            let more = packet.bytes[Self.fragmentMagic.count]
            guard more <= 1, more == 0 || packet.descriptor == nil else { throw refuse(packet.descriptor, "a malformed fragment") }
            guard assembling.count + packet.bytes.count - Self.fragmentHeader <= limit else {
                throw refuse(packet.descriptor, "a message past \(limit) bytes")
            }
            assembling += packet.bytes[Self.fragmentHeader...]
            guard more == 0 else { continue }
            defer { assembling = [] }
            return (assembling, packet.descriptor)
        }
    }

    /// The peer broke the framing: what came is dropped, the descriptor closed.
    private func refuse(_ descriptor: CInt?, _ what: String) -> Failure {
        if let descriptor { close(descriptor) }
        assembling = []
        return Failure(call: "recvmsg (\(what))", errno: EMSGSIZE)
    }

    /// One packet, as `receive` waits for it.
    private func receivePacket(timeoutMillis: CInt) throws -> (bytes: [UInt8], descriptor: CInt?)? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var ready: CInt
        repeat { ready = poll(&poller, 1, timeoutMillis) } while ready < 0 && errno == EINTR
        guard ready >= 0 else { throw Failure(call: "poll", errno: errno) }
        guard ready > 0 else { return nil }
        // The packet's length, so that the buffer is just as large (MSG_TRUNC
        // with MSG_PEEK answers the real length on a Unix packet socket).
        var length: Int
        repeat { length = recv(fd, nil, 0, CInt(MSG_PEEK) | CInt(MSG_TRUNC)) } while length < 0 && errno == EINTR
        guard length >= 0 else { throw Failure(call: "recv", errno: errno) }
        var buffer = [UInt8](repeating: 0, count: max(length, 1))
        var control = [UInt64](repeating: 0, count: Self.controlSpace / 8 + 2)
        var descriptor: CInt?
        var truncated = false
        let count = buffer.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { control in
                var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &vector) { vector in
                    var message = msghdr()
                    message.msg_iov = vector
                    message.msg_iovlen = 1
                    message.msg_control = control.baseAddress
                    message.msg_controllen = control.count
                    var count: Int
                    repeat { count = recvmsg(fd, &message, Self.cmsgCloexec) } while count < 0 && errno == EINTR
                    let header = control.load(as: cmsghdr.self)
                    if count >= 0, message.msg_controllen >= MemoryLayout<cmsghdr>.size + MemoryLayout<CInt>.size,
                        header.cmsg_level == SOL_SOCKET, header.cmsg_type == Self.rightsType {
                        descriptor = control.load(fromByteOffset: MemoryLayout<cmsghdr>.size, as: CInt.self)
                    }
                    truncated = message.msg_flags & CInt(MSG_TRUNC) != 0 || message.msg_flags & CInt(MSG_CTRUNC) != 0
                    return count
                }
            }
        }
        guard count >= 0 else { throw Failure(call: "recvmsg", errno: errno) }
        guard count > 0 || descriptor != nil else { throw Failure(call: "recvmsg", errno: ECONNRESET) }
        guard !truncated else {
            if let descriptor { close(descriptor) }
            throw Failure(call: "recvmsg", errno: EMSGSIZE)
        }
        return (Array(buffer[0..<count]), descriptor)
    }
}
