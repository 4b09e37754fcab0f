import ChatBus
import ChatCore
import ChatWire
import Foundation
import Hummingbird
import NIOCore

/// The REST endpoints. Each one authenticates, checks the request's shape,
/// and forwards a command to a worker; the worker's reply body is the response.
struct ChatAPI: Sendable {
    typealias Context = BasicRequestContext
    let services: FrontendServices

    typealias Handler = @Sendable (Request, Context) async throws -> Response

    /// Every endpoint: method, path, handler. The router is built from it, and
    /// so is the `Allow` header of a `405`.
    var routes: [(method: HTTPRequest.Method, path: String, handler: Handler)] {
        [
            (.get, "/healthz", healthz),
            (.get, "/api/chat/rooms/", listRooms),
            (.post, "/api/chat/rooms/", createRoom),
            (.post, "/api/chat/rooms/direct_message/", directMessage),
            (.get, "/api/chat/rooms/:room/", getRoom),
            (.patch, "/api/chat/rooms/:room/", updateRoom),
            (.put, "/api/chat/rooms/:room/", updateRoom),
            (.delete, "/api/chat/rooms/:room/", deleteRoom),
            (.post, "/api/chat/rooms/:room/mark_read/", markRoomRead),
            (.get, "/api/chat/rooms/:room/typing_users/", typingUsers),
            (.post, "/api/chat/rooms/:room/leave/", leaveRoom),
            (.post, "/api/chat/rooms/:room/join/", joinRoom),
            (.get, "/api/chat/rooms/:room/messages/", listMessages),
            (.post, "/api/chat/rooms/:room/messages/", createMessage),
            (.get, "/api/chat/rooms/:room/messages/:message/", getMessage),
            (.patch, "/api/chat/rooms/:room/messages/:message/", updateMessage),
            (.delete, "/api/chat/rooms/:room/messages/:message/", deleteMessage),
            (.post, "/api/chat/rooms/:room/messages/:message/react/", react),
            (.post, "/api/chat/rooms/:room/messages/:message/mark_read/", markMessageRead),
            (.get, "/api/chat/rooms/:room/messages/:message/download/", download),
            (.get, "/api/chat/search/messages/", searchMessages),
            (.get, "/api/chat/search/rooms/", searchRooms),
            (.get, "/api/chat/sessions/active_sessions/", activeSessions),
            (.post, "/api/chat/sessions/cleanup_old_sessions/", cleanupSessions),
        ]
    }

    func buildRouter() -> Router<Context> {
        let router = Router(context: Context.self)
        // RFC 9110 9.3.2: HEAD wherever GET is; the encoder leaves the body out.
        let routes = self.routes.flatMap { route in route.method == .get ? [route, (.head, route.path, route.handler)] : [route] }
        router.add(middleware: JSONErrorMiddleware(allowed: AllowedMethods(routes.map { ($0.method, $0.path) })))
        for route in routes {
            router.on(RouterPath(route.path), method: route.method, use: route.handler)
        }
        return router
    }

    func healthz(_ request: Request, context: Context) async throws -> Response {
        let expected = (0..<services.bus.storeShards).map { "store.\($0)" } + ["receipts.0", "search.0", "files.0"]
        return services.health.allAlive(expected)
            ? Response.json(.ok, Array(#"{"status":"ok"}"#.utf8))
            : Response.json(.serviceUnavailable, Array(#"{"status":"starting"}"#.utf8))
    }

    // MARK: Handlers

    func listRooms(_ request: Request, context: Context) async throws -> Response {
        let caller = try await authenticate(request)
        let query = Self.query(request)
        let body = Requests.RoomList(
            page: try page(request),
            roomType: query["room_type"],
            discover: query["discover"].map { ["true", "1"].contains($0.lowercased()) } ?? false
        )
        return try await forward(.roomList, shardKey: caller.identity.id, caller: caller, body: body)
    }

    func createRoom(_ request: Request, context: Context) async throws -> Response {
        let caller = try await authenticate(request)
        let object = try await jsonObject(request)
        var errors: [(field: String, message: String)] = []
        var name: String?
        if let value = object["name"], !(value is NSNull) {
            if let text = value as? String { name = text } else { errors.append(("name", "Not a valid string.")) }
        }
        if let error = Validation.roomNameError(name) { errors.append(("name", error)) }
        var roomType = "group"
        if let value = object["room_type"] {
            if let text = value as? String { roomType = text } else { errors.append(("room_type", "\"\(value)\" is not a valid choice.")) }
        }
        let participants = participantIDs(object["participant_ids"], errors: &errors)
        if !errors.isEmpty { throw APIError.fields(errors) }
        let id = IDs.uuid7()
        let body = Requests.RoomCreate(id: id, name: name, roomType: roomType, participantIDs: participants)
        return try await forward(.roomCreate, shardKey: id, caller: caller, body: body)
    }

    func getRoom(_ request: Request, context: Context) async throws -> Response {
        let caller = try await authenticate(request)
        let room = try roomID(context)
        return try await forward(.roomGet, shardKey: room, caller: caller, body: Requests.RoomRef(roomID: room))
    }

    func listMessages(_ request: Request, context: Context) async throws -> Response {
        let caller = try await authenticate(request)
        let room = try roomID(context)
        let query = Self.query(request)
        func cursor(_ name: String) throws -> String? {
            guard let value = query[name] else { return nil }
            guard let id = IDs.canonical(value) else { throw APIError.fields([(name, "Must be a valid UUID.")]) }
            return id
        }
        let body = Requests.MessageList(roomID: room, page: try page(request), before: try cursor("before"), after: try cursor("after"))
        return try await forward(.messageList, shardKey: room, caller: caller, body: body)
    }

    func createMessage(_ request: Request, context: Context) async throws -> Response {
        let caller = try await authenticate(request, multipart: true)
        let room = try roomID(context)
        let contentType = request.headers[.contentType] ?? ""
        if Self.mediaType(contentType) == "multipart/form-data" {
            return try await createMessageWithFile(request, caller: caller, room: room, contentType: contentType)
        }
        let object = try await jsonObject(request)
        switch MessageInput.parse(object, maxChars: services.config.maxMessageChars) {
        case .failure(let failure):
            throw APIError.fields(failure.errors)
        case .success(let input):
            return try await forward(.messageCreate, shardKey: room, caller: caller, body: input.request(id: IDs.uuid7(), roomID: room))
        }
    }

    func directMessage(_ request: Request, context: Context) async throws -> Response {
        let caller = try await authenticate(request)
        let object = try await jsonObject(request)
        let userID: String? = switch object["user_id"] {
        case let text as String: text
        case nil, is NSNull: nil
        case let other?: "\(other)"
        }
        guard let userID, !userID.isEmpty else { throw APIError(.badRequest, body: ClientJSON.object(["error": "user_id is required"])) }
        // The pair decides the shard, so both users' requests meet on one and make one room.
        let other = IDs.canonical(userID) ?? userID
        let pair = [caller.identity.id, other].sorted().joined(separator: "|")
        return try await forward(.roomDirect, shardKey: pair, caller: caller, body: Requests.RoomDirect(userID: userID, newRoomID: IDs.uuid7()))
    }

    func updateRoom(_ request: Request, context: Context) async throws -> Response {
        let caller = try await authenticate(request)
        let room = try roomID(context)
        let object = try await jsonObject(request)
        var errors: [(field: String, message: String)] = []
        var name: String?
        let setName = object["name"] != nil
        if let value = object["name"], !(value is NSNull) {
            if let text = value as? String { name = text } else { errors.append(("name", "Not a valid string.")) }
        }
        if let error = Validation.roomNameError(name) { errors.append(("name", error)) }
        let participants = participantIDs(object["participant_ids"], errors: &errors)
        if !errors.isEmpty { throw APIError.fields(errors) }
        return try await forward(.roomUpdate, shardKey: room, caller: caller, body: Requests.RoomUpdate(roomID: room, setName: setName, name: name, participantIDs: participants))
    }

    func deleteRoom(_ request: Request, context: Context) async throws -> Response {
        try await roomAction(.roomDelete, request, context)
    }

    func markRoomRead(_ request: Request, context: Context) async throws -> Response {
        try await roomAction(.receiptRoom, request, context)
    }

    func typingUsers(_ request: Request, context: Context) async throws -> Response {
        try await roomAction(.typingList, request, context)
    }

    func leaveRoom(_ request: Request, context: Context) async throws -> Response {
        try await roomAction(.roomLeave, request, context)
    }

    func joinRoom(_ request: Request, context: Context) async throws -> Response {
        try await roomAction(.roomJoin, request, context)
    }

    func roomAction(_ kind: CommandKind, _ request: Request, _ context: Context) async throws -> Response {
        let caller = try await authenticate(request)
        let room = try roomID(context)
        return try await forward(kind, shardKey: room, caller: caller, body: Requests.RoomRef(roomID: room))
    }

    func getMessage(_ request: Request, context: Context) async throws -> Response {
        try await messageAction(.messageGet, request, context)
    }

    func deleteMessage(_ request: Request, context: Context) async throws -> Response {
        try await messageAction(.messageDelete, request, context)
    }

    func markMessageRead(_ request: Request, context: Context) async throws -> Response {
        try await messageAction(.receiptMessage, request, context)
    }

    func messageAction(_ kind: CommandKind, _ request: Request, _ context: Context) async throws -> Response {
        let caller = try await authenticate(request)
        let ref = try messageRef(context)
        return try await forward(kind, shardKey: ref.roomID, caller: caller, body: ref)
    }

    func updateMessage(_ request: Request, context: Context) async throws -> Response {
        let caller = try await authenticate(request)
        let ref = try messageRef(context)
        let object = try await jsonObject(request)
        guard let value = object["content"] else { throw APIError.fields([("content", "This field is required.")]) }
        guard let content = value as? String else { throw APIError.fields([("content", "Not a valid string.")]) }
        if content.unicodeScalars.count > services.config.maxMessageChars {
            throw APIError.fields([("content", "Ensure this field has no more than \(services.config.maxMessageChars) characters.")])
        }
        return try await forward(.messageUpdate, shardKey: ref.roomID, caller: caller, body: Requests.MessageUpdate(roomID: ref.roomID, messageID: ref.messageID, content: content))
    }

    func react(_ request: Request, context: Context) async throws -> Response {
        let caller = try await authenticate(request)
        let ref = try messageRef(context)
        let object = try await jsonObject(request)
        guard let emoji = object["emoji"] as? String, !emoji.isEmpty else {
            throw APIError(.badRequest, body: ClientJSON.object(["error": "emoji is required"]))
        }
        if let error = Validation.emojiError(emoji) { throw APIError.fields([("emoji", error)]) }
        let action: String
        switch object["action"] {
        case nil, is NSNull: action = "add"
        case let text as String where text.isEmpty: action = "add"
        case let text as String where text == "add" || text == "remove": action = text
        default: throw APIError(.badRequest, body: ClientJSON.object(["error": "action must be 'add' or 'remove'"]))
        }
        return try await forward(.messageReact, shardKey: ref.roomID, caller: caller, body: Requests.MessageReact(roomID: ref.roomID, messageID: ref.messageID, emoji: emoji, add: action == "add"))
    }

    func activeSessions(_ request: Request, context: Context) async throws -> Response {
        let caller = try await authenticate(request)
        return try await forward(.sessionActive, shardKey: caller.identity.id, caller: caller, body: Requests.RoomRef(roomID: ""))
    }

    func cleanupSessions(_ request: Request, context: Context) async throws -> Response {
        let caller = try await authenticate(request)
        return try await forward(.sessionCleanup, shardKey: caller.identity.id, caller: caller, body: Requests.RoomRef(roomID: ""))
    }

    // MARK: Helpers

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


    struct Caller {
        var identity: Identity
        var json: [UInt8]
    }

    /// The caller, from the bearer token; then, as DRF parses after it
    /// authenticates, a body of a type no endpoint takes is `415`, whether or
    /// not the endpoint reads a body. `multipart` is for message create.
    func authenticate(_ request: Request, multipart: Bool = false) async throws -> Caller {
        let caller: Caller
        do {
            let token = try Authenticator.bearerToken(values: request.headers[values: .authorization])
            if request.headers[.authorization] != nil && token == nil {
                throw APIError(.unauthorized, detail: "Authorization header must use the Bearer scheme.")
            }
            let identity = try await services.auth.identity(token: token)
            caller = Caller(identity: identity, json: [UInt8](try JSONEncoder().encode(identity)))
        } catch let failure as Authenticator.Failure {
            throw APIError(.unauthorized, detail: failure.detail)
        }
        if let limiter = services.limiter, let wait = limiter.request(user: caller.identity.id).retryAfterSeconds {
            var error = APIError(.tooManyRequests, detail: "Request was throttled. Expected available in \(wait) seconds.")
            error.headers[.retryAfter] = String(wait)
            throw error
        }
        if Self.hasBody(request) {
            let contentType = request.headers[.contentType] ?? ""
            let media = Self.mediaType(contentType)
            guard media == "application/json" || (multipart && media == "multipart/form-data") else {
                throw APIError(.unsupportedMediaType, detail: "Unsupported media type \"\(contentType.prefix(200))\" in request.")
            }
        }
        return caller
    }

    /// Whether a request announces a body (RFC 9112 6.3): a positive length, or a transfer coding.
    static func hasBody(_ request: Request) -> Bool {
        if let length = request.headers[.contentLength] { return length != "0" }
        return request.headers[.transferEncoding] != nil
    }

    /// The media type of a `Content-Type` value, lowercased, without parameters.
    static func mediaType(_ contentType: String) -> String {
        contentType.split(separator: ";", omittingEmptySubsequences: false).first?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
    }

    func roomID(_ context: Context) throws -> String {
        // A path id that is not a UUID is 404 (api-contract.md "Timestamps and ids").
        guard let raw = context.parameters.get("room"), let id = IDs.canonical(raw) else {
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
        guard Self.mediaType(contentType) == "application/json" else {
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
}
