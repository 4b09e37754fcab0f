import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One TCP connection that sends bytes as given, malformed or not, and reads
/// what comes back: the client side of the fuzz tests, which no HTTP library
/// would agree to be.
public final class RawConnection {
    public let fd: Int32

    /// What a connection got for what it sent.
    public struct Outcome: Sendable {
        /// Everything the server sent.
        public var bytes: [UInt8]
        /// The server closed the connection (EOF or reset).
        public var closed: Bool
        /// Seconds from the last byte sent to the first response byte, or to the close.
        public var elapsed: Double

        /// The status code of the first response, if one arrived.
        public var status: Int? {
            let text = String(decoding: bytes.prefix(16), as: UTF8.self)
            guard text.hasPrefix("HTTP/1."), text.count >= 12 else { return nil }
            return Int(text.dropFirst(9).prefix(3))
        }

        public var text: String { String(decoding: bytes, as: UTF8.self) }
    }

    public init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestServerError(description: "socket: \(errno)") }
        var address = TestServer.loopback(port: port)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw TestServerError(description: "connect: \(errno)")
        }
    }

    deinit { close(fd) }

    /// Sends `bytes` (a server that closes early may refuse the rest: that is fine).
    public func send(_ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }

    /// Reads until the server closes, `until` says the answer is complete, or `timeout` passes.
    public func read(timeout: Double, until complete: ([UInt8]) -> Bool = { _ in false }) -> Outcome {
        let start = Date()
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var firstByte: Double?
        while true {
            let left = timeout - Date().timeIntervalSince(start)
            if left <= 0 { return Outcome(bytes: bytes, closed: false, elapsed: firstByte ?? left) }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(max(1, left * 1000)))
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { continue }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 {
                return Outcome(bytes: bytes, closed: true, elapsed: firstByte ?? Date().timeIntervalSince(start))
            }
            if firstByte == nil { firstByte = Date().timeIntervalSince(start) }
            bytes += buffer[..<n]
            if complete(bytes) { return Outcome(bytes: bytes, closed: false, elapsed: firstByte!) }
        }
    }

    /// Whether an HTTP response head has arrived whole.
    public static func hasHead(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 4 && (0...(bytes.count - 4)).contains { bytes[$0] == 13 && bytes[$0 + 1] == 10 && bytes[$0 + 2] == 13 && bytes[$0 + 3] == 10 }
    }
}
