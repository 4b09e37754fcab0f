import ChatCore
import ChatWire
import Foundation
import Hummingbird

/// `/api/chat/rooms/…`: list, create, read, change, delete, join and leave rooms.
struct RoomRoutes: Sendable {
    let api: ChatAPI
    typealias Context = ChatAPI.Context

    var routes: [ChatAPI.Route] {
        [
            .init(.get, "/api/chat/rooms/", listRooms),
            .init(.post, "/api/chat/rooms/", createRoom),
            .init(.post, "/api/chat/rooms/direct_message/", directMessage),
            .init(.get, "/api/chat/rooms/:room/", getRoom),
            .init(.patch, "/api/chat/rooms/:room/", updateRoom),
            .init(.put, "/api/chat/rooms/:room/", updateRoom),
            .init(.delete, "/api/chat/rooms/:room/", deleteRoom),
            .init(.post, "/api/chat/rooms/:room/leave/", leaveRoom),
            .init(.post, "/api/chat/rooms/:room/join/", joinRoom),
        ]
    }

    func listRooms(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let query = ChatAPI.query(request)
        let body = Requests.RoomList(
            page: try api.page(request),
            roomType: query["room_type"],
            discover: query["discover"].map { ["true", "1"].contains($0.lowercased()) } ?? false
        )
        return try await api.forward(.roomList, shardKey: caller.identity.id, caller: caller, body: body)
    }

    func createRoom(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let object = try await api.jsonObject(request)
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
        let participants = api.participantIDs(object["participant_ids"], errors: &errors)
        // Issue 17: a room whose messages are ciphertexts only.
        var encrypted = false
        if let value = object["encrypted"], !(value is NSNull) {
            if let flag = value as? Bool { encrypted = flag } else { errors.append(("encrypted", "Must be a valid boolean.")) }
        }
        if encrypted && roomType == "public" { errors.append(("encrypted", "A public room cannot be encrypted: anyone may join it.")) }
        if !errors.isEmpty { throw APIError.fields(errors) }
        let id = IDs.uuid7()
        let body = Requests.RoomCreate(id: id, name: name, roomType: roomType, participantIDs: participants, encrypted: encrypted ? true : nil)
        return try await api.forward(.roomCreate, shardKey: id, caller: caller, body: body)
    }

    func getRoom(_ request: Request, context: Context) async throws -> Response {
        try await api.roomAction(.roomGet, context)
    }

    func directMessage(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let object = try await api.jsonObject(request)
        let userID: String? = switch object["user_id"] {
        case let text as String: text
        case nil, is NSNull: nil
        case let other?: "\(other)"
        }
        guard let userID, !userID.isEmpty else { throw APIError(.badRequest, body: ClientJSON.object(["error": "user_id is required"])) }
        // The pair decides the shard, so both users' requests meet on one and make one room.
        let other = IDs.canonical(userID) ?? userID
        let pair = [caller.identity.id, other].sorted().joined(separator: "|")
        return try await api.forward(.roomDirect, shardKey: pair, caller: caller, body: Requests.RoomDirect(userID: userID, newRoomID: IDs.uuid7()))
    }

    func updateRoom(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        let object = try await api.jsonObject(request)
        var errors: [(field: String, message: String)] = []
        var name: String?
        let setName = object["name"] != nil
        if let value = object["name"], !(value is NSNull) {
            if let text = value as? String { name = text } else { errors.append(("name", "Not a valid string.")) }
        }
        if let error = Validation.roomNameError(name) { errors.append(("name", error)) }
        let participants = api.participantIDs(object["participant_ids"], errors: &errors)
        var postPermission: String?
        if let value = object["post_permission"] {
            // The worker checks the value; a non-string is refused here.
            if let text = value as? String { postPermission = text } else { errors.append(("post_permission", "\"\(value)\" is not a valid choice.")) }
        }
        if !errors.isEmpty { throw APIError.fields(errors) }
        let body = Requests.RoomUpdate(roomID: room, setName: setName, name: name, participantIDs: participants, postPermission: postPermission)
        return try await api.forward(.roomUpdate, shardKey: room, caller: caller, body: body)
    }

    func deleteRoom(_ request: Request, context: Context) async throws -> Response {
        try await api.roomAction(.roomDelete, context)
    }

    func leaveRoom(_ request: Request, context: Context) async throws -> Response {
        try await api.roomAction(.roomLeave, context)
    }

    func joinRoom(_ request: Request, context: Context) async throws -> Response {
        try await api.roomAction(.roomJoin, context)
    }
}
