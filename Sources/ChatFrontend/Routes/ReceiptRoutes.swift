import ChatCore
import ChatWire
import Hummingbird

/// Read receipts, typing state and chat sessions: what the receipts role answers.
struct ReceiptRoutes: Sendable {
    let api: ChatAPI
    typealias Context = ChatAPI.Context

    var routes: [ChatAPI.Route] {
        [
            .init(.post, "/api/chat/rooms/:room/mark_read/", markRoomRead),
            .init(.get, "/api/chat/rooms/:room/typing_users/", typingUsers),
            .init(.post, "/api/chat/rooms/:room/messages/:message/mark_read/", markMessageRead),
            .init(.get, "/api/chat/sessions/active_sessions/", activeSessions),
            .init(.post, "/api/chat/sessions/cleanup_old_sessions/", cleanupSessions),
        ]
    }

    func markRoomRead(_ request: Request, context: Context) async throws -> Response {
        try await api.roomAction(.receiptRoom, context)
    }

    func typingUsers(_ request: Request, context: Context) async throws -> Response {
        try await api.roomAction(.typingList, context)
    }

    func markMessageRead(_ request: Request, context: Context) async throws -> Response {
        try await api.messageAction(.receiptMessage, context)
    }

    func activeSessions(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        return try await api.forward(.sessionActive, shardKey: caller.identity.id, caller: caller, body: Requests.RoomRef(roomID: ""))
    }

    func cleanupSessions(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        return try await api.forward(.sessionCleanup, shardKey: caller.identity.id, caller: caller, body: Requests.RoomRef(roomID: ""))
    }
}
