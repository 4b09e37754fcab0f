import ChatCore
import ChatWire
import Foundation
import HTTPTypes
import Hummingbird

/// `/api/chat/rooms/{room}/messages/…`: list, post (JSON, or multipart with an
/// attachment: `FileRoutes`), read, edit, delete and react to messages.
struct MessageRoutes: Sendable {
    let api: ChatAPI
    typealias Context = ChatAPI.Context

    var routes: [ChatAPI.Route] {
        [
            .init(.get, "/api/chat/rooms/:room/messages/", listMessages),
            .init(.post, "/api/chat/rooms/:room/messages/", .jsonOrMultipart, createMessage),
            .init(.get, "/api/chat/rooms/:room/messages/:message/", getMessage),
            .init(.patch, "/api/chat/rooms/:room/messages/:message/", updateMessage),
            .init(.delete, "/api/chat/rooms/:room/messages/:message/", deleteMessage),
            .init(.post, "/api/chat/rooms/:room/messages/:message/react/", react),
        ]
    }

    func listMessages(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        let query = ChatAPI.query(request)
        func cursor(_ name: String) throws -> String? {
            guard let value = query[name] else { return nil }
            guard let id = IDs.canonical(value) else { throw APIError.fields([(name, "Must be a valid UUID.")]) }
            return id
        }
        let body = Requests.MessageList(
            roomID: room, page: try api.page(request), before: try cursor("before"), after: try cursor("after"), deviceID: try Self.device(request)
        )
        return try await api.forward(.messageList, shardKey: room, caller: caller, body: body)
    }

    func createMessage(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        let contentType = request.headers[.contentType] ?? ""
        if AuthenticatorMiddleware.mediaType(contentType) == "multipart/form-data" {
            return try await FileRoutes(api: api).createMessageWithFile(request, caller: caller, room: room, contentType: contentType)
        }
        let object = try await api.jsonObject(request)
        switch MessageInput.parse(object, maxChars: api.services.config.maxMessageChars) {
        case .failure(let failure):
            throw APIError.fields(failure.errors)
        case .success(let input):
            FrontendMetrics.messagesAccepted.increment()
            return try await api.forward(.messageCreate, shardKey: room, caller: caller, body: input.request(id: IDs.uuid7(), roomID: room))
        }
    }

    func getMessage(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        var ref = try api.messageRef(context)
        ref.deviceID = try Self.device(request)
        return try await api.forward(.messageGet, shardKey: ref.roomID, caller: caller, body: ref)
    }

    /// `X-Device-Id` (issue 17): the device whose ciphertexts an encrypted room's messages carry.
    static func device(_ request: Request) throws -> String? {
        guard let raw = request.headers[HTTPField.Name("X-Device-Id")!], !raw.isEmpty else { return nil }
        guard let id = IDs.canonical(raw) else { throw APIError(.badRequest, detail: "X-Device-Id must be a UUID.") }
        return id
    }

    func deleteMessage(_ request: Request, context: Context) async throws -> Response {
        try await api.messageAction(.messageDelete, context)
    }

    func updateMessage(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let ref = try api.messageRef(context)
        let object = try await api.jsonObject(request)
        let maxChars = api.services.config.maxMessageChars
        // An encrypted message's edit carries new ciphertexts, and no content (issue 17).
        var ciphertexts: [String: String]?
        if let value = object["ciphertexts"], !(value is NSNull) {
            switch Encryption.ciphertexts(value) {
            case .success(let parsed): ciphertexts = parsed
            case .failure(let error): throw APIError.fields([("ciphertexts", error.message)])
            }
        }
        guard let value = object["content"] ?? (ciphertexts == nil ? nil : "") else { throw APIError.fields([("content", "This field is required.")]) }
        guard let content = value as? String else { throw APIError.fields([("content", "Not a valid string.")]) }
        if content.unicodeScalars.count > maxChars {
            throw APIError.fields([("content", "Ensure this field has no more than \(maxChars) characters.")])
        }
        let body = Requests.MessageUpdate(roomID: ref.roomID, messageID: ref.messageID, content: content, ciphertexts: ciphertexts)
        return try await api.forward(.messageUpdate, shardKey: ref.roomID, caller: caller, body: body)
    }

    func react(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let ref = try api.messageRef(context)
        let object = try await api.jsonObject(request)
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
        let body = Requests.MessageReact(roomID: ref.roomID, messageID: ref.messageID, emoji: emoji, add: action == "add")
        return try await api.forward(.messageReact, shardKey: ref.roomID, caller: caller, body: body)
    }
}
