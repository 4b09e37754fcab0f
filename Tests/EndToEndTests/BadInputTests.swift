import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Invariant 5: bad input gets a clear 4xx and disturbs nobody else:
    /// here what WebSockets over real sockets show (REST: ChatFrontendTests.BadInput).
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
                #expect(throws: WebSocketClient.Refused.self) { try server.webSocket("/ws/chat/\(room)/", token: token) }
            }
            // A valid user who is not a participant; an unknown room.
            do {
                _ = try server.webSocket("/ws/chat/\(room)/", token: tokens[2])
                Issue.record("handshake of a non-participant succeeded")
            } catch let refused as WebSocketClient.Refused {
                #expect(refused.status == 403)
            }
            #expect(throws: WebSocketClient.Refused.self) { try server.webSocket("/ws/chat/\(IDs.uuid7())/", token: tokens[2]) }

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

        /// A NUL, which PostgreSQL cannot hold in text, in a query parameter,
        /// a token claim or a message is that request's 4xx on both engines;
        /// other users' reads sent alongside, which share the store's read
        /// batches with it, still succeed (on PostgreSQL one bad statement
        /// used to fail its whole batch with 503s).
        @Test func aNulIsRefusedAloneAndHarmsNoOtherRead() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob", "mallory")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let nulName = try await server.token(sub: "nul-name", name: "a\u{0}b")
            let bad: [(path: String, token: String, status: Int)] = [
                ("/api/chat/rooms/?room_type=%00", tokens[2], 400),
                ("/api/chat/rooms/\(room)/messages/?before=%00", tokens[1], 400),
                ("/api/chat/search/messages/?q=a%00b", tokens[2], 400),
                ("/api/chat/rooms/", nulName, 401),
            ]
            let good = ["/api/chat/rooms/", "/api/chat/rooms/\(room)/messages/", "/api/chat/rooms/\(room)/"]
            for _ in 0..<10 {
                let answers = try await withThrowingTaskGroup(of: (path: String, expected: Int, status: Int).self) { group in
                    for request in bad {
                        group.addTask { (request.path, request.status, try await server.request("GET", request.path, token: request.token).status) }
                    }
                    for path in good + good {
                        group.addTask { (path, 200, try await server.request("GET", path, token: tokens[1]).status) }
                    }
                    var all: [(path: String, expected: Int, status: Int)] = []
                    for try await answer in group { all.append(answer) }
                    return all
                }
                for answer in answers { #expect(answer.status == answer.expected, "\(answer.path)") }
            }
            let posted = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "a\u{0}b"])
            #expect(posted.status == 400)
            #expect(posted.text.contains("Null characters are not allowed."), "\(posted.text)")
            #expect(try await Steps.contents(server, token: tokens[1], room: room).isEmpty)
        }

        /// A NUL in a message's `client_msg_id` is that field's error on both
        /// engines, over REST and a WebSocket (SQLite would store it, PostgreSQL
        /// fail the statement), and in a handshake's `session_type` (which is
        /// stored with the session) refuses the handshake.
        @Test func aNulInAClientMsgIDOrSessionTypeIsRefused() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let posted = try await server.request(
                "POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "hi", "client_msg_id": "a\u{0}b"])
            #expect(posted.status == 400)
            let fields = try #require(try JSONSerialization.jsonObject(with: Data(posted.text.utf8)) as? [String: Any], "\(posted.text)")
            #expect(fields["client_msg_id"] as? [String] == [Validation.nulMessage], "\(posted.text)")
            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            try alice.send(json: ["type": "message", "content": "hi", "client_msg_id": "a\u{0}b"])
            let error = try alice.receive(type: "error")
            #expect((error?["error"] as? String)?.contains("client_msg_id") == true, "\(error ?? [:])")
            do {
                _ = try server.webSocket("/ws/chat/\(room)/?session_type=%00", token: tokens[1])
                Issue.record("a handshake with a NUL in session_type succeeded")
            } catch let refused as WebSocketClient.Refused {
                #expect(refused.status == 400)
            }
            #expect(try await Steps.contents(server, token: tokens[1], room: room).isEmpty)
        }

        /// Issue 10: `system` and `typing` messages are the server's, `image`
        /// and `file` need an attachment, over a WebSocket too (REST:
        /// ChatFrontendTests.BadInput).
        @Test func clientsCannotPostServerMessageTypes() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            for type in ["system", "typing", "image", "file"] {
                try alice.send(json: ["type": "message", "content": "spoof \(type)", "message_type": type])
                let error = try alice.receive(type: "error")
                #expect((error?["error"] as? String)?.contains("message_type") == true, "\(type): \(error ?? [:])")
            }
            try alice.send(json: ["type": "message", "content": "plain", "message_type": "text"])
            let plain = try #require(try bob.receiveMessage(content: "plain"))
            #expect(plain["message_type"] as? String == "text")
            #expect(try await Steps.contents(server, token: tokens[1], room: room) == ["plain"])
        }
    }
}
