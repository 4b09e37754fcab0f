import ChatCore
import ChatTesting
import Foundation
import Synchronization
import Testing

/// Rate and connection limits (on by default): a user over a limit gets 429
/// or an `error` event with a retry hint; other users are not held back.
extension EndToEnd {
    @Suite struct RateLimitTests {
        @Test func aBurstOverTheLimitIsRefusedAndOthersAreNot() async throws {
            let server = try await TestServer.start(environment: [
                "CHAT_REST_REQUESTS_PER_SECOND": "2", "CHAT_REST_BURST": "20",
                "CHAT_SOCKET_EVENTS_PER_SECOND": "2", "CHAT_SOCKET_EVENT_BURST": "10",
                "CHAT_SOCKETS_PER_USER": "3",
            ])
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])

            // REST: alice's burst runs out; bob, asking at the same time, is served.
            var statuses: [Int] = []
            var retryAfter: String?
            for index in 0..<30 {
                let response = try await server.request("GET", "/api/chat/rooms/", token: tokens[0])
                statuses.append(response.status)
                if response.status == 429 { retryAfter = response.headers["retry-after"] }
                if index % 3 == 0 {
                    #expect(try await server.request("GET", "/api/chat/rooms/", token: tokens[1]).status == 200)
                }
            }
            #expect(statuses.filter { $0 == 200 }.count < 30, "\(statuses)")
            #expect(statuses.contains(429))
            #expect(retryAfter.flatMap(Int.init).map { $0 >= 1 } == true, "Retry-After: \(retryAfter ?? "none")")

            // WebSocket: alice's typing is dropped first, then her messages get
            // an error event with a retry hint; bob's messages still arrive.
            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            for index in 0..<12 {
                try alice.send(json: ["type": "typing", "is_typing": index % 2 == 0])
            }
            for index in 0..<12 {
                try alice.send(json: ["type": "message", "content": "alice \(index)"])
            }
            var refused: [String: Any]?
            let deadline = Date().addingTimeInterval(10)
            while refused == nil, Date() < deadline, let event = try alice.receiveJSON(timeout: deadline.timeIntervalSinceNow) {
                if event["type"] as? String == "error" { refused = event }
            }
            let error = try #require(refused, "no error event for alice")
            #expect((error["retry_after"] as? Int).map { $0 >= 1 } == true, "\(error)")
            #expect((error["error"] as? String)?.contains("Rate limit") == true)
            // At most the burst of events was accepted, the typing ones included.
            try bob.send(json: ["type": "message", "content": "bob is not slowed"])
            #expect(try bob.receiveMessage(content: "bob is not slowed") != nil)
            let stored = try await Steps.contents(server, token: tokens[1], room: room).filter { $0.hasPrefix("alice") }
            #expect(stored.count < 12 && !stored.isEmpty, "\(stored)")

            // Sockets per user: the fourth is refused with 429; closing one makes room.
            let second = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            let third = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            do {
                let fourth = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
                fourth.close()
                Issue.record("a fourth socket was accepted")
            } catch let refusal as WebSocketClient.Refused {
                #expect(refusal.status == 429)
            }
            third.close()
            try await server.waitUntil(timeout: 10, "a socket slot to free up") {
                (try? server.webSocket("/ws/chat/\(room)/", token: tokens[0])).map { $0.close(); return true } ?? false
            }
            alice.close()
            bob.close()
            second.close()

            // Handshakes at the same moment cannot pass the limit together.
            let erin = try await Steps.users(server, "erin")[0]
            let open = try await Steps.room(server, token: erin, members: [])
            let accepted = Mutex<[WebSocketClient]>([])
            DispatchQueue.concurrentPerform(iterations: 8) { _ in
                if let socket = try? server.webSocket("/ws/chat/\(open)/", token: erin) { accepted.withLock { $0.append(socket) } }
            }
            let sockets = accepted.withLock { $0 }
            #expect(sockets.count == 3, "\(sockets.count) of 8 concurrent handshakes accepted, limit 3")
            sockets.forEach { $0.close() }
        }

        /// A client that leaves while its handshake waits for the store
        /// gives its socket slot back (a slot taken then kept by nobody left
        /// the user one socket short for the frontend's life), and its
        /// access-log line says 500.
        @Test func aHandshakeAbandonedWhileAuthorisedGivesItsSlotBack() async throws {
            let server = try await TestServer.start(frontends: 1, environment: [
                "CHAT_SOCKETS_PER_USER": "1", "CHAT_ACCESS_LOG": "true", "CHAT_HANG_TIMEOUT_SECONDS": "60",
            ])
            defer { server.stop() }
            let tokens = try await Steps.users(server, "dana")
            let room = try await Steps.room(server, token: tokens[0], members: [])
            let store = try #require(server.childPIDs(matching: "worker --role store").first)
            #expect(kill(store, SIGSTOP) == 0)
            defer { kill(store, SIGCONT) }
            var raw: RawConnection? = try RawConnection(port: server.port)
            raw?.send(Array("GET /ws/chat/\(room)/?token=\(tokens[0]) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".utf8))
            // The handshake's enter waits in the stopped store's queue.
            try await server.waitUntil(timeout: 10, "the handshake waiting for the store") {
                let children = (try? server.status())?["children"] as? [[String: Any]] ?? []
                return children.contains { $0["child"] as? String == "store.0" && ($0["queue_depth"] as? Int ?? 0) > 0 }
            }
            // Reset, not closed: an orderly close is only a half-close to the
            // frontend, which would open the socket and fail on its first write.
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(try #require(raw).fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            raw = nil
            // The frontend sees the reset before the store answers: nothing
            // to wait for but the loop's turn.
            try await Task.sleep(for: .milliseconds(300))
            #expect(kill(store, SIGCONT) == 0)
            try await server.waitUntil(timeout: 10, "the abandoned handshake's access-log line") {
                server.log.contains("/ws/chat/\(room)/?token=REDACTED 500")
            }
            // The one slot is free: this socket opens (429 while it leaked).
            let socket = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            socket.close()
        }

        @Test func handshakesPerAddressAreLimitedAndLimitsCanBeOff() async throws {
            let server = try await TestServer.start(environment: ["CHAT_HANDSHAKES_PER_SECOND_PER_IP": "1", "CHAT_HANDSHAKE_BURST": "5"])
            defer { server.stop() }
            let tokens = try await Steps.users(server, "carol")
            let room = try await Steps.room(server, token: tokens[0], members: [])
            var opened: [WebSocketClient] = []
            var refusedWith: Int?
            for _ in 0..<10 where refusedWith == nil {
                do {
                    opened.append(try server.webSocket("/ws/chat/\(room)/", token: tokens[0]))
                } catch let refusal as WebSocketClient.Refused {
                    refusedWith = refusal.status
                }
            }
            #expect(refusedWith == 429)
            #expect(opened.count >= 5 && opened.count < 8, "\(opened.count) handshakes passed")
            opened.forEach { $0.close() }

            // `rateLimits: off` (what load tests use) lifts every rate and connection limit.
            let unlimited = try await TestServer.start(environment: [
                "CHAT_RATE_LIMITS": "off", "CHAT_HANDSHAKES_PER_SECOND_PER_IP": "1", "CHAT_HANDSHAKE_BURST": "1",
                "CHAT_REST_REQUESTS_PER_SECOND": "1", "CHAT_REST_BURST": "1",
            ])
            defer { unlimited.stop() }
            let token = try await Steps.users(unlimited, "dave")[0]
            for _ in 0..<5 {
                #expect(try await unlimited.request("GET", "/api/chat/rooms/", token: token).status == 200)
            }
            let other = try await Steps.room(unlimited, token: token, members: [])
            let sockets = try (0..<4).map { _ in try unlimited.webSocket("/ws/chat/\(other)/", token: token) }
            sockets.forEach { $0.close() }
        }
    }
}
