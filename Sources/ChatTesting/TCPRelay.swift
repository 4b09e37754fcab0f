import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A loopback TCP relay for tests: ports `listen ..< listen + count` on
/// 127.0.0.1 forward to `target ..< target + count`. `cut()` ends every
/// relayed connection (both ends see FIN) and refuses new ones (accepted
/// and closed at once) until `restore()`: one path between two processes
/// drops while both live, with no firewall and no root (a worker's link
/// to one broker, that broker's host staying up).
public final class TCPRelay: @unchecked Sendable {
    private let lock = NSLock()
    private var listeners: [Int32] = []
    /// Both descriptors of every live relayed connection.
    private var live: Set<Int32> = []
    private var isCut = false
    private var stopped = false

    public init(listen: Int, target: Int, count: Int) throws {
        for offset in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var on: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
            var address = TestServer.loopback(port: listen + offset)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0, Glibc.listen(fd, 64) == 0 else {
                close(fd)
                stop()
                throw TestServerError(description: "relay: cannot listen on \(listen + offset): errno \(errno)")
            }
            listeners.append(fd)
            let port = target + offset
            Thread { [self] in accepting(fd, target: port) }.start()
        }
    }

    /// Ends every relayed connection and refuses new ones.
    public func cut() {
        lock.withLock {
            isCut = true
            for fd in live { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    /// Relays new connections again.
    public func restore() { lock.withLock { isCut = false } }

    /// Cuts and closes the listening ports; the relay's threads end.
    public func stop() {
        let listening = lock.withLock {
            stopped = true
            return listeners
        }
        cut()
        // A shut-down listening socket wakes its accept() with an error.
        for fd in listening { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private func accepting(_ listener: Int32, target: Int) {
        defer { close(listener) }
        while true {
            let client = accept(listener, nil, nil)
            if lock.withLock({ stopped }) {
                if client >= 0 { close(client) }
                return
            }
            guard client >= 0 else {
                // EINTR, or out of descriptors: do not spin on it.
                if errno != EINTR { usleep(10_000) }
                continue
            }
            guard !lock.withLock({ isCut }), let upstream = Self.connect(port: target) else {
                close(client)
                continue
            }
            let added = lock.withLock {
                guard !isCut else { return false }
                live.formUnion([client, upstream])
                return true
            }
            guard added else {
                close(client)
                close(upstream)
                continue
            }
            Thread { [self] in pump(client, upstream) }.start()
        }
    }

    private static func connect(port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = TestServer.loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// Copies both ways until either end closes (or `cut` shut them down).
    private func pump(_ a: Int32, _ b: Int32) {
        var fds = [pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0)]
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        loop: while true {
            let polled = poll(&fds, 2, 1000)
            if polled < 0 && errno == EINTR { continue }  // revents are stale then
            guard polled >= 0 else { break }
            for (index, entry) in fds.enumerated() where entry.revents != 0 {
                let (from, to) = index == 0 ? (a, b) : (b, a)
                let count = buffer.withUnsafeMutableBytes { read(from, $0.baseAddress, $0.count) }
                guard count > 0, Self.writeAll(to, buffer[0..<count]) else { break loop }
            }
        }
        lock.withLock {
            live.remove(a)
            live.remove(b)
        }
        close(a)
        close(b)
    }

    private static func writeAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>) -> Bool {
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            // Not write(2): a peer gone must not SIGPIPE the test process.
            let written = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }
}
