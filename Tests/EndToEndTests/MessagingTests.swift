import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    @Suite struct Messaging {
        @Test func messageTravelsToEveryMemberAndIsStored() async throws {
            let server = try await TestServer.start(storeWorkers: 2)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])

            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            // The query-parameter form browsers use.
            let bob = try WebSocketClient(port: server.port, path: "/ws/chat/\(room)/?token=\(tokens[1])")
            try alice.send(json: ["type": "message", "content": "hello, bob"])

            let seenByAlice = try #require(try alice.receiveMessage(content: "hello, bob"))
            let seenByBob = try #require(try bob.receiveMessage(content: "hello, bob"))
            #expect(seenByAlice["id"] as? String == seenByBob["id"] as? String)

            // The full message object of the REST API, with its types.
            let id = try #require(seenByBob["id"] as? String)
            #expect(IDs.canonical(id) == id)
            #expect(seenByBob["room"] as? String == room)
            let sender = try #require(seenByBob["sender"] as? [String: Any])
            #expect(sender["id"] as? String == IDs.userID(forSubject: "alice"))
            #expect(sender["email"] as? String == "alice@example.com")
            #expect(sender["display_name"] as? String == "Alice")
            #expect(sender["profile_picture"] is NSNull)
            #expect(seenByBob["message_type"] as? String == "text")
            for field in ["file_attachment", "file_name", "file_size", "edited_at", "reply_to", "client_msg_id"] {
                #expect(seenByBob[field] is NSNull, "\(field)")
            }
            #expect(seenByBob["is_deleted"] as? Bool == false)
            #expect(seenByBob["is_edited"] as? Bool == false)
            #expect((seenByBob["reactions"] as? [String: Any])?.isEmpty == true)
            #expect((seenByBob["read_by"] as? [Any])?.isEmpty == true)
            let timestamp = try #require(seenByBob["timestamp"] as? String)
            #expect(timestamp.hasSuffix("Z") && timestamp.contains("."))

            let listed = try await server.request("GET", "/api/chat/rooms/\(room)/messages/", token: tokens[1])
            #expect(listed.status == 200)
            #expect(listed.object["count"] as? Int == 1)
            let first = try #require((listed.object["results"] as? [[String: Any]])?.first)
            #expect(first["id"] as? String == id)
            #expect(first["content"] as? String == "hello, bob")

            // A message posted over REST reaches the sockets the same way.
            let posted = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[1], json: ["content": "hi alice"])
            #expect(posted.status == 201)
            #expect(try alice.receiveMessage(content: "hi alice")?["id"] as? String == posted.object["id"] as? String)

            // The room list shows the newest message.
            let rooms = try await server.request("GET", "/api/chat/rooms/", token: tokens[0])
            let listedRoom = try #require((rooms.object["results"] as? [[String: Any]])?.first)
            #expect((listedRoom["last_message"] as? [String: Any])?["content"] as? String == "hi alice")
            #expect(listedRoom["unread_count"] as? Int == 1)
        }

        @Test func messagesKeepTheirOrderPerRoom() async throws {
            let server = try await TestServer.start(storeWorkers: 2, environment: Steps.noRateLimits)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            let sent = (1...200).map { "m\($0)" }
            for content in sent { try alice.send(json: ["type": "message", "content": content]) }
            var received: [String] = []
            while received.count < sent.count, let event = try bob.receive(type: "message", timeout: 10) {
                received.append(((event["message"] as? [String: Any])?["content"] as? String) ?? "")
            }
            #expect(received == sent)
            #expect(try await Steps.contents(server, token: tokens[1], room: room) == sent)
        }
    }
}
