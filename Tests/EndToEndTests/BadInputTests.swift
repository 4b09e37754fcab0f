import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Invariant 5: bad input gets a clear 4xx and disturbs nobody else.
    @Suite struct BadInput {
        @Test func refusalsLeaveOtherClientsAlone() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob", "mallory")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])

            // No token, a garbage token, a token signed with another secret, an expired one.
            let expired = try await server.token(sub: "alice", expiresIn: -60)
            let forged = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.c2lnbmF0dXJl"
            for token in [nil, "not-a-jwt", forged, expired] {
                let response = try await server.request("GET", "/api/chat/rooms/", token: token)
                #expect(response.status == 401, "token \(token ?? "none")")
                #expect(response.object["detail"] is String)
                #expect(throws: WebSocketClient.Refused.self) { try server.webSocket("/ws/chat/\(room)/", token: token) }
            }
            let basic = try await server.request("GET", "/api/chat/rooms/", headers: ["Authorization": "Basic YWxpY2U6cHc="])
            #expect(basic.status == 401)

            // A valid user who is not a participant.
            let mallory = tokens[2]
            let forbidden = try await server.request("GET", "/api/chat/rooms/\(room)/", token: mallory)
            #expect(forbidden.status == 403)
            #expect(forbidden.object["detail"] as? String == "You don't have access to this room")
            #expect(try await server.request("GET", "/api/chat/rooms/\(room)/messages/", token: mallory).status == 403)
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: mallory, json: ["content": "hi"]).status == 403)
            do {
                _ = try server.webSocket("/ws/chat/\(room)/", token: mallory)
                Issue.record("handshake of a non-participant succeeded")
            } catch let refused as WebSocketClient.Refused {
                #expect(refused.status == 403)
            }
            // Unknown and malformed room ids.
            let unknown = IDs.uuid7()
            #expect(try await server.request("GET", "/api/chat/rooms/\(unknown)/", token: mallory).status == 404)
            #expect(try await server.request("GET", "/api/chat/rooms/not-a-uuid/", token: mallory).status == 404)
            #expect(throws: WebSocketClient.Refused.self) { try server.webSocket("/ws/chat/\(unknown)/", token: mallory) }

            // Malformed JSON, a non-object, a wrong media type, a wrong field type.
            let malformed = try await server.request(
                "POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0],
                body: Data("{\"content\": ".utf8), headers: ["Content-Type": "application/json"]
            )
            #expect(malformed.status == 400)
            #expect((malformed.object["detail"] as? String)?.hasPrefix("JSON parse error") == true)
            let list = try await server.request("POST", "/api/chat/rooms/", token: tokens[0], json: [1, 2])
            #expect(list.status == 400)
            #expect(list.object["non_field_errors"] != nil)
            let text = try await server.request(
                "POST", "/api/chat/rooms/", token: tokens[0], body: Data("name=x".utf8), headers: ["Content-Type": "text/plain"]
            )
            #expect(text.status == 415)
            let number = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": 5])
            #expect(number.status == 400)
            #expect(number.object["content"] != nil)
            let blank = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "   "])
            #expect(blank.status == 400)
            let tooLong = try await server.request(
                "POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": String(repeating: "é", count: 10_001)]
            )
            #expect(tooLong.status == 400)
            let badType = try await server.request("POST", "/api/chat/rooms/", token: tokens[0], json: ["room_type": "direct"])
            #expect(badType.status == 400)
            #expect(badType.object["room_type"] != nil)
            let ghost = try await server.request("POST", "/api/chat/rooms/", token: tokens[0], json: ["participant_ids": [IDs.uuid7()]])
            #expect(ghost.status == 400)
            #expect(ghost.object["participant_ids"] != nil)

            // Bad WebSocket frames get an error event; the socket stays open.
            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            try alice.send(text: "not json")
            #expect(try alice.receive(type: "error")?["error"] as? String == "Invalid JSON")
            try alice.send(json: ["type": "dance"])
            #expect(try alice.receive(type: "error") != nil)
            try alice.send(json: ["type": "message", "content": ""])
            #expect(try alice.receive(type: "error") != nil)
            try alice.send(opcode: .binary, payload: [1, 2, 3])
            #expect(try alice.receive(type: "error") != nil)
            // An oversized frame closes that socket with 1009.
            let big = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            try big.send(text: String(repeating: "x", count: 70_000))
            #expect(big.waitForClose(timeout: 5))
            #expect(big.closeCode == 1009)

            // Through all of that, bob's socket kept working and nothing was stored.
            try alice.send(json: ["type": "message", "content": "still here"])
            #expect(try bob.receiveMessage(content: "still here") != nil)
            #expect(!bob.isClosed)
            #expect(try await Steps.contents(server, token: tokens[1], room: room) == ["still here"])
        }
    }
}
