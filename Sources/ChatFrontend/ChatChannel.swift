import ChatBus
import ChatCore
import ChatWire
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import Synchronization

/// What the frontend's handlers share: config, bus, authenticator, connections.
public struct FrontendServices: Sendable {
    public let config: FrontendConfig
    public let logger: Logger
    public let bus: BusClient
    public let auth: Authenticator
    public let connections: ConnectionRegistry
    public let health: HealthState
    /// Nil with `rateLimits: off`.
    let limiter: RateLimiter?
    /// Open WebSockets, and the close code of a shutdown.
    let life = FrontendLife()
    /// The rooms of recent calls (`CallRoutes`).
    let callRooms = CallRooms()
    /// The tree's metrics as the supervisor last published them (`MetricsRoutes`).
    var metrics = MetricsBoard()
    /// Nil with `accessLog: false` (the default).
    var accessLog: AccessLog? = nil
}

/// HTTP/1.1 with a WebSocket upgrade, on Hummingbird's server. Unlike
/// hummingbird-websocket's channel, an upgraded connection is not handed to
/// a task: it lives in `WebSocketConnection`, a plain NIO handler, so an idle
/// connection costs its channel and a few hundred bytes of state.
struct ChatChannel: ServerChildChannel, HTTPChannelHandler {
    enum UpgradeResult: Sendable {
        case websocket
        case notUpgraded(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, HTTPResponse.Status, [UInt8])
    }

    struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        let channel: any Channel
        /// The user whose socket slot an accepted handshake reserved, until
        /// `WebSocketConnection` takes it; given back if no socket opens.
        let reservation: Reservation
    }

    /// The user whose socket slot a handshake holds, and the room whose
    /// events subscription it holds, shared by the loop's upgrade callbacks
    /// and the connection's task until `WebSocketConnection` takes them.
    final class Reservation: Sendable {
        /// What an accepted handshake holds until its socket opens: the
        /// room's subscription, the user's socket slot and the access-log
        /// line. `over` once the connection's task ended: whatever arrives
        /// later (a client that left while it was authorised) is given back
        /// by its caller, not kept where nobody would release it.
        private let held = Mutex<(room: String?, user: String?, line: (@Sendable (Int) -> Void)?, over: Bool)>((nil, nil, nil, false))

        /// Keeps the accepted handshake's room subscription; false (the
        /// caller gives it back) when the connection already ended.
        func hold(room: String) -> Bool {
            held.withLock { state in
                guard !state.over else { return false }
                state.room = room
                return true
            }
        }

        /// Keeps the user's socket slot; false (the caller gives it back)
        /// when the connection already ended.
        func hold(user: String) -> Bool {
            held.withLock { state in
                guard !state.over else { return false }
                state.user = user
                return true
            }
        }

        /// The room subscription, taken over by the connection.
        func takeRoom() -> String? {
            held.withLock { state in
                defer { state.room = nil }
                return state.room
            }
        }

        /// The socket slot, taken over by the connection.
        func takeUser() {
            held.withLock { $0.user = nil }
        }

        /// An accepted handshake's access-log line, written once the socket
        /// opens (101) or fails to (500); at once with 500 when the
        /// connection already ended.
        func awaitOpening(log: @escaping @Sendable (Int) -> Void) {
            let late = held.withLock { state -> Bool in
                guard !state.over else { return true }
                state.line = log
                return false
            }
            if late { log(500) }
        }

        /// Writes the pending handshake line, if any, with `status`.
        func opened(status: Int) {
            held.withLock { state in defer { state.line = nil }; return state.line }?(status)
        }

        /// The connection's task ended: what is still held is given back
        /// (a pending handshake line is written with 500).
        func end() -> (room: String?, user: String?) {
            let (room, user, line) = held.withLock { state in
                state.over = true
                defer { (state.room, state.user, state.line) = (nil, nil, nil) }
                return (state.room, state.user, state.line)
            }
            line?(500)
            return (room, user)
        }
    }

    /// The handshake's verdict, between `shouldUpgrade` and the pipeline setup.
    enum Verdict {
        case none
        case accepted(Identity, [UInt8], Requests.Session, expires: Date)
        case refused(HTTPResponse.Status, [UInt8])
    }

    let responder: HTTPChannelHandler.Responder
    let services: FrontendServices
    let logger: Logger

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let verdict = NIOLoopBoundBox(Verdict.none, eventLoop: channel.eventLoop)
            return try self.configure(channel: channel, verdict: verdict)
        }
    }

    private func configure(channel: any Channel, verdict: NIOLoopBoundBox<Verdict>) throws -> Value {
        let services = self.services
        let logger = self.logger
        let chat = services.config.chat
        let edge = HTTPEdge(limits: HTTPEdgeLimits(
            maxURLBytes: chat.maxURLBytes,
            headTimeout: .nanoseconds(Int64(chat.headTimeoutSeconds * 1e9)),
            bodyTimeout: .nanoseconds(Int64(chat.bodyTimeoutSeconds * 1e9)),
            keepAliveTimeout: .nanoseconds(Int64(chat.keepAliveTimeoutSeconds * 1e9))
        ))
        let edgeBox = NIOLoopBound(edge, eventLoop: channel.eventLoop)
        let reservation = Reservation()
        let upgrader = NIOTypedWebSocketServerUpgrader<UpgradeResult>(
            maxFrameSize: services.config.chat.maxFrameBytes,
            // WebSocketConnection answers decoder errors itself: one close frame, not two.
            enableAutomaticErrorHandling: false,
            shouldUpgrade: { channel, head in
                let started = services.accessLog == nil ? 0 : monotonicNanos()
                let loop = channel.eventLoop
                let promise = loop.makePromise(of: Verdict.self)
                let peer = channel.remoteAddress
                promise.completeWithTask {
                    let verdict = await Self.authorize(head: head, peer: peer, services: services)
                    // The room's events subscription, taken in `enter`, is
                    // held here until the socket opens or the upgrade fails.
                    if case .accepted(_, _, let session, _) = verdict, !reservation.hold(room: session.roomID) {
                        services.bus.unsubscribe(room: session.roomID)
                    }
                    return verdict
                }
                return promise.futureResult.flatMapThrowing { result in
                    verdict.value = result
                    if let access = services.accessLog {
                        // An accepted handshake is logged once its socket is set up (or could not be).
                        if case .accepted = result {
                            reservation.awaitOpening { Self.logHandshake(access, head: head, status: $0, bytes: 0, started: started, remote: peer) }
                        } else {
                            Self.logHandshake(access, head: head, verdict: result, started: started, remote: peer)
                        }
                    }
                    guard case .accepted(let identity, _, _, _) = result else { return nil }
                    if let limiter = services.limiter, !reservation.hold(user: identity.id) {
                        limiter.socketClosed(user: identity.id)
                    }
                    // The edge leaves before the upgrade starts: removing the
                    // decoder hands the bytes after the head on as bytes, which
                    // only the WebSocket handlers may receive.
                    edgeBox.value.remove(from: channel.pipeline.syncOperations)
                    return HTTPHeaders()
                }
            },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    do {
                        try Self.openWebSocket(on: channel, verdict: verdict.value, reservation: reservation, services: services)
                        reservation.opened(status: 101)
                        return UpgradeResult.websocket
                    } catch {
                        // Answered 101 by the upgrade, but no socket serves it.
                        reservation.opened(status: 500)
                        throw error
                    }
                }
            }
        )
        let configuration = NIOTypedHTTPServerUpgradeConfiguration<UpgradeResult>(
            upgraders: [upgrader],
            notUpgradingCompletionHandler: { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                    // Closes idle keep-alive connections on shutdown and after
                    // the idle timeout, as Hummingbird's own HTTP1 channel does.
                    try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: .seconds(120), logger: logger))
                    let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(isOutboundHalfClosureEnabled: true)
                    )
                    if case .refused(let status, let body) = verdict.value {
                        return UpgradeResult.refused(asyncChannel, status, body)
                    }
                    return UpgradeResult.notUpgraded(asyncChannel)
                }
            }
        )
        var pipeline = NIOUpgradableHTTPServerPipelineConfiguration<UpgradeResult>(upgradeConfiguration: configuration)
        pipeline.enablePipelining = false
        pipeline.enableErrorHandling = false
        pipeline.enableResponseHeaderValidation = false
        // Headers over 64 KiB or 100 fields are refused (api-contract.md "Limits").
        pipeline.decoderConfiguration.maxHeaderListSize = chat.maxHeaderBytes
        pipeline.decoderConfiguration.maxHeaderFieldSize = chat.maxHeaderBytes
        pipeline.decoderConfiguration.maxHeaderFieldCount = chat.maxHeaderCount
        let future = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: pipeline)
        try edge.install(in: channel.pipeline.syncOperations)
        return Value(upgradeResult: future, channel: channel, reservation: reservation)
    }

    /// The accepted socket's handlers, after the upgrade removed HTTP's.
    private static func openWebSocket(
        on channel: any Channel, verdict: Verdict, reservation: Reservation, services: FrontendServices
    ) throws {
        guard case .accepted(let identity, let identityJSON, let session, let expires) = verdict else {
            throw ChannelError.inappropriateOperationForState
        }
        // NIO's decoder keeps partial frames out of reach: it gets
        // whole messages only, the rest waits where a handover finds it.
        let hold = HandoverHold(pending: channel.allocator.buffer(capacity: 0))
        let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self)
        try channel.pipeline.syncOperations.addHandler(
            HandoverGate(hold: hold, maxFrameSize: services.config.chat.maxFrameBytes), position: .before(decoder)
        )
        try Self.addWebSocketHandlers(to: channel, services: services)
        // No socket without the room's subscription: it would miss events.
        guard let room = reservation.takeRoom() else { throw ChannelError.inappropriateOperationForState }
        do {
            try channel.pipeline.syncOperations.addHandler(
                WebSocketConnection(
                    identity: identity, identityJSON: identityJSON, session: session, expires: expires, services: services, hold: hold
                )
            )
        } catch {
            services.bus.unsubscribe(room: room)
            throw error
        }
        // The connection owns the slot and the subscription now and gives them back when it ends.
        reservation.takeUser()
    }

    /// The handlers between a WebSocket's frame decoder and its
    /// `WebSocketConnection`, and its outbound limit: for an upgraded socket
    /// and for one a handover brought.
    static func addWebSocketHandlers(to channel: any Channel, services: FrontendServices) throws {
        // RFC 6455 checks on each frame, before fragments are put together.
        try channel.pipeline.syncOperations.addHandler(WebSocketFrameGuard())
        try channel.pipeline.syncOperations.addHandler(
            NIOWebSocketFrameAggregator(
                minNonFinalFragmentSize: 0,
                maxAccumulatedFrameCount: 256,
                maxAccumulatedFrameSize: services.config.chat.maxFrameBytes
            )
        )
        // A client that stops reading may hold this much before it is cut off.
        let limit = services.config.chat.maxOutboundBytes
        try channel.syncOptions?.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: limit / 2, high: limit))
        // Half the idle timeout without a frame: ping; the other half: close (1001).
        let idle = TimeAmount.milliseconds(Int64(services.config.chat.idleTimeoutSeconds * 500))
        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: idle))
    }

    func handle(value: Value, logger: Logger) async {
        // A slot reserved, a room subscribed, by a handshake whose socket never opened.
        defer {
            // Accepted, but the upgrade never reached the socket's setup:
            // its line says 500, its slot and subscription are given back.
            let (room, user) = value.reservation.end()
            if let user { services.limiter?.socketClosed(user: user) }
            if let room { services.bus.unsubscribe(room: room) }
        }
        do {
            switch try await value.upgradeResult.get() {
            case .websocket:
                FrontendMetrics.handshakesAccepted.increment()
                // The connection lives on in its channel handlers.
                return
            case .notUpgraded(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http, let status, let body):
                FrontendMetrics.handshakesRefused.increment()
                try await http.executeThenClose { _, outbound in
                    let head = HTTPResponse(status: status, headerFields: [
                        .contentType: "application/json", .contentLength: String(body.count), .connection: "close",
                    ])
                    try await outbound.write(contentsOf: [.head(head), .body(ByteBuffer(bytes: body)), .end(nil)])
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// Authenticates a WebSocket handshake and asks the room's shard whether
    /// the user may enter (joining a public room on the way).
    static func authorize(head: HTTPRequestHead, peer: SocketAddress?, services: FrontendServices) async -> Verdict {
        let (path, query) = splitURI(head.uri)
        let parts = path.split(separator: "/")
        // /ws/chat/<room id>/ or /ws/direct/<user id>/ (the direct room, made on first use).
        guard parts.count == 3, parts[0] == "ws", parts[1] == "chat" || parts[1] == "direct", let target = IDs.canonical(String(parts[2])) else {
            return .refused(.notFound, ClientJSON.detail("Not found."))
        }
        // As a REST request's (AuthenticatorMiddleware.refuseNUL): the session's type is stored.
        if query.contains(where: { Validation.hasNUL($0.key) || Validation.hasNUL($0.value) }) {
            return .refused(.badRequest, ClientJSON.detail("Query parameters must not contain NUL characters."))
        }
        let ip: String? = switch peer {
        case .v4(let address)?: address.host
        case .v6(let address)?: address.host
        default: nil
        }
        if let limiter = services.limiter, let wait = limiter.handshake(ip: ip ?? "").retryAfterSeconds {
            return .refused(.tooManyRequests, ClientJSON.detail("Too many connection attempts, retry in \(wait) s."))
        }
        let verified: Authenticator.Verified
        do {
            let token = try Authenticator.bearerToken(values: head.headers["Authorization"]) ?? query["token"]
            verified = try await services.auth.verify(token: token)
        } catch {
            return .refused(.unauthorized, ClientJSON.detail(error.detail))
        }
        // A slot is taken now, atomically, so concurrent handshakes cannot
        // pass the limit together; it is given back unless a socket opens.
        if let limiter = services.limiter, !limiter.reserveSocket(user: verified.identity.id) {
            return .refused(.tooManyRequests, ClientJSON.detail("Too many open connections (at most \(limiter.socketsPerUser))."))
        }
        let verdict = await enter(target: target, direct: parts[1] == "direct", verified: verified, head: head, query: query, ip: ip, services: services)
        if case .refused = verdict { services.limiter?.socketClosed(user: verified.identity.id) }
        return verdict
    }

    /// The rest of a handshake, once the caller is known: the room, made on
    /// first use for a direct one, and the shard's leave to enter it.
    private static func enter(
        target: String, direct: Bool, verified: Authenticator.Verified, head: HTTPRequestHead, query: [String: String], ip: String?,
        services: FrontendServices
    ) async -> Verdict {
        guard !services.life.isStopping else { return .refused(.serviceUnavailable, APIError.unavailable.body) }
        // Encoded once per token, when it was verified: a JSONEncoder here
        // was ~2% of the frontend's CPU per handshake.
        let identity = verified.identity, identityJSON = verified.identityJSON
        guard !identityJSON.isEmpty else {
            return .refused(.internalServerError, ClientJSON.detail("A server error occurred."))
        }
        // The client's device (issue 17): a UUID, or none.
        var device: String?
        if let raw = query["device_id"], !raw.isEmpty {
            guard let id = IDs.canonical(raw) else { return .refused(.badRequest, ClientJSON.detail("device_id must be a UUID.")) }
            device = id
        }
        var roomID = target
        if direct {
            guard target != identity.id else { return .refused(.forbidden, ClientJSON.detail("Cannot open a direct room with yourself.")) }
            let pair = [identity.id, target].sorted().joined(separator: "|")
            let body = (try? JSONEncoder().encode(Requests.RoomDirect(userID: target, newRoomID: IDs.uuid7()))) ?? Data()
            switch await services.bus.request(.roomOpenDirect, to: .store(key: pair), user: identityJSON, body: [UInt8](body)) {
            case .success(let reply) where reply.status == .ok || reply.status == .created:
                guard let room = try? JSONDecoder().decode(Requests.RoomRef.self, from: Data(reply.body)) else {
                    return .refused(.internalServerError, ClientJSON.detail("A server error occurred."))
                }
                roomID = room.roomID
            case .success(let reply):
                return .refused(reply.status == .notFound ? .notFound : .forbidden, APIError.rendered(reply).1)
            case .failure:
                return .refused(.serviceUnavailable, APIError.unavailable.body)
            }
        }
        let result = await services.bus.request(.roomEnter, to: .store(key: roomID), user: identityJSON, body: Requests.RoomRef(roomID: roomID).commandBytes)
        switch result {
        case .success(let reply) where reply.status == .ok:
            // Before the socket is accepted: every event of the room
            // published from now on reaches this frontend.
            guard case .success = await services.bus.subscribe(room: roomID) else {
                return .refused(.serviceUnavailable, APIError.unavailable.body)
            }
            // The server's shutdown began while this handshake waited: the
            // sockets it closed did not include this one, so none opens.
            guard !services.life.isStopping else {
                services.bus.unsubscribe(room: roomID)
                return .refused(.serviceUnavailable, APIError.unavailable.body)
            }
            let session = Requests.Session(
                sessionID: UUID().uuidString.lowercased(), roomID: roomID,
                sessionType: String((query["session_type"].flatMap { $0.isEmpty ? nil : $0 } ?? "web").prefix(20)),
                userAgent: head.headers.first(name: "User-Agent") ?? "", ipAddress: ip, frontend: services.config.sessionOwner,
                deviceID: device
            )
            return .accepted(identity, identityJSON, session, expires: verified.expires)
        case .success(let reply):
            let (status, body) = APIError.rendered(reply)
            return .refused(status, body)
        case .failure:
            return .refused(.serviceUnavailable, APIError.unavailable.body)
        }
    }

    /// A refused handshake in the access log (an accepted one is logged as its socket opens).
    static func logHandshake(_ access: AccessLog, head: HTTPRequestHead, verdict: Verdict, started: UInt64, remote: SocketAddress?) {
        let (status, bytes): (Int, Int) = switch verdict {
        case .accepted: (101, 0)
        case .refused(let status, let body): (status.code, body.count)
        case .none: (500, 0)
        }
        logHandshake(access, head: head, status: status, bytes: bytes, started: started, remote: remote)
    }

    /// A handshake in the access log: 101 as the socket opens, 500 if it
    /// could not be set up, or the refusal.
    static func logHandshake(_ access: AccessLog, head: HTTPRequestHead, status: Int, bytes: Int, started: UInt64, remote: SocketAddress?) {
        access.record(
            method: head.method.rawValue, target: head.uri, status: status, bytes: bytes, started: started, remote: remote,
            requestID: head.headers.first(name: "X-Request-ID")
        )
    }

    static func splitURI(_ uri: String) -> (path: Substring, query: [String: String]) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri[...], [:]) }
        return (uri[..<mark], QueryString.parse(uri[uri.index(after: mark)...]))
    }
}
