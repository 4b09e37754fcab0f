import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 4: who receives which event, and the protocol's limits.
    @Suite struct WebSocketProtocol {
        /// Reads events until one of `type` arrives; returns the types seen before it.
        static func typesBefore(_ type: String, on client: WebSocketClient, timeout: Double = 5) throws -> [String]? {
            var seen: [String] = []
            let deadline = Date().addingTimeInterval(timeout)
            while deadline.timeIntervalSinceNow > 0, let event = try client.receiveJSON(timeout: deadline.timeIntervalSinceNow) {
                let eventType = event["type"] as? String ?? "?"
                if eventType == type { return seen }
                seen.append(eventType)
            }
            return nil
        }

        @Test func eventsReachTheRightSockets() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob", "carol")
            let room1 = try await Steps.room(server, token: t[0], members: ["bob"])
            let room2 = try await Steps.room(server, token: t[0], members: ["carol"])
            let a1 = try server.webSocket("/ws/chat/\(room1)/", token: t[0])
            let a2 = try server.webSocket("/ws/chat/\(room1)/", token: t[0])
            let b = try server.webSocket("/ws/chat/\(room1)/", token: t[1])
            let a3 = try server.webSocket("/ws/chat/\(room2)/", token: t[0])
            let c = try server.webSocket("/ws/chat/\(room2)/", token: t[2])

            // A message reaches every socket of its room, and no other.
            try a1.send(json: ["type": "message", "content": "in room 1"])
            for client in [a1, a2, b] { #expect(try client.receiveMessage(content: "in room 1") != nil) }
            try c.send(json: ["type": "message", "content": "in room 2"])
            for client in [a3, c] {
                let message = try #require(try client.receive(type: "message"))
                #expect((message["message"] as? [String: Any])?["content"] as? String == "in room 2")
            }

            // Typing reaches the room's other sockets (alice's second one too), not the typist's.
            try a1.send(json: ["type": "typing", "is_typing": true])
            for client in [a2, b] {
                let typing = try #require(try client.receive(type: "typing"))
                #expect(typing["user_id"] as? String == IDs.userID(forSubject: "alice"))
                #expect(typing["user"] as? String == "alice@example.com")
            }
            try a1.send(json: ["type": "ping"])
            #expect(try Self.typesBefore("pong", on: a1)?.contains("typing") == false)

            // A read receipt persists and is broadcast to nobody.
            let posted = try await server.request("POST", "/api/chat/rooms/\(room1)/messages/", token: t[0], json: ["content": "read me"])
            let id = try #require(posted.object["id"] as? String)
            #expect(try b.receiveMessage(content: "read me") != nil)
            for client in [a1, a2] { #expect(try client.receiveMessage(content: "read me") != nil) }
            for client in [a1, a2] {
                // Drain what else is queued (presence events) up to a pong.
                try client.send(json: ["type": "ping"])
                _ = try Self.typesBefore("pong", on: client)
            }
            #expect(try await server.request("GET", "/api/chat/rooms/\(room1)/", token: t[1]).object["unread_count"] as? Int == 2)
            try b.send(json: ["type": "read_receipt", "message_id": id])
            try await server.waitUntil(timeout: 5, "bob's read receipt") {
                let message = try await server.request("GET", "/api/chat/rooms/\(room1)/messages/\(id)/", token: t[0])
                return (message.object["read_by"] as? [[String: Any]])?.first?["id"] as? String == IDs.userID(forSubject: "bob")
            }
            #expect(try await server.request("GET", "/api/chat/rooms/\(room1)/", token: t[1]).object["unread_count"] as? Int == 1)
            try b.send(json: ["type": "read_receipt", "message_id": IDs.uuid7()])
            #expect(try b.receive(type: "error")?["error"] as? String == "Message not found in this room")
            for client in [a1, a2] {
                try client.send(json: ["type": "ping"])
                #expect(try Self.typesBefore("pong", on: client) == [], "a read receipt was broadcast")
            }

            // user_left on a clean close and on a connection that just dies.
            b.close()
            #expect(try a1.receive(type: "user_left")?["user_id"] as? String == IDs.userID(forSubject: "bob"))
            a3.abort()
            #expect(try c.receive(type: "user_left")?["user_id"] as? String == IDs.userID(forSubject: "alice"))

            // Once carol leaves, her open socket is closed with 4403 and gets nothing more.
            #expect(try await server.request("POST", "/api/chat/rooms/\(room2)/leave/", token: t[2]).status == 200)
            #expect(c.waitForClose(timeout: 5))
            #expect(c.closeCode == 4403)
            try? c.send(json: ["type": "message", "content": "after leaving"])
            #expect(try await Steps.contents(server, token: t[0], room: room2) == ["in room 2"])
        }

        @Test func typingExpiresAfterTheWindow() async throws {
            let server = try await TestServer.start(environment: ["CHAT_TYPING_WINDOW_SECONDS": "1"])
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            let alice = try server.webSocket("/ws/chat/\(room)/", token: t[0])
            try alice.send(json: ["type": "typing", "is_typing": true])
            let path = "/api/chat/rooms/\(room)/typing_users/"
            try await server.waitUntil(timeout: 5, "alice typing") {
                (try await server.request("GET", path, token: t[1]).json as? [Any])?.count == 1
            }
            let started = Date()
            try await server.waitUntil(timeout: 5, "alice's typing to expire") {
                (try await server.request("GET", path, token: t[1]).json as? [Any])?.isEmpty == true
            }
            #expect(Date().timeIntervalSince(started) < 3)
            // typing: false ends it at once.
            try alice.send(json: ["type": "typing", "is_typing": true])
            try await server.waitUntil(timeout: 5, "typing again") { (try await server.request("GET", path, token: t[1]).json as? [Any])?.count == 1 }
            try alice.send(json: ["type": "typing", "is_typing": false])
            try await server.waitUntil(timeout: 5, "typing stopped") { (try await server.request("GET", path, token: t[1]).json as? [Any])?.isEmpty == true }
        }

        @Test func directSocketsMeetInOneRoom() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob")
            let alice = try server.webSocket("/ws/direct/\(IDs.userID(forSubject: "bob"))/", token: t[0])
            let bob = try server.webSocket("/ws/direct/\(IDs.userID(forSubject: "alice"))/", token: t[1])
            try alice.send(json: ["type": "message", "content": "psst"])
            let received = try #require(try bob.receiveMessage(content: "psst"))
            let rooms = try await server.request("GET", "/api/chat/rooms/?room_type=direct", token: t[1])
            #expect((rooms.object["results"] as? [[String: Any]])?.map { $0["id"] as? String } == [received["room"] as? String])
            do {
                _ = try server.webSocket("/ws/direct/\(IDs.userID(forSubject: "alice"))/", token: t[0])
                Issue.record("a direct room with oneself opened")
            } catch let refused as WebSocketClient.Refused { #expect(refused.status == 403) }
            do {
                _ = try server.webSocket("/ws/direct/\(IDs.uuid7())/", token: t[0])
                Issue.record("a direct room with nobody opened")
            } catch let refused as WebSocketClient.Refused { #expect(refused.status == 404) }
        }

        @Test func silentClientsAreCutOff() async throws {
            let server = try await TestServer.start(environment: ["CHAT_IDLE_TIMEOUT_SECONDS": "1"])
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            // Silent: never answers the server's ping.
            let silent = try server.webSocket("/ws/chat/\(room)/", token: t[1])
            #expect(silent.waitForClose(timeout: 5, answerPings: false))
            #expect(silent.closeCode == 1001)
            // Answering pings keeps a connection open past the timeout.
            let polite = try server.webSocket("/ws/chat/\(room)/", token: t[1])
            #expect(!polite.waitForClose(timeout: 2.5))
        }

        @Test func aClientThatDoesNotReadIsCutOff() async throws {
            // The default idle timeout (120 s): only the outbound limit acts here.
            // Rate limits off: alice sends as fast as the room takes it.
            let server = try await TestServer.start(environment: ["CHAT_MAX_OUTBOUND_BYTES": "65536", "CHAT_RATE_LIMITS": "off"])
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            // Slow: reads nothing while the room is busy; it is cut off, the room is not.
            let slow = try WebSocketClient(port: server.port, path: "/ws/chat/\(room)/", headers: ["Authorization": "Bearer \(t[1])"], receiveBuffer: 4096)
            let alice = try server.webSocket("/ws/chat/\(room)/", token: t[0])
            let filler = String(repeating: "x", count: 4000)
            // 6 MB in all: more than the kernel's socket buffers hold, so the rest queues in the frontend.
            // Alice reads her own echoes as she goes, or she would be the slow one.
            // (10 at a time: 40 KB in flight stays within her socket buffers and the 64 KiB limit.)
            for batch in 0..<150 {
                for i in 0..<10 { try alice.send(json: ["type": "message", "content": "\(batch * 10 + i) \(filler)"]) }
                #expect(try alice.receiveMessage(content: "\(batch * 10 + 9) \(filler)", timeout: 30) != nil)
            }
            try await server.waitUntil(timeout: 10, "the slow client's disconnection to be logged") {
                server.log.contains("does not read")
            }
            #expect(slow.waitForClose(timeout: 10, answerPings: false))
            try alice.send(json: ["type": "ping"])
            #expect(try alice.receive(type: "pong") != nil)
        }
    }
}
