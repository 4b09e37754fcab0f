import ChatCore
import ChatWire
import Foundation
import Hummingbird

/// Members, roles, ownership and pins: `/api/chat/rooms/{room}/members/…`,
/// `transfer_ownership/`, `pins/` and `messages/{message}/pin/`. Who may do
/// what is the store's decision (ChatStore's Permissions.swift).
struct RoleRoutes: Sendable {
    let api: ChatAPI
    typealias Context = ChatAPI.Context

    var routes: [ChatAPI.Route] {
        [
            .init(.get, "/api/chat/rooms/:room/members/", listMembers),
            .init(.post, "/api/chat/rooms/:room/members/", addMembers),
            .init(.patch, "/api/chat/rooms/:room/members/:user/", changeRole),
            .init(.delete, "/api/chat/rooms/:room/members/:user/", removeMember),
            .init(.post, "/api/chat/rooms/:room/transfer_ownership/", transferOwnership),
            .init(.get, "/api/chat/rooms/:room/pins/", listPins),
            .init(.post, "/api/chat/rooms/:room/messages/:message/pin/", pin),
            .init(.delete, "/api/chat/rooms/:room/messages/:message/pin/", unpin),
        ]
    }

    func listMembers(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        return try await api.forward(.memberList, shardKey: room, caller: caller, body: Requests.RoomPage(roomID: room, page: try api.page(request)))
    }

    func addMembers(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        let object = try await api.jsonObject(request)
        var errors: [(field: String, message: String)] = []
        guard let value = object["user_ids"] else { throw APIError.fields([("user_ids", "This field is required.")]) }
        if value is NSNull { throw APIError.fields([("user_ids", "This field may not be null.")]) }
        let ids = api.participantIDs(object["user_ids"], errors: &errors)
        if !errors.isEmpty { throw APIError.fields(errors.map { ("user_ids", $0.message) }) }
        let body = Requests.RoomUpdate(roomID: room, setName: false, name: nil, participantIDs: ids)
        return try await api.forward(.memberAdd, shardKey: room, caller: caller, body: body)
    }

    func changeRole(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let member = try memberRef(context)
        let object = try await api.jsonObject(request)
        guard let role = object["role"] as? String else { throw APIError.fields([("role", "This field is required.")]) }
        return try await api.forward(.memberRole, shardKey: member.roomID, caller: caller,
                                     body: Requests.MemberRef(roomID: member.roomID, userID: member.userID, role: role))
    }

    func removeMember(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let member = try memberRef(context)
        return try await api.forward(.memberRemove, shardKey: member.roomID, caller: caller, body: member)
    }

    func transferOwnership(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        let object = try await api.jsonObject(request)
        guard let raw = object["user_id"] as? String else { throw APIError.fields([("user_id", "This field is required.")]) }
        guard let id = IDs.canonical(raw) else { throw APIError.fields([("user_id", "Must be a valid UUID.")]) }
        return try await api.forward(.roomTransfer, shardKey: room, caller: caller, body: Requests.MemberRef(roomID: room, userID: id))
    }

    func listPins(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        return try await api.forward(.pinList, shardKey: room, caller: caller, body: Requests.RoomPage(roomID: room, page: try api.page(request)))
    }

    func pin(_ request: Request, context: Context) async throws -> Response {
        try await api.messageAction(.messagePin, context)
    }

    func unpin(_ request: Request, context: Context) async throws -> Response {
        try await api.messageAction(.messageUnpin, context)
    }

    /// `{room}` and `{user}` of the path; an id that is not a UUID is `404`.
    func memberRef(_ context: Context) throws -> Requests.MemberRef {
        let room = try api.roomID(context)
        guard let raw = context.parameters.get("user"), let id = IDs.canonical(raw) else { throw APIError(.notFound, detail: "Not found.") }
        return Requests.MemberRef(roomID: room, userID: id)
    }
}
