import ChatBus
import ChatConfig
import ChatWire
import Foundation
import Hummingbird
import HummingbirdTesting
import HTTPTypes
import NIOCore
import Testing

@testable import ChatFrontend

/// The server without its processes: the broker, one worker per role (and
/// `storeWorkers` store shards), and a frontend's bus client, all in this
/// process on `inproc://` endpoints of one ZeroMQ context, over a temporary
/// data directory; the REST router runs under Hummingbird's `.router` test
/// client. What REST answers is what `chatd serve` answers; the HTTP edge,
/// WebSockets and anything about processes are for `EndToEndTests`.
final class InProcessServer: Sendable {
    /// The port absolute links name (`config.listen`); nothing listens on it.
    let port = 8000
    let config: FrontendConfig
    let services: FrontendServices
    private let client: any TestClientProtocol
    private let auth: Authenticator
    private let events: EventLog
    let cluster: Cluster

    private init(
        config: FrontendConfig, services: FrontendServices, client: any TestClientProtocol, auth: Authenticator, events: EventLog,
        cluster: Cluster
    ) {
        self.cluster = cluster
        self.config = config
        self.services = services
        self.client = client
        self.auth = auth
        self.events = events
    }

    /// Starts everything, runs `body` against it, and stops it all again.
    /// - Parameter configure: changes to the configuration (limits, rate limits).
    static func run<Value: Sendable>(
        storeWorkers: Int = 1, configure: (inout ChatConfig) -> Void = { _ in },
        _ body: @Sendable (InProcessServer) async throws -> Value
    ) async throws -> Value {
        let cluster = try await Cluster.start(storeWorkers: storeWorkers, configure: configure)
        let app = Application(router: Frontend.buildRouter(services: cluster.services), logger: cluster.logger)
        do {
            let value = try await app.test(.router) { client in
                try await body(InProcessServer(
                    config: cluster.config, services: cluster.services, client: client, auth: cluster.auth, events: cluster.events,
                    cluster: cluster
                ))
            }
            await cluster.stop()
            return value
        } catch {
            await cluster.stop()
            throw error
        }
    }

    /// The data directory (database, search index, staging, files).
    var dataDir: String { config.chat.dataDir }

    /// Subscribes the frontend's bus client to a room's events, as a
    /// WebSocket handshake does: only then does `roomEvents` get them.
    func watch(room: String) async throws {
        guard case .success = await services.bus.subscribe(room: room) else { throw TestFailure("no subscription to \(room)") }
    }

    /// Room events the workers published so far (what WebSockets would get), oldest first.
    var roomEvents: [RoomEvent] { events.events.withLock { $0 } }

    /// The `type` of each room event published for `room`, oldest first.
    func eventTypes(room: String) -> [String] {
        roomEvents.filter { $0.roomID == room }.compactMap { event in
            (try? JSONSerialization.jsonObject(with: Data(event.body)) as? [String: Any])?["type"] as? String
        }
    }

    /// The first room event of `type` published for `room`, waited for as a
    /// WebSocket client waits for it (up to `timeout` seconds); nil if none came.
    func event(room: String, type: String, timeout: Double = 10) async throws -> [String: Any]? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let found = roomEvents.lazy.filter { $0.roomID == room }.compactMap { event in
                try? JSONSerialization.jsonObject(with: Data(event.body)) as? [String: Any]
            }.first { $0["type"] as? String == type }
            if let found { return found }
            if Date() >= deadline { return nil }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    func token(sub: String, email: String? = nil, name: String? = nil, expiresIn: Double = 3600) async throws -> String {
        try await auth.mint(ChatClaims(sub: sub, expires: Date().addingTimeInterval(expiresIn), email: email ?? "\(sub)@example.com", name: name))
    }

    struct HTTPResult: @unchecked Sendable {
        var status: Int
        var body: Data
        /// Lowercased names.
        var headers: [String: String]
        var json: Any? { try? JSONSerialization.jsonObject(with: body) }
        var object: [String: Any] { (json as? [String: Any]) ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// One request to the router, as `TestServer.request` makes one to a server.
    func request(
        _ method: String, _ path: String, token: String? = nil, json: Any? = nil, body: Data? = nil, headers: [String: String] = [:]
    ) async throws -> HTTPResult {
        var fields = HTTPFields()
        var payload = body
        if let token { fields[.authorization] = "Bearer \(token)" }
        if let json {
            payload = try JSONSerialization.data(withJSONObject: json)
            fields[.contentType] = "application/json"
        }
        if let body { payload = body }
        for (name, value) in headers {
            guard let field = HTTPField.Name(name) else { throw TestFailure("bad header name \(name)") }
            fields[field] = value
        }
        let response = try await client.executeRequest(
            uri: path, method: HTTPRequest.Method(method)!, headers: fields, body: payload.map { ByteBuffer(bytes: $0) }
        )
        var result: [String: String] = [:]
        for field in response.headers { result[field.name.canonicalName] = field.value }
        return HTTPResult(status: response.status.code, body: Data(response.body.readableBytesView), headers: result)
    }

    /// Polls `condition` until it holds or `timeout` passes.
    func waitUntil(timeout: Double = 10, _ what: String = "condition", _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("timed out waiting for \(what)")
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
