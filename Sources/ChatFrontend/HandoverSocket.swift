#if canImport(Glibc)
import Glibc
#endif

/// The old and the new frontend's end of a handover: a SOCK_SEQPACKET
/// Unix socket (message boundaries kept, in order, reliable), each packet
/// one `HandoverMessage`, with at most one file descriptor riding along
/// (SCM_RIGHTS). A thin wrapper of sendmsg/recvmsg: it blocks, so it runs
/// on the handover's own thread. Its descriptor is closed with it.
// @unchecked: `fd` never changes; the kernel orders what threads do with it.
final class HandoverSocket: @unchecked Sendable {
    let fd: CInt

    /// The largest packet sent: a connection's state with its unread bytes
    /// (under one frame, `maxFrameBytes`, 64 KiB by default) and its log
    /// (32 KiB) fits well within it, and so does the send buffer asked for.
    static let maxPacket = 256 << 10

    struct Failure: Error, CustomStringConvertible {
        let call: String
        let errno: CInt
        var description: String { "\(call): \(String(cString: strerror(errno)))" }
    }

    /// Takes ownership of `fd`. A send waits at most 2 s for room in the
    /// peer's buffer: the old frontend sends from its event loops.
    init(fd: CInt) {
        self.fd = fd
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// A connected pair, close-on-exec (the supervisor clears the flag on
    /// the end it hands a child).
    static func pair() throws -> (HandoverSocket, HandoverSocket) {
        var fds: [CInt] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw Failure(call: "socketpair", errno: errno)
        }
        for fd in fds {
            // Packets up to `maxPacket` must fit the socket's buffer whole.
            var size = CInt(Self.maxPacket * 2)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<CInt>.size))
        }
        return (HandoverSocket(fd: fds[0]), HandoverSocket(fd: fds[1]))
    }

    /// SCM_RIGHTS and MSG_CMSG_CLOEXEC (linux/socket.h; not exported to Swift).
    private static let rightsType: CInt = 1
    private static let cmsgCloexec: CInt = 0x4000_0000

    /// The control buffer: a cmsghdr and one descriptor, aligned as CMSG_SPACE would.
    private static var controlSpace: Int { MemoryLayout<cmsghdr>.size + 8 }

    /// Sends one packet, with `descriptor` (duplicated into the receiver) if given.
    func send(_ bytes: [UInt8], descriptor: CInt? = nil) throws {
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

    /// Waits up to `timeoutMillis` (-1: for ever) for a packet: nil when
    /// none came in time; throws at the end of the stream (the peer is gone).
    /// A descriptor received is close-on-exec and the caller's to close.
    func receive(timeoutMillis: CInt) throws -> (bytes: [UInt8], descriptor: CInt?)? {
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
