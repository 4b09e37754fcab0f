import ChatWire
import Hummingbird

/// `/healthz`: open to anyone; 200 once every worker the frontend needs sent
/// a heartbeat lately, 503 before.
struct HealthRoutes: Sendable {
    let api: ChatAPI

    var routes: [ChatAPI.Route] {
        [ChatAPI.Route(.get, "/healthz", .open, healthz)]
    }

    func healthz(_ request: Request, context: ChatAPI.Context) async throws -> Response {
        let workers = (0..<api.services.bus.storeShards).map { WorkerName(.store, $0) } + [.receipts, .search, .files].map { WorkerName($0, 0) }
        let expected = workers.map(\.description)
        return api.services.health.allAlive(expected)
            ? Response.json(.ok, Array(#"{"status":"ok"}"#.utf8))
            : Response.json(.serviceUnavailable, Array(#"{"status":"starting"}"#.utf8))
    }
}
