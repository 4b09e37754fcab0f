import ChatBus
import ChatCore
import ChatWire
import Foundation
import Hummingbird
import NIOCore

/// The REST endpoints, one resource per file in `Routes/`. Each route runs
/// behind the middleware of its access rule (`AuthenticatorMiddleware`), checks
/// the request's shape, and forwards a command to a worker; the worker's reply
/// is the response. What the resources share lives here.
struct ChatAPI: Sendable {
    typealias Context = ChatRequestContext
    typealias Handler = @Sendable (Request, Context) async throws -> Response
    let services: FrontendServices

    /// One endpoint: method, path, who may call it, handler.
    struct Route: Sendable {
        var method: HTTPRequest.Method
        var path: String
        var access: RouteAccess
        var handler: Handler

        init(_ method: HTTPRequest.Method, _ path: String, _ access: RouteAccess, _ handler: @escaping Handler) {
            (self.method, self.path, self.access, self.handler) = (method, path, access, handler)
        }

        /// A route for callers with a token, taking JSON bodies.
        init(_ method: HTTPRequest.Method, _ path: String, _ handler: @escaping Handler) {
            self.init(method, path, .json, handler)
        }
    }

    /// The routes of each resource.
    var resources: [[Route]] {
        [
            HealthRoutes(api: self).routes, RoomRoutes(api: self).routes, MessageRoutes(api: self).routes,
            ReceiptRoutes(api: self).routes, SearchRoutes(api: self).routes, FileRoutes(api: self).routes,
            OpenAPIRoutes(api: self).routes, MetricsRoutes(api: self).routes, WebClientRoutes(api: self).routes,
            RoleRoutes(api: self).routes,
            PrefsRoutes(api: self).routes,
            UserRoutes(api: self).routes,
            WebhookRoutes(api: self).routes,
            CallRoutes(api: self).routes,
            KeyRoutes(api: self).routes,
        ]
    }

    /// Every endpoint. The router is built from it, and so is the `Allow` header of a `405`.
    var routes: [Route] { resources.flatMap { $0 } }

    func buildRouter() -> Router<Context> {
        let router = Router(context: Context.self)
        // RFC 9110 9.3.2: HEAD wherever GET is; the encoder leaves the body out.
        func withHead(_ routes: [Route]) -> [Route] {
            routes.flatMap { route in route.method == .get ? [route, Route(.head, route.path, route.access, route.handler)] : [route] }
        }
        router.add(middleware: JSONErrorMiddleware(allowed: AllowedMethods(withHead(routes).map { ($0.method, $0.path) })))
        for resource in resources { register(withHead(resource), on: router) }
        return router
    }

    /// Registers one resource's routes on groups of the router, one group per
    /// access rule, so that each route runs behind its rule's middleware.
    private func register(_ routes: [Route], on router: Router<Context>) {
        var groups: [RouteAccess: RouterGroup<Context>] = [:]
        for route in routes {
            let group = groups[route.access] ?? makeGroup(route.access, on: router)
            groups[route.access] = group
            group.on(RouterPath(route.path), method: route.method, use: route.handler)
        }
    }

    private func makeGroup(_ access: RouteAccess, on router: Router<Context>) -> RouterGroup<Context> {
        let group = router.group()
        switch access {
        case .open: break
        case .json: group.add(middleware: AuthenticatorMiddleware(services: services, multipart: false))
        case .jsonOrMultipart: group.add(middleware: AuthenticatorMiddleware(services: services, multipart: true))
        }
        return group
    }

    // MARK: Helpers

    /// A command about a room that carries nothing but the room.
    func roomAction(_ kind: CommandKind, _ context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try roomID(context)
        return try await forward(kind, shardKey: room, caller: caller, body: Requests.RoomRef(roomID: room))
    }

    /// A command about a message that carries nothing but the message.
    func messageAction(_ kind: CommandKind, _ context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let ref = try messageRef(context)
        return try await forward(kind, shardKey: ref.roomID, caller: caller, body: ref)
    }

    /// `participant_ids`: a list of at most `maxParticipants` UUIDs.
    func participantIDs(_ value: Any?, errors: inout [(field: String, message: String)]) -> [String] {
        guard let value, !(value is NSNull) else { return [] }
        guard let list = value as? [Any] else {
            errors.append(("participant_ids", "Expected a list of items but got type \"\(Self.typeName(value))\"."))
            return []
        }
        let limit = services.config.chat.maxParticipants
        guard list.count <= limit else {
            errors.append(("participant_ids", "Ensure this field has no more than \(limit) elements."))
            return []
        }
        var ids: [String] = []
        for item in list {
            guard let text = item as? String, let id = IDs.canonical(text) else {
                errors.append(("participant_ids", "Must be a valid UUID."))
                return []
            }
            ids.append(id)
        }
        return ids
    }

    func messageRef(_ context: Context) throws -> Requests.MessageRef {
        let room = try roomID(context)
        guard let raw = context.parameters.get("message"), let id = IDs.canonical(raw) else {
            throw APIError(.notFound, detail: "Not found.")
        }
        return Requests.MessageRef(roomID: room, messageID: id)
    }


    func roomID(_ context: Context) throws -> String {
        try pathID("room", context)
    }

    /// The path's `:name` id, canonical. A path id that is not a UUID is 404
    /// (api-contract.md "Timestamps and ids").
    func pathID(_ name: String, _ context: Context) throws -> String {
        guard let raw = context.parameters.get(name), let id = IDs.canonical(raw) else {
            throw APIError(.notFound, detail: "Not found.")
        }
        return id
    }

    /// DRF page-number pagination parameters and the absolute URL for links.
    func page(_ request: Request) throws -> Requests.Page {
        let query = Self.query(request)
        var number = 1
        if let raw = query["page"] {
            guard let value = Int(raw), value >= 1 else { throw APIError(.notFound, detail: "Invalid page.") }
            number = value
        }
        var size = 50
        if let raw = query["page_size"] {
            // As DRF's `_positive_int(cutoff=100)`: any positive integer, however
            // long, is capped at 100; anything else leaves the default.
            if let value = Int(raw) {
                if value > 0 { size = min(value, 100) }
            } else {
                let digits = raw.first == "+" ? raw.dropFirst() : raw[...]
                if !digits.isEmpty && digits.allSatisfy({ $0.isASCII && $0.isNumber }) { size = 100 }
            }
        }
        let items = query.map { [$0.key, $0.value] }.filter { $0[0] != "page" }
        return Requests.Page(page: number, pageSize: size, url: services.config.chat.linkBase + request.uri.path, query: items)
    }

    /// The request's query parameters, `+` read as a space.
    static func query(_ request: Request) -> [String: String] {
        QueryString.parse(request.uri.query.map { $0[...] } ?? "")
    }

    /// The JSON object of a request body, with DRF's refusals for everything else.
    func jsonObject(_ request: Request) async throws -> [String: Any] {
        let contentType = request.headers[.contentType] ?? ""
        guard AuthenticatorMiddleware.mediaType(contentType) == "application/json" else {
            throw APIError(.unsupportedMediaType, detail: "Unsupported media type \"\(contentType)\" in request.")
        }
        let limit = services.config.chat.maxBodyBytes
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch {
            throw APIError(.contentTooLarge, detail: "Request body exceeds \(limit) bytes.")
        }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(buffer.readableBytesView), options: [])
        } catch {
            throw APIError(.badRequest, detail: "JSON parse error - \(Self.describe(error))")
        }
        guard let object = parsed as? [String: Any] else {
            throw APIError.fields([("non_field_errors", "Invalid data. Expected a dictionary, but got \(Self.typeName(parsed)).")])
        }
        return object
    }

    static func describe(_ error: any Error) -> String {
        let text = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String
        return text ?? "the body is not valid JSON"
    }

    static func typeName(_ value: Any) -> String {
        switch value {
        case is [Any]: "list"
        case is String: "str"
        case is NSNumber: "int"
        case is NSNull: "NoneType"
        default: "dict"
        }
    }

    /// Sends a command to the shard that owns `shardKey` and answers with its reply.
    func forward(_ kind: CommandKind, shardKey: String, caller: Caller, body: some Encodable) async throws -> Response {
        let reply = try await call(kind, shardKey: shardKey, caller: caller, body: body)
        return APIError.response(reply: reply)
    }

    /// A command's reply, or 503 when the bus gave up.
    func call(_ kind: CommandKind, shardKey: String, caller: Caller, body: some Encodable) async throws -> Event {
        let bytes = if let written = body as? any WrittenCommandBody { written.commandBytes } else { [UInt8](try JSONEncoder().encode(body)) }
        switch await services.bus.request(kind, to: Destination.of(kind, shardKey: shardKey), user: caller.json, body: bytes) {
        case .success(let reply): return reply
        case .failure: throw APIError.unavailable
        }
    }
}
