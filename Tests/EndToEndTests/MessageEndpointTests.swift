import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 3: what message endpoints send to WebSockets over real sockets.
    /// Shapes, pagination and counts: ChatFrontendTests.MessageEndpoints.
    @Suite struct MessageEndpoints {
        @Test func editsReactionsAndDeletesReachSockets() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            let bobSocket = try server.webSocket("/ws/chat/\(room)/", token: t[1])
            let base = "/api/chat/rooms/\(room)/messages/"
            let created = try await server.request("POST", base, token: t[0], json: ["content": "original"])
            #expect(created.status == 201)
            let id = try #require(created.object["id"] as? String)

            #expect(try await server.request("PATCH", base + "\(id)/", token: t[0], json: ["content": "changed"]).status == 200)
            let editEvent = try #require(try bobSocket.receive(type: "message_edited"))
            #expect((editEvent["message"] as? [String: Any])?["content"] as? String == "changed")
            #expect(try await server.request("POST", base + "\(id)/react/", token: t[1], json: ["emoji": "👍", "action": "add"]).status == 200)
            #expect(try bobSocket.receive(type: "reaction") != nil)
            #expect(try await server.request("DELETE", base + "\(id)/", token: t[0]).status == 204)
            #expect(try bobSocket.receive(type: "message_deleted") != nil)
        }
    }
}
