import ChatBus
import Foundation
import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import Synchronization

/// `accessLog: true`: one info line per HTTP request, and one per WebSocket
/// handshake (status 101 when the socket opens, or the refusal's status),
/// under the label `chatd.access`. A query's `token=` value (how browsers
/// authenticate a WebSocket) is replaced by `REDACTED`; the Authorization
/// header is never read. Off (nil), the request path pays one nil check.
struct AccessLog: Sendable {
    static let label = "chatd.access"
    /// A proxy's request id, logged when the request carries one.
    static let requestIDField = HTTPField.Name("X-Request-ID")!

    let logger: Logger

    init() {
        var logger = Logger(label: Self.label)
        // Asked for by name: written at info whatever `logLevel` says.
        logger.logLevel = .info
        self.logger = logger
    }

    /// One request: `started` is `monotonicNanos()` when its head was read.
    func record(method: String, target: String, status: Int, bytes: Int?, started: UInt64, remote: SocketAddress?, requestID: String?) {
        let millis = Double(monotonicNanos() &- started) / 1e6
        let path = Self.redacted(target)
        var metadata: Logger.Metadata = [
            "method": "\(method)", "path": "\(path)", "status": "\(status)", "bytes": "\(bytes.map(String.init) ?? "-")",
            "duration_ms": "\((millis * 10).rounded() / 10)", "remote": "\(Self.describe(remote))",
        ]
        if let requestID { metadata["request_id"] = "\(requestID)" }
        logger.info("\(method) \(path) \(status)", metadata: metadata)
    }

    /// The request target with every `token` parameter's value (by its
    /// decoded name, as the handshake reads it) replaced.
    static func redacted(_ target: String) -> String {
        guard let mark = target.firstIndex(of: "?") else { return target }
        let query = target[target.index(after: mark)...]
        guard query.contains("=") else { return target }
        let pairs = query.split(separator: "&", omittingEmptySubsequences: false).map { pair -> String in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, QueryString.decode(parts[0]) == "token" else { return String(pair) }
            return "\(parts[0])=REDACTED"
        }
        return String(target[...mark]) + pairs.joined(separator: "&")
    }

    /// `127.0.0.1:51234`, `[::1]:51234`, or `-`.
    static func describe(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress else { return "-" }
        let port = address.port.map { ":\($0)" } ?? ""
        if case .v6 = address { return "[\(ip)]\(port)" }
        return ip + port
    }

    /// `body` as it goes out, and the bytes it sent: its length when it is
    /// known beforehand, else counted as its pieces are written.
    static func counting(_ body: ResponseBody) -> (ResponseBody, @Sendable () -> Int?) {
        if let length = body.contentLength { return (body, { length }) }
        let counter = Counter()
        let mapped = body.map { buffer in
            counter.add(buffer.readableBytes)
            return buffer
        }
        return (mapped, { counter.total })
    }

    final class Counter: Sendable {
        private let bytes = Atomic<Int>(0)
        func add(_ count: Int) { bytes.add(count, ordering: .relaxed) }
        var total: Int { bytes.load(ordering: .relaxed) }
    }
}
