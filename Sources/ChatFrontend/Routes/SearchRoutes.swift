import ChatCore
import ChatWire
import Foundation
import Hummingbird

/// `/api/chat/search/…`: full-text search of messages and rooms (the search role).
struct SearchRoutes: Sendable {
    let api: ChatAPI
    typealias Context = ChatAPI.Context

    var routes: [ChatAPI.Route] {
        [
            .init(.get, "/api/chat/search/messages/", searchMessages),
            .init(.get, "/api/chat/search/rooms/", searchRooms),
        ]
    }

    func searchMessages(_ request: Request, context: Context) async throws -> Response {
        try await search(.searchMessages, request, context)
    }

    func searchRooms(_ request: Request, context: Context) async throws -> Response {
        try await search(.searchRooms, request, context)
    }

    func search(_ kind: CommandKind, _ request: Request, _ context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let query = ChatAPI.query(request)
        let q = (query["q"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard !q.isEmpty else { throw APIError(.badRequest, body: ClientJSON.object(["error": "Search query is required"])) }
        guard !q.contains("\u{0}") else { throw APIError(.badRequest, body: ClientJSON.object(["error": "Search query must not contain NUL characters"])) }
        var errors: [(field: String, message: String)] = []
        func uuid(_ name: String) -> String? {
            guard let raw = query[name], !raw.isEmpty else { return nil }
            guard let id = IDs.canonical(raw) else { errors.append((name, "Must be a valid UUID.")); return nil }
            return id
        }
        func date(_ name: String) -> Timestamp? {
            guard let raw = query[name], !raw.isEmpty else { return nil }
            guard let stamp = Timestamp.parse(raw) else {
                errors.append((name, "Enter a valid date or date/time (ISO 8601).")); return nil
            }
            return stamp
        }
        let body = Requests.Search(query: q, room: uuid("room"), sender: uuid("sender"), after: date("after"), before: date("before"))
        if !errors.isEmpty { throw APIError.fields(errors) }
        return try await api.forward(kind, shardKey: caller.identity.id, caller: caller, body: body)
    }
}
