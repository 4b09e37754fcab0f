import ChatMetrics
import Hummingbird
import NIOCore
import Synchronization

/// `GET /metrics`: every process's metrics in Prometheus text format
/// (docs/metrics.md), open to anyone like `/healthz` (counts only); absent
/// with `metrics: false`. The document is the supervisor's merge of every
/// process's report, as its broker last published it; before the first one
/// arrives (or with no supervisor: in-process tests) this process's own.
struct MetricsRoutes: Sendable {
    let api: ChatAPI

    var routes: [ChatAPI.Route] {
        guard api.services.config.chat.metrics else { return [] }
        let board = api.services.metrics
        let slot = api.services.config.slot
        return [.init(.get, "/metrics", .open, { _, _ in Self.response(board.document ?? Self.ownDocument(slot: slot)) })]
    }

    /// Prometheus's text format, version 0.0.4.
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    static func response(_ document: ByteBuffer) -> Response {
        Response(status: .ok, headers: [.contentType: contentType], body: ResponseBody(byteBuffer: document))
    }

    /// This process's series alone, labelled as the supervisor would.
    static func ownDocument(slot: String) -> ByteBuffer {
        var merged = Exposition()
        merged.merge(Exposition(parsing: ChatMetrics.text()), labelledWith: [.init("role", "frontend"), .init("process", slot)])
        return ByteBuffer(string: merged.rendered())
    }
}

/// The latest merged document from the bus (`BusClient.Callbacks.metrics`).
public final class MetricsBoard: Sendable {
    /// A buffer, copied once here: every request shares it (copy on write).
    private let latest = Mutex<ByteBuffer?>(nil)

    public init() {}

    /// Called on the bus thread, every 5 s: a swap under the lock, nothing more.
    func store(_ document: [UInt8]) {
        let buffer = ByteBuffer(bytes: document)
        latest.withLock { $0 = buffer }
    }

    var document: ByteBuffer? { latest.withLock { $0 } }
}
