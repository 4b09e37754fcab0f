import ChatCore
import Foundation
import Testing

/// Invariant 5: bad input gets a clear 4xx and disturbs nobody else.
@Suite struct BadInput {
    @Test func restRefusalsAreClearAndStoreNothing() async throws {
        try await InProcessServer.run { server in
            let tokens = try await Steps.users(server, "alice", "bob", "mallory")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])

            // No token, a garbage token, a token signed with another secret, an expired one.
            let expired = try await server.token(sub: "alice", expiresIn: -60)
            let forged = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.c2lnbmF0dXJl"
            for token in [nil, "not-a-jwt", forged, expired] {
                let response = try await server.request("GET", "/api/chat/rooms/", token: token)
                #expect(response.status == 401, "token \(token ?? "none")")
                #expect(response.object["detail"] is String)
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
            // Unknown and malformed room ids.
            let unknown = IDs.uuid7()
            #expect(try await server.request("GET", "/api/chat/rooms/\(unknown)/", token: mallory).status == 404)
            #expect(try await server.request("GET", "/api/chat/rooms/not-a-uuid/", token: mallory).status == 404)

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

            // Through all of that, nothing was stored (WebSocket refusals: EndToEndTests).
            #expect(try await Steps.contents(server, token: tokens[1], room: room) == [])
        }
    }

    /// Issue 10: numbers out of range are refused like any bad value, and no
    /// request can stop a process (the store worker trapped on an overflowing
    /// page offset and was restarted, again and again).
    @Test func hugePagesAreInvalidPagesAndKillNothing() async throws {
        try await InProcessServer.run { server in
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            for i in 1...3 {
                #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "m\(i)"]).status == 201)
            }
            for list in ["/api/chat/rooms/", "/api/chat/rooms/\(room)/messages/"] {
                for page in ["9223372036854775807", "9223372036854775806", "92233720368547759", "9223372036854775808",
                             "99999999999999999999999", "0", "-1", "-9223372036854775808", "1e3", "2"] {
                    let response = try await server.request("GET", "\(list)?page=\(page)&page_size=100", token: tokens[0])
                    #expect(response.status == 404, "\(list) page \(page): \(response.status) \(response.text)")
                    #expect(response.object["detail"] as? String == "Invalid page.")
                }
                // page_size as DRF reads it: a huge one is the cap, a bad one the default.
                for size in ["99999999999999999999999", "9223372036854775807", "-5", "0", "x"] {
                    let response = try await server.request("GET", "\(list)?page_size=\(size)", token: tokens[0])
                    #expect(response.status == 200, "\(list) page_size \(size): \(response.text)")
                    #expect((response.object["results"] as? [Any])?.isEmpty == false)
                }
            }
            // Nothing trapped: a trap here would have stopped this test process.
            #expect(try await Steps.contents(server, token: tokens[1], room: room) == ["m1", "m2", "m3"])
        }
    }

    /// Issue 10: `system` and `typing` messages are the server's, `image`
    /// and `file` need an attachment; the store holds the rule too.
    @Test func clientsCannotPostServerMessageTypes() async throws {
        try await InProcessServer.run { server in
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            for type in ["system", "typing", "image", "file"] {
                let response = try await server.request(
                    "POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "spoof \(type)", "message_type": type]
                )
                #expect(response.status == 400, "\(type): \(response.text)")
                #expect(response.object["message_type"] is [String], "\(type): \(response.text)")
            }
            let plain = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "plain", "message_type": "text"])
            #expect(plain.status == 201)
            #expect(plain.object["message_type"] as? String == "text")
            #expect(try await Steps.contents(server, token: tokens[1], room: room) == ["plain"])
        }
    }

    /// Issue 10: a reaction emoji is at most 32 bytes, a message carries at
    /// most 50 different ones.
    @Test func reactionsAreBounded() async throws {
        try await InProcessServer.run { server in
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let posted = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "react to me"])
            let id = try #require(posted.object["id"] as? String)
            let react = "/api/chat/rooms/\(room)/messages/\(id)/react/"
            let family = "👨‍👩‍👧‍👦"  // 25 bytes: one emoji, and allowed
            #expect(try await server.request("POST", react, token: tokens[1], json: ["emoji": family]).status == 200)
            for emoji in [String(repeating: "x", count: 33), String(repeating: "👍", count: 9), String(repeating: "y", count: 100_000)] {
                let response = try await server.request("POST", react, token: tokens[1], json: ["emoji": emoji])
                #expect(response.status == 400, "\(emoji.utf8.count) bytes: \(response.text.prefix(200))")
                #expect(response.object["emoji"] is [String])
            }
            for i in 1..<50 {
                let response = try await server.request("POST", react, token: tokens[i % 2], json: ["emoji": "e\(i)"])
                #expect(response.status == 200, "emoji \(i): \(response.text)")
            }
            let fiftyFirst = try await server.request("POST", react, token: tokens[0], json: ["emoji": "one too many"])
            #expect(fiftyFirst.status == 400, "\(fiftyFirst.text)")
            #expect(fiftyFirst.object["emoji"] is [String])
            // An emoji already there can still gain users, and removing frees a slot.
            #expect(try await server.request("POST", react, token: tokens[0], json: ["emoji": family]).status == 200)
            #expect(try await server.request("POST", react, token: tokens[1], json: ["emoji": "e1", "action": "remove"]).status == 200)
            #expect(try await server.request("POST", react, token: tokens[0], json: ["emoji": "one too many"]).status == 200)
            let message = try await server.request("GET", "/api/chat/rooms/\(room)/messages/\(id)/", token: tokens[0])
            let reactions = try #require(message.object["reactions"] as? [String: Any])
            #expect(reactions.count == 50)
            #expect((reactions[family] as? [Any])?.count == 2)
        }
    }
}
