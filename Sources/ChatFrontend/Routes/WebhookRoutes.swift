import ChatBus
import ChatCore
import ChatWire
import Foundation
import Hummingbird

/// `/api/chat/rooms/{id}/webhooks/…` (issue 16): outgoing webhooks and
/// incoming ones. The room's store shard keeps them (and decides who may);
/// this checks the request's shape and the SSRF guard.
struct WebhookRoutes: Sendable {
    let api: ChatAPI
    typealias Context = ChatAPI.Context

    var routes: [ChatAPI.Route] {
        [
            .init(.post, "/api/chat/rooms/:room/webhooks/", create),
            .init(.get, "/api/chat/rooms/:room/webhooks/", list),
            .init(.delete, "/api/chat/rooms/:room/webhooks/:webhook/", delete),
            .init(.get, "/api/chat/rooms/:room/webhooks/:webhook/failures/", failures),
            .init(.post, "/api/chat/rooms/:room/webhooks/incoming/", createIncoming),
            // The secret URL: its token is the credential, no bearer token.
            .init(.post, "/api/chat/rooms/:room/webhooks/incoming/:hook/:token/", .open, postIncoming),
        ]
    }

    func create(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        let object = try await api.jsonObject(request)
        var errors: [(field: String, message: String)] = []
        var url = ""
        switch object["url"] {
        case let text as String where !text.isEmpty: url = text
        case nil, is NSNull: errors.append(("url", "This field is required."))
        default: errors.append(("url", "Enter a valid URL."))
        }
        var events: [String] = []
        switch object["events"] {
        case let list as [Any] where !list.isEmpty:
            for item in list {
                guard let event = item as? String, Webhooks.events.contains(event) else {
                    errors.append(("events", "\"\(item)\" is not a valid choice."))
                    break
                }
                if !events.contains(event) { events.append(event) }
            }
        case nil, is NSNull: errors.append(("events", "This field is required."))
        default: errors.append(("events", "Expected a non-empty list of events."))
        }
        if errors.isEmpty, let refusal = await Self.check(url, allowPrivate: api.services.config.chat.webhooksAllowPrivateTargets) {
            errors.append(("url", refusal.message))
        }
        if !errors.isEmpty { throw APIError.fields(errors) }
        let body = Requests.WebhookCreate(id: IDs.uuid7(), roomID: room, url: url, events: events, secret: Webhooks.newSecret())
        return try await api.forward(.webhookCreate, shardKey: room, caller: caller, body: body)
    }

    /// The SSRF guard, off the event loop (it resolves the host).
    static func check(_ url: String, allowPrivate: Bool) async -> WebhookTarget.Refusal? {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: WebhookTarget.check(url, allowPrivate: allowPrivate)) }
        }
    }

    func list(_ request: Request, context: Context) async throws -> Response {
        try await api.roomAction(.webhookList, context)
    }

    func webhookRef(_ context: Context) throws -> Requests.WebhookRef {
        let room = try api.roomID(context)
        guard let raw = context.parameters.get("webhook"), let id = IDs.canonical(raw) else { throw APIError(.notFound, detail: "Not found.") }
        return Requests.WebhookRef(roomID: room, webhookID: id)
    }

    func delete(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let ref = try webhookRef(context)
        return try await api.forward(.webhookDelete, shardKey: ref.roomID, caller: caller, body: ref)
    }

    func failures(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let ref = try webhookRef(context)
        let body = Requests.WebhookFailures(ref: ref, page: try api.page(request))
        return try await api.forward(.webhookFailures, shardKey: ref.roomID, caller: caller, body: body)
    }

    func createIncoming(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        let object = try await api.jsonObject(request)
        guard let name = (object["name"] as? String)?.trimmingCharacters(in: .whitespacesAndNewlines), !name.isEmpty else {
            throw APIError.fields([("name", "This field is required.")])
        }
        // Code points, as Python's `len` and the schema's maxLength count (not grapheme clusters).
        guard name.unicodeScalars.count <= 100 else { throw APIError.fields([("name", "Ensure this field has no more than 100 characters.")]) }
        let id = IDs.uuid7()
        let token = Webhooks.newSecret()
        let url = api.services.config.chat.linkBase + "/api/chat/rooms/\(room)/webhooks/incoming/\(id)/\(token)/"
        let body = Requests.IncomingWebhookCreate(id: id, roomID: room, name: name, token: token, botUserID: IDs.uuid7(), url: url)
        return try await api.forward(.webhookIncomingCreate, shardKey: room, caller: caller, body: body)
    }

    /// `{"content"}` to the secret URL: a message from the webhook's bot user.
    func postIncoming(_ request: Request, context: Context) async throws -> Response {
        let room = try api.roomID(context)
        guard let rawHook = context.parameters.get("hook"), let hook = IDs.canonical(rawHook),
              let token = context.parameters.get("token"), token.utf8.count == 64 else {
            throw APIError(.notFound, detail: "Not found.")
        }
        try AuthenticatorMiddleware.refuseNUL(in: request)
        let object = try await api.jsonObject(request)
        guard let content = object["content"] as? String, !content.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw APIError.fields([("content", "This field is required.")])
        }
        let body = Requests.IncomingWebhookPost(roomID: room, hookID: hook, token: token, messageID: IDs.uuid7(), content: content)
        let bytes = [UInt8](try JSONEncoder().encode(body))
        switch await api.services.bus.request(.webhookIncomingPost, to: Destination.of(.webhookIncomingPost, shardKey: room), user: [], body: bytes) {
        case .success(let reply): return APIError.response(reply: reply)
        case .failure: throw APIError.unavailable
        }
    }
}
