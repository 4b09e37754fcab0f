import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A webhook receiver on 127.0.0.1 for the end-to-end tests: records every
/// POST (headers, body, when) and answers each as `answer` says (a status,
/// or never: the connection stays open until the receiver stops).
public final class WebhookReceiver: @unchecked Sendable {
    public struct Received: Sendable {
        public var path: String
        public var headers: [String: String]
        public var body: Data
        public var at: Date
    }

    public enum Answer: Sendable {
        case status(Int)
        /// Read the request, answer nothing (a receiver that hangs).
        case never
    }

    public let port: Int
    private let listener: Int32
    private let lock = NSLock()
    private var received: [Received] = []
    private var stopped = false
    private var held: [Int32] = []
    private let answer: @Sendable (Received, Int) -> Answer

    /// `answer` gets each request and how many came before it.
    public init(answer: @escaping @Sendable (Received, Int) -> Answer = { _, _ in .status(200) }) throws {
        self.answer = answer
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestServerError(description: "socket: \(errno)") }
        var address = TestServer.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound, listen(fd, 64) == 0 else {
            close(fd)
            throw TestServerError(description: "bind/listen: \(errno)")
        }
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread { [self] in serve() }.start()
    }

    public func url(_ path: String = "/hook") -> String { "http://127.0.0.1:\(port)\(path)" }

    /// Every request so far, in arrival order.
    public var requests: [Received] { lock.withLock { received } }

    /// Stops accepting; closes the connections it held open.
    public func stop() {
        let fds = lock.withLock { () -> [Int32] in
            guard !stopped else { return [] }
            stopped = true
            return held
        }
        for fd in fds { close(fd) }
    }

    deinit { stop() }

    private func serve() {
        while !lock.withLock({ stopped }) {
            var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 50) > 0 else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            // One thread per connection: a held one must not stop the others.
            Thread { [self] in handle(client) }.start()
        }
        close(listener)
    }

    private func handle(_ client: Int32) {
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard let request = read(client) else {
            close(client)
            return
        }
        let index = lock.withLock { () -> Int in
            received.append(request)
            return received.count - 1
        }
        switch answer(request, index) {
        case .never:
            lock.withLock { held.append(client) }
        case .status(let code):
            let response = "HTTP/1.1 \(code) X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            _ = Array(response.utf8).withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            close(client)
        }
    }

    /// One request: its head, then `Content-Length` bytes of body.
    private func read(_ client: Int32) -> Received? {
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 8192)
        var headEnd: Int?
        var length = 0
        while data.count < 1 << 20 {
            if let end = headEnd, data.count >= end + length { break }
            let n = chunk.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return nil }
            data += chunk[0..<n]
            if headEnd == nil, let range = Data(data).range(of: Data("\r\n\r\n".utf8)) {
                headEnd = range.upperBound
                let head = String(decoding: data[0..<range.lowerBound], as: UTF8.self)
                for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
                    length = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
        }
        guard let end = headEnd else { return nil }
        let lines = String(decoding: data[0..<(end - 4)], as: UTF8.self).split(separator: "\r\n")
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let path = lines.first.map { $0.split(separator: " ").dropFirst().first.map(String.init) ?? "" } ?? ""
        return Received(path: path, headers: headers, body: Data(data[end..<min(data.count, end + length)]), at: Date())
    }
}
