import ChatCore
import ChatWire
import Foundation
import Hummingbird

/// Mute, notification level and the mentions feed (issue 16; api-contract.md
/// "Mute and block", "Notification preferences and mentions").
struct PrefsRoutes: Sendable {
    let api: ChatAPI
    typealias Context = ChatAPI.Context

    var routes: [ChatAPI.Route] {
        [
            .init(.post, "/api/chat/rooms/:room/mute/", mute),
            .init(.delete, "/api/chat/rooms/:room/mute/", unmute),
            .init(.put, "/api/chat/rooms/:room/notifications/", setNotifications),
            .init(.get, "/api/chat/mentions/", mentions),
        ]
    }

    /// `{"until": ts or null}`; no body at all mutes until unmuted. A time
    /// that is not a timestamp, or not in the future, is `400`.
    func mute(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        let bodyless = request.headers[.contentType] == nil && (request.headers[.contentLength].flatMap { Int($0) } ?? 0) == 0
        let object = bodyless ? [:] : try await api.jsonObject(request)
        let until = try Self.until(object["until"], now: .now())
        return try await api.forward(.roomMute, shardKey: room, caller: caller, body: Requests.RoomMute(roomID: room, until: until?.micros))
    }

    static func until(_ value: Any?, now: Timestamp) throws -> Timestamp? {
        switch value {
        case nil, is NSNull:
            return nil
        case let text as String:
            guard let stamp = Timestamp.parse(text) else {
                throw APIError.fields([("until", "Datetime has wrong format. Use one of these formats instead: YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].")])
            }
            guard stamp.micros > now.micros else { throw APIError.fields([("until", "Must be in the future.")]) }
            return stamp
        default:
            throw APIError.fields([("until", "Datetime has wrong format. Use one of these formats instead: YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].")])
        }
    }

    func unmute(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        return try await api.forward(.roomUnmute, shardKey: room, caller: caller, body: Requests.RoomMute(roomID: room, until: nil))
    }

    /// `{"level": "all"|"mentions"|"none"}` → `200 {"level": ...}`.
    func setNotifications(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        let object = try await api.jsonObject(request)
        guard let value = object["level"], !(value is NSNull) else { throw APIError.fields([("level", "This field is required.")]) }
        guard let level = value as? String, NotificationLevel.all.contains(level) else {
            throw APIError.fields([("level", "\"\(value)\" is not a valid choice.")])
        }
        return try await api.forward(.roomNotifications, shardKey: room, caller: caller, body: Requests.RoomNotifications(roomID: room, level: level))
    }

    /// The caller's mentions, newest first: a user-keyed command, at the
    /// caller's shard like `room.list`.
    func mentions(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        return try await api.forward(.mentionList, shardKey: caller.identity.id, caller: caller, body: Requests.MentionList(page: try api.page(request)))
    }
}
