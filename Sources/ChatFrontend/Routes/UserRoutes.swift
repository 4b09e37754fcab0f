import ChatCore
import ChatWire
import Foundation
import Hummingbird

/// `/api/chat/users/…`: the caller (`me`), the user lookup and blocks
/// (api-contract.md "Users", "Mute and block"). Every command goes to the
/// store shard of the caller's id, like the room list.
struct UserRoutes: Sendable {
    let api: ChatAPI
    typealias Context = ChatAPI.Context

    var routes: [ChatAPI.Route] {
        [
            .init(.get, "/api/chat/users/", lookup),
            .init(.get, "/api/chat/users/me/", me),
            .init(.get, "/api/chat/users/blocked/", blocked),
            .init(.post, "/api/chat/users/:user/block/", block),
            .init(.delete, "/api/chat/users/:user/block/", unblock),
        ]
    }

    func me(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        return try await api.forward(.userMe, shardKey: caller.identity.id, caller: caller, body: [String: String]())
    }

    func lookup(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let q = (ChatAPI.query(request)["q"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard !q.isEmpty else { throw APIError(.badRequest, body: ClientJSON.object(["error": "q is required"])) }
        guard !q.contains("\u{0}") else { throw APIError(.badRequest, body: ClientJSON.object(["error": "q must not contain NUL characters"])) }
        return try await api.forward(.userSearch, shardKey: caller.identity.id, caller: caller, body: Requests.UserSearch(query: q))
    }

    func blocked(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        return try await api.forward(.userBlocked, shardKey: caller.identity.id, caller: caller, body: Requests.BlockedList(page: try api.page(request)))
    }

    func block(_ request: Request, context: Context) async throws -> Response {
        try await userAction(.userBlock, context)
    }

    func unblock(_ request: Request, context: Context) async throws -> Response {
        try await userAction(.userUnblock, context)
    }

    private func userAction(_ kind: CommandKind, _ context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        // A path id that is not a UUID is 404 (api-contract.md "Timestamps and ids").
        guard let raw = context.parameters.get("user"), let target = IDs.canonical(raw) else {
            throw APIError(.notFound, detail: "Not found.")
        }
        return try await api.forward(kind, shardKey: caller.identity.id, caller: caller, body: Requests.UserRef(userID: target))
    }
}
