import ChatCore
import ChatTesting
import Foundation
import Testing

/// What a client sees of the HTTP edge beyond the fuzz corpus: query strings
/// as browsers encode them, methods, media types, links, and sockets that
/// lose their room.
extension EndToEnd {
    @Suite struct EdgeTests {
        /// What the encoder and the server's own headers do (the rest of routing:
        /// ChatFrontendTests.Routing).
        @Test func headBodiesHostHeadersAndNosniff() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            for text in ["one", "two"] {
                #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": text]).status == 201)
            }
            // HEAD wherever GET is, without the body.
            let head = try await server.request("HEAD", "/api/chat/rooms/", token: tokens[0])
            #expect(head.status == 200 && head.body.isEmpty)
            // The web client's files too (open, no token): the router answers HEAD as GET, the encoder drops the body.
            let asset = try await server.request("HEAD", "/app/app.js")
            #expect(asset.status == 200 && asset.body.isEmpty && asset.headers["etag"] != nil)

            // Links come from the configured address, never from the Host header.
            let page = try await server.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=1", token: tokens[0], headers: ["Host": "evil.example"])
            #expect(page.object["next"] as? String == "http://127.0.0.1:\(server.port)/api/chat/rooms/\(room)/messages/?page=2&page_size=1")
            #expect(page.headers["x-content-type-options"] == "nosniff")
        }

        @Test func aKeepAliveConnectionAnsweredEarlyStillIdlesOut() async throws {
            let server = try await TestServer.start(environment: ["CHAT_KEEP_ALIVE_TIMEOUT_SECONDS": "1"])
            defer { server.stop() }
            // A 401 goes out before the body has arrived; the body then
            // completes, and the idle connection is closed after the
            // keep-alive timeout (it once waited for a response that had
            // already been sent).
            let connection = try RawConnection(port: server.port)
            connection.send(Array("POST /api/chat/rooms/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n{}".utf8))
            let early = connection.read(timeout: 5) { RawConnection.hasHead($0) && String(decoding: $0, as: UTF8.self).hasSuffix("}") }
            #expect(early.status == 401, "\(early.text)")
            connection.send(Array("  ".utf8))
            let idle = connection.read(timeout: 5)
            #expect(idle.closed, "the idle keep-alive connection was not closed within 5 s")
        }

        @Test func roomsHoldAtMostTheConfiguredMembers() async throws {
            let server = try await TestServer.start(environment: ["CHAT_MAX_PARTICIPANTS": "3"])
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob", "carol", "dave")
            let ids = ["bob", "carol", "dave"].map(IDs.userID(forSubject:))
            let tooMany = try await server.request("POST", "/api/chat/rooms/", token: tokens[0], json: ["name": "big", "participant_ids": ids])
            #expect(tooMany.status == 400)
            #expect(tooMany.object["participant_ids"] != nil, "\(tooMany.text)")
            let open = try await server.request("POST", "/api/chat/rooms/", token: tokens[0], json: ["name": "open", "room_type": "public", "participant_ids": Array(ids.prefix(2))])
            #expect(open.status == 201)
            let room = try #require(open.object["id"] as? String)
            // Full: dave can neither join nor enter by WebSocket, and nobody is added by PATCH.
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/join/", token: tokens[3]).status == 400)
            #expect(throws: WebSocketClient.Refused.self) { try server.webSocket("/ws/chat/\(room)/", token: tokens[3]) }
            #expect(try await server.request("PATCH", "/api/chat/rooms/\(room)/", token: tokens[0], json: ["participant_ids": [ids[2]]]).status == 400)
            // Once someone leaves there is room again.
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/leave/", token: tokens[1]).status == 200)
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/join/", token: tokens[3]).status == 200)
        }

        @Test func aSocketClosesWhenItsTokenExpires() async throws {
            let server = try await TestServer.start(environment: ["CHAT_AUTH_LEEWAY_SECONDS": "0"])
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let short = try await server.token(sub: "bob", expiresIn: 2)
            let bob = try server.webSocket("/ws/chat/\(room)/?token=\(short)", token: nil)
            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            try alice.send(json: ["type": "message", "content": "before expiry"])
            #expect(try bob.receiveMessage(content: "before expiry") != nil)
            #expect(bob.waitForClose(timeout: 6))
            #expect(bob.closeCode == 4401)
            // Alice's token is good for an hour: her socket stays.
            try alice.send(json: ["type": "ping"])
            #expect(try alice.receive(type: "pong") != nil)
        }

        @Test func socketsCloseWhenTheirRoomIsDeleted() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob", "carol")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let other = try await Steps.room(server, token: tokens[0], members: ["carol"])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            let carol = try server.webSocket("/ws/chat/\(other)/", token: tokens[2])
            #expect(try await server.request("DELETE", "/api/chat/rooms/\(room)/", token: tokens[0]).status == 204)
            for socket in [bob, alice] {
                #expect(socket.waitForClose(timeout: 5))
                #expect(socket.closeCode == 4403)
            }
            // Another room's sockets are untouched.
            try carol.send(json: ["type": "message", "content": "still here"])
            #expect(try carol.receiveMessage(content: "still here") != nil)
        }
    }
}
