import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The supervisor's own notify socket, which its children report to
/// (`READY=1`, `WATCHDOG=1`, with `CHATD_CHILD=<name>`). Each datagram comes
/// with the sender's pid as the kernel saw it (SCM_CREDENTIALS): two
/// processes may say the same name (a slot's retired process still draining
/// beside its new one), and only the pid tells them apart.
public final class NotifyListener: @unchecked Sendable {
    public let path: String
    let fd: Int32
    private let source: any DispatchSourceRead

    /// Binds `path` and calls `handler` on `queue` for each datagram, with
    /// its sender's pid (nil if the kernel gave none).
    public init(path: String, queue: DispatchQueue, handler: @escaping @Sendable ([String: String], Int32?) -> Void) throws {
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0, let (unix, length) = SDNotify.address(path) else {
            throw NSError(domain: "chatd.notify", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "notify socket \(path)"])
        }
        var address = unix
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else {
            close(fd)
            throw NSError(domain: "chatd.notify", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "bind \(path): \(String(cString: strerror(errno)))"])
        }
        // Only this user's processes may report to the supervisor.
        chmod(path, 0o600)
        var on: CInt = 1
        setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, socklen_t(MemoryLayout<CInt>.size))
        self.path = path
        self.fd = fd
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler {
            // A metrics report (`CHATD_METRICS`, at most 60,000 bytes) fits; a
            // longer datagram would be cut, and its end lost.
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while let (count, pid) = Self.receive(fd, into: &buffer) {
                handler(SDNotify.decode(Array(buffer[0..<count])), pid)
            }
        }
        source.resume()
        self.source = source
    }

    /// SCM_CREDENTIALS (linux/socket.h; Glibc does not export it to Swift).
    private static let credentialsType: CInt = 2

    /// One datagram into `buffer`: its length and its sender's pid; nil when none waits.
    private static func receive(_ fd: CInt, into buffer: inout [UInt8]) -> (Int, Int32?)? {
        // A cmsghdr and a ucred (pid, uid, gid: 12 bytes), with room to spare.
        var control = [UInt64](repeating: 0, count: 8)
        var pid: Int32?
        let count = buffer.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { control in
                var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &vector) { vector in
                    var message = msghdr()
                    message.msg_iov = vector
                    message.msg_iovlen = 1
                    message.msg_control = control.baseAddress
                    message.msg_controllen = control.count
                    let count = recvmsg(fd, &message, 0)
                    let header = control.load(as: cmsghdr.self)
                    let dataOffset = MemoryLayout<cmsghdr>.size
                    if count > 0, message.msg_controllen >= dataOffset + 12, header.cmsg_level == SOL_SOCKET,
                        header.cmsg_type == credentialsType {
                        pid = control.load(fromByteOffset: dataOffset, as: Int32.self)
                    }
                    return count
                }
            }
        }
        return count > 0 ? (count, pid) : nil
    }

    deinit {
        source.cancel()
        close(fd)
        unlink(path)
    }
}
