import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A small blocking WebSocket client (RFC 6455) over a plain socket, for tests
/// and the load tool. It can also misbehave on purpose (unmasked or oversized
/// frames), which a well-behaved client library would refuse to do.
public final class WebSocketClient: @unchecked Sendable {
    public struct Refused: Error, CustomStringConvertible {
        public let status: Int
        public let body: String
        public var description: String { "handshake refused: \(status) \(body)" }
    }

    public struct ConnectionError: Error, CustomStringConvertible {
        public let description: String
    }

    public enum Opcode: UInt8 {
        case continuation = 0, text = 1, binary = 2, close = 8, ping = 9, pong = 10
    }

    public struct Frame {
        public var opcode: Opcode
        public var payload: [UInt8]
        public var text: String { String(decoding: payload, as: UTF8.self) }
        /// The close code of a close frame.
        public var closeCode: Int? {
            opcode == .close && payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : nil
        }
    }

    /// The socket, for callers that poll many clients at once.
    public let fd: Int32
    private var buffer: [UInt8] = []
    /// Where unread bytes of `buffer` begin.
    private var start = 0
    public private(set) var closeCode: Int?
    public private(set) var isClosed = false

    /// Connects and completes the handshake; throws `Refused` for a non-101 answer.
    /// - Parameters:
    ///   - receiveBuffer: a small `SO_RCVBUF` makes a client that does
    ///     not read back-pressure the server quickly (slow-client tests).
    ///   - source: the local address to connect from (`127.0.0.2` ...): one
    ///     address has ~28,000 ephemeral ports towards one server port.
    ///   - connectTimeout: seconds the TCP connect may take (nil: the
    ///     kernel's, minutes against a host that drops the SYN).
    ///   - sendTimeout: `SO_SNDTIMEO`, seconds a send may block on a full
    ///     buffer before it fails (nil: forever).
    public init(
        host: String = "127.0.0.1", port: Int, path: String, headers: [String: String] = [:], receiveBuffer: Int32? = nil, source: String? = nil,
        connectTimeout: Double? = nil, sendTimeout: Double? = nil
    ) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ConnectionError(description: "socket: \(errno)") }
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        if let source, !Self.bind(fd, to: source) {
            let code = errno
            Glibc.close(fd)
            throw ConnectionError(description: "bind \(source): \(code)")
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &addr.sin_addr)
        if let failure = Self.connect(fd, to: addr, timeout: connectTimeout) {
            Glibc.close(fd)
            throw ConnectionError(description: failure)
        }
        if let sendTimeout {
            var limit = timeval(tv_sec: Int(sendTimeout), tv_usec: Int((sendTimeout - sendTimeout.rounded(.down)) * 1e6))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var request = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        try writeAll(Array(request.utf8))
        let head = try readHead(timeout: 10)
        let statusLine = head.split(separator: "\r\n").first ?? ""
        let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") ?? 0
        if status != 101 {
            var body = ""
            if let length = head.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") })
                .flatMap({ Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }) {
                while buffer.count < length, (try? fill(timeout: 5)) == true {}
                body = String(decoding: buffer.prefix(length), as: UTF8.self)
            }
            Glibc.close(fd)
            throw Refused(status: status, body: body)
        }
    }

    deinit { Glibc.close(fd) }

    /// Connects `fd` to `addr`, within `timeout` seconds if given (a
    /// non-blocking connect, then poll); nil, or why it failed.
    private static func connect(_ fd: Int32, to addr: sockaddr_in, timeout: Double?) -> String? {
        var addr = addr
        let flags = fcntl(fd, F_GETFL)
        if timeout != nil { _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc == 0 { return timeout == nil || fcntl(fd, F_SETFL, flags) == 0 ? nil : "fcntl: \(errno)" }
        guard let timeout, errno == EINPROGRESS else { return "connect: \(errno)" }
        var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let deadline = Date().addingTimeInterval(timeout)
        var ready: Int32
        repeat {
            ready = poll(&pfd, 1, Int32(max(0, deadline.timeIntervalSinceNow) * 1000))
        } while ready < 0 && errno == EINTR
        guard ready > 0 else { return ready == 0 ? "connect: timed out after \(timeout) s" : "poll: \(errno)" }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        if error != 0 { return "connect: \(error)" }
        return fcntl(fd, F_SETFL, flags) == 0 ? nil : "fcntl: \(errno)"
    }

    /// Binds `fd` to `address`, the port left to `connect` (`IP_BIND_ADDRESS_NO_PORT`),
    /// which picks it by the whole address pair, as without a bind.
    private static func bind(_ fd: Int32, to address: String) -> Bool {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_IP), 24 /* IP_BIND_ADDRESS_NO_PORT */, &one, socklen_t(MemoryLayout<Int32>.size))
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        guard inet_pton(AF_INET, address, &local.sin_addr) == 1 else { return false }
        return withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    private func writeAll(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ConnectionError(description: "send: \(errno)")
            }
            offset += n
        }
    }

    /// Reads more bytes into the buffer; false on timeout, throws on EOF/error.
    private func fill(timeout: Double) throws -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, Int32(timeout * 1000))
        if ready == 0 { return false }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 {
            isClosed = true
            throw ConnectionError(description: n == 0 ? "connection closed" : "recv: \(errno)")
        }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    private func readHead(timeout: Double) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        let marker: [UInt8] = [13, 10, 13, 10]
        while true {
            if let range = firstRange(of: marker) {
                let head = String(decoding: buffer[..<range], as: UTF8.self)
                buffer.removeFirst(range + 4)
                return head
            }
            guard Date() < deadline, try fill(timeout: deadline.timeIntervalSinceNow) else {
                throw ConnectionError(description: "handshake timed out")
            }
        }
    }

    private func firstRange(of marker: [UInt8]) -> Int? {
        guard buffer.count >= marker.count else { return nil }
        for i in 0...(buffer.count - marker.count) where buffer[i] == marker[0] && Array(buffer[i..<i + marker.count]) == marker {
            return i
        }
        return nil
    }

    // MARK: Frames

    /// Sends one frame. `masked: false` breaks RFC 6455 on purpose.
    public func send(opcode: Opcode, payload: [UInt8], fin: Bool = true, masked: Bool = true) throws {
        try send(firstByte: (fin ? 0x80 : 0) | opcode.rawValue, payload: payload, masked: masked)
    }

    /// A frame with any first byte: FIN, the RSV bits and the opcode, reserved ones included.
    public func send(firstByte: UInt8, payload: [UInt8], masked: Bool = true) throws {
        var frame: [UInt8] = [firstByte]
        let maskBit: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 {
            frame.append(maskBit | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            frame.append(maskBit | 126)
            frame += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            frame.append(maskBit | 127)
            for shift in stride(from: 56, through: 0, by: -8) { frame.append(UInt8((payload.count >> shift) & 0xFF)) }
        }
        if masked {
            let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
            frame += mask
            frame += payload.enumerated().map { $0.element ^ mask[$0.offset & 3] }
        } else {
            frame += payload
        }
        try writeAll(frame)
    }

    public func send(text: String) throws {
        try send(opcode: .text, payload: Array(text.utf8))
    }

    public func send(json: [String: Any]) throws {
        try send(opcode: .text, payload: [UInt8](try JSONSerialization.data(withJSONObject: json)))
    }

    /// The next data or close frame, answering pings on the way (unless told
    /// not to, to play a dead client); nil on timeout.
    public func receive(timeout: Double = 5, answerPings: Bool = true) throws -> Frame? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let frame = try parseFrame() {
                switch frame.opcode {
                case .ping:
                    if answerPings { try send(opcode: .pong, payload: frame.payload) }
                    continue
                case .pong:
                    continue
                case .close:
                    closeCode = frame.closeCode ?? 1005
                    return frame
                default:
                    return frame
                }
            }
            // A zero timeout still reads what has already arrived.
            guard try fill(timeout: max(0, deadline.timeIntervalSinceNow)) else { return nil }
        }
    }

    /// The next text frame as a JSON object; nil on timeout.
    public func receiveJSON(timeout: Double = 5) throws -> [String: Any]? {
        while let frame = try receive(timeout: timeout) {
            if frame.opcode == .close { throw ConnectionError(description: "closed with \(frame.closeCode ?? 0)") }
            if frame.opcode == .text {
                return try JSONSerialization.jsonObject(with: Data(frame.payload)) as? [String: Any]
            }
        }
        return nil
    }

    /// Waits for the next JSON event of a type, skipping others; nil on timeout.
    public func receive(type: String, timeout: Double = 5) throws -> [String: Any]? {
        let deadline = Date().addingTimeInterval(timeout)
        while deadline.timeIntervalSinceNow > 0 {
            guard let event = try receiveJSON(timeout: deadline.timeIntervalSinceNow) else { return nil }
            if event["type"] as? String == type { return event }
        }
        return nil
    }

    /// Whether the server has closed the connection (close frame or EOF) within `timeout`.
    public func waitForClose(timeout: Double, answerPings: Bool = true) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while deadline.timeIntervalSinceNow > 0 {
            do {
                guard let frame = try receive(timeout: deadline.timeIntervalSinceNow, answerPings: answerPings) else { return isClosed }
                if frame.opcode == .close { return true }
            } catch {
                return true
            }
        }
        return isClosed
    }

    private func parseFrame() throws -> Frame? {
        let available = buffer.count - start
        guard available >= 2 else { return nil }
        let opcode = Opcode(rawValue: buffer[start] & 0x0F) ?? .binary
        var length = Int(buffer[start + 1] & 0x7F)
        var offset = 2
        if length == 126 {
            guard available >= 4 else { return nil }
            length = Int(buffer[start + 2]) << 8 | Int(buffer[start + 3])
            offset = 4
        } else if length == 127 {
            guard available >= 10 else { return nil }
            length = (2..<10).reduce(0) { $0 << 8 | Int(buffer[start + $1]) }
            offset = 10
        }
        guard available >= offset + length else { return nil }
        let payload = Array(buffer[(start + offset)..<(start + offset + length)])
        start += offset + length
        // Consumed bytes are dropped in bulk, not per frame.
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 1 << 16 {
            buffer.removeFirst(start)
            start = 0
        }
        return Frame(opcode: opcode, payload: payload)
    }

    /// Drops the TCP connection without a close frame (a client that died).
    public func abort() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        shutdown(fd, Int32(SHUT_RDWR))
    }

    public func close(code: UInt16 = 1000) {
        try? send(opcode: .close, payload: [UInt8(code >> 8), UInt8(code & 0xFF)])
        shutdown(fd, Int32(SHUT_WR))
    }
}
