import Foundation
import Systemd
#if canImport(Glibc)
import Glibc
#endif

/// The supervisor's control socket (`<runtime>/control.sock`): one line in
/// (`status`, `restart <child|role>`, `scale <role> <n>`), one JSON document
/// out, then the connection closes. The socket file is 0600 and every peer's
/// credentials are checked: only the supervisor's own user (and root) may
/// control it.
final class ControlSocket: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let source: any DispatchSourceRead

    /// - Parameter handle: runs on `queue` with the command line and a reply
    ///   function to call (once, possibly later) with the answer.
    init(path: String, queue: DispatchQueue, handle: @escaping @Sendable (String, @escaping @Sendable (String) -> Void) -> Void) throws {
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0, let (unix, length) = SDNotify.address(path) else {
            throw NSError(domain: "chatd.control", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "control socket \(path)"])
        }
        var address = unix
        let previous = umask(0o177)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        umask(previous)
        guard bound == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw NSError(domain: "chatd.control", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "bind \(path): \(String(cString: strerror(errno)))"])
        }
        self.path = path
        self.fd = fd
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler {
            while true {
                let client = accept(fd, nil, nil)
                guard client >= 0 else { return }
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                guard Self.peerAllowed(client) else {
                    Self.write(client, #"{"error":"permission denied"}"#)
                    close(client)
                    continue
                }
                var timeout = timeval(tv_sec: 2, tv_usec: 0)
                setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                var line = [UInt8]()
                var byte: UInt8 = 0
                while line.count < 1024, recv(client, &byte, 1, 0) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
                handle(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespaces)) { answer in
                    Self.write(client, answer + "\n")
                    close(client)
                }
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

    /// The peer runs as our user, or as root.
    static func peerAllowed(_ client: Int32) -> Bool {
        // `struct ucred` (pid, uid, gid), which Glibc's module map hides
        // behind _GNU_SOURCE; SO_PEERCRED is 17 on Linux.
        struct PeerCredentials { var pid: Int32 = 0; var uid: UInt32 = 0; var gid: UInt32 = 0 }
        var credentials = PeerCredentials()
        var length = socklen_t(MemoryLayout<PeerCredentials>.size)
        guard getsockopt(client, SOL_SOCKET, 17, &credentials, &length) == 0 else { return false }
        return credentials.uid == getuid() || credentials.uid == 0
    }

    static func write(_ client: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            offset += n
        }
    }

    /// A client: sends one command, returns the answer.
    static func request(path: String, command: String, timeout: Int = 120) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        guard let (unix, length) = SDNotify.address(path) else {
            throw NSError(domain: "chatd.control", code: Int(EINVAL), userInfo: [NSLocalizedDescriptionKey: "control socket path too long: \(path)"])
        }
        var address = unix
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) }
        }
        guard connected == 0 else { throw NSError(domain: "chatd.control", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "cannot reach the supervisor at \(path): \(String(cString: strerror(errno)))"]) }
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        write(fd, command + "\n")
        var answer = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            answer += buffer[0..<n]
        }
        return String(decoding: answer, as: UTF8.self)
    }
}

/// `chatd ctl`: talks to a running supervisor.
public enum Control {
    public static func send(runtimeDir: String, command: String) throws -> String {
        try ControlSocket.request(path: (runtimeDir as NSString).appendingPathComponent("control.sock"), command: command)
    }
}
