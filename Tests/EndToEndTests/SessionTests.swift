import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Chat sessions (WebSocket connections) and typing over REST.
    @Suite struct Sessions {
        @Test func socketsAreSessionsAndTypingIsListed() async throws {
            let server = try await TestServer.start(environment: ["CHAT_TYPING_WINDOW_SECONDS": "30"])
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            let phone = try WebSocketClient(port: server.port, path: "/ws/chat/\(room)/?session_type=mobile", headers: ["Authorization": "Bearer \(t[0])", "User-Agent": "ChatApp/1.0"])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: t[1])
            #expect(try bob.receive(type: "user_joined") != nil)

            var sessions: [[String: Any]] = []
            try await server.waitUntil(timeout: 5, "alice's session") {
                sessions = try await server.request("GET", "/api/chat/sessions/active_sessions/", token: t[0]).json as? [[String: Any]] ?? []
                return sessions.count == 1
            }
            let session = sessions[0]
            #expect(Set(session.keys) == ["session_id", "session_type", "is_active", "last_ping", "connected_at", "user_agent", "ip_address"])
            #expect(session["session_type"] as? String == "mobile")
            #expect(session["user_agent"] as? String == "ChatApp/1.0")
            #expect(session["ip_address"] as? String == "127.0.0.1")
            #expect(session["is_active"] as? Bool == true)

            try phone.send(json: ["type": "typing", "is_typing": true])
            let typing = try #require(try bob.receive(type: "typing"))
            #expect(typing["user_id"] as? String == IDs.userID(forSubject: "alice"))
            #expect(typing["is_typing"] as? Bool == true)
            var typingUsers: [[String: Any]] = []
            try await server.waitUntil(timeout: 5, "typing_users") {
                typingUsers = try await server.request("GET", "/api/chat/rooms/\(room)/typing_users/", token: t[1]).json as? [[String: Any]] ?? []
                return !typingUsers.isEmpty
            }
            #expect(typingUsers.first?["room"] as? String == room)
            #expect((typingUsers.first?["user"] as? [String: Any])?["id"] as? String == IDs.userID(forSubject: "alice"))
            // Not listed to the typist herself.
            #expect((try await server.request("GET", "/api/chat/rooms/\(room)/typing_users/", token: t[0]).json as? [Any])?.isEmpty == true)

            phone.close()
            #expect(try bob.receive(type: "user_left")?["user_id"] as? String == IDs.userID(forSubject: "alice"))
            try await server.waitUntil(timeout: 5, "session closed") {
                (try await server.request("GET", "/api/chat/sessions/active_sessions/", token: t[0]).json as? [Any])?.isEmpty == true
            }
            // Closed sessions younger than 24 h are kept by cleanup.
            let cleanup = try await server.request("POST", "/api/chat/sessions/cleanup_old_sessions/", token: t[0])
            #expect(cleanup.status == 200)
            #expect(cleanup.object["status"] as? String == "cleanup completed")
            #expect(cleanup.object["deleted_sessions"] as? Int == 0)
        }
    }
}

extension EndToEnd.Sessions {
    /// A frontend killed with SIGKILL closes nothing itself; its replacement
    /// closes the sessions it left active.
    @Test func aKilledFrontendsSessionsAreClosedByItsReplacement() async throws {
        let server = try await TestServer.start()
        defer { server.stop() }
        let t = try await Steps.users(server, "alice")
        let room = try await Steps.room(server, token: t[0], members: [])
        let socket = try server.webSocket("/ws/chat/\(room)/", token: t[0])
        try await server.waitUntil(timeout: 5, "the session") {
            (try await server.request("GET", "/api/chat/sessions/active_sessions/", token: t[0]).json as? [Any])?.count == 1
        }
        let frontend = try #require(server.childPIDs(matching: "frontend").first)
        #expect(kill(frontend, SIGKILL) == 0)
        #expect(socket.waitForClose(timeout: 5))
        try await server.waitUntil(timeout: 15, "the replacement frontend") {
            let pids = server.childPIDs(matching: "frontend")
            guard !pids.isEmpty, !pids.contains(frontend) else { return false }
            return (try? await server.request("GET", "/healthz").status) == 200
        }
        try await server.waitUntil(timeout: 10, "the orphaned session closed") {
            (try await server.request("GET", "/api/chat/sessions/active_sessions/", token: t[0]).json as? [Any])?.isEmpty == true
        }
    }
}

extension EndToEnd.Sessions {
    /// A server killed outright closes no session; started again with fewer
    /// frontends, no process has the name of the slots it no longer runs,
    /// and the supervisor closes those slots' sessions itself.
    @Test func sessionsOfSlotsAnEarlierRunHadAreClosedAtStart() async throws {
        let dir = try TestServer.temporaryDirectory()
        let first = try await TestServer.start(frontends: 2, dataDir: dir)
        let t = try await Steps.users(first, "alice")
        let room = try await Steps.room(first, token: t[0], members: [])
        // Sockets until one is served by frontend.1 (the kernel spreads them).
        let names = first.childNames()
        var sockets: [WebSocketClient] = []
        for _ in 0..<40 where !sockets.contains(where: { first.frontendPID(serving: $0).flatMap { names[$0] } == "frontend.1" }) {
            sockets.append(try first.webSocket("/ws/chat/\(room)/", token: t[0]))
        }
        #expect(sockets.contains { first.frontendPID(serving: $0).flatMap { names[$0] } == "frontend.1" }, "no socket reached frontend.1")
        try await first.waitUntil(timeout: 10, "every session open") {
            (try await first.request("GET", "/api/chat/sessions/active_sessions/", token: t[0]).json as? [Any])?.count == sockets.count
        }
        // The supervisor killed outright: its children exit when they see it
        // gone (--die-with-parent, within half a second), closing nothing.
        let children = first.childPIDs(matching: "chatd")
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        _ = first.stop(keepData: true)
        try await first.waitUntil(timeout: 10, "the children gone") { children.allSatisfy { kill($0, 0) != 0 } }
        for socket in sockets { socket.close() }

        let second = try await TestServer.start(frontends: 1, dataDir: dir)
        defer { second.stop() }
        let token = try await second.token(sub: "alice")
        try await second.waitUntil(timeout: 15, "every stale session closed") {
            (try await second.request("GET", "/api/chat/sessions/active_sessions/", token: token).json as? [Any])?.isEmpty == true
        }
    }
}
