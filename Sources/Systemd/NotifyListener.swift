import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The supervisor's own notify socket, which its children report to
/// (`READY=1`, `WATCHDOG=1`, with `CHATD_CHILD=<name>`).
public final class NotifyListener: @unchecked Sendable {
    public let path: String
    let fd: Int32
    private let source: any DispatchSourceRead

    /// Binds `path` and calls `handler` on `queue` for each datagram.
    public init(path: String, queue: DispatchQueue, handler: @escaping @Sendable ([String: String]) -> Void) throws {
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
        self.path = path
        self.fd = fd
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard count > 0 else { break }
                handler(SDNotify.decode(Array(buffer[0..<count])))
            }
        }
        source.resume()
        self.source = source
    }

    deinit {
        source.cancel()
        close(fd)
        unlink(path)
    }
}
