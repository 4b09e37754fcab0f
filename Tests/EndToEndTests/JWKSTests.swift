import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// RS256/ES256 tokens against a JWKS (file and URL), key rotation, and
    /// every header/key mismatch refused at each door: REST, the WebSocket
    /// `Authorization` header and the WebSocket `?token=` (RFC 8725 §3.1).
    @Suite struct JWKS {
        enum Door: CaseIterable { case rest, webSocketHeader, webSocketQuery }

        /// The status each door answers `token` with (101 for an opened WebSocket).
        static func status(_ server: TestServer, token: String, room: String, door: Door) async throws -> (Int, String) {
            switch door {
            case .rest:
                let response = try await server.request("GET", "/api/chat/rooms/\(room)/", token: token)
                return (response.status, response.text)
            case .webSocketHeader, .webSocketQuery:
                do {
                    let socket = door == .webSocketHeader
                        ? try server.webSocket("/ws/chat/\(room)/", token: token)
                        : try WebSocketClient(port: server.port, path: "/ws/chat/\(room)/?token=\(token)")
                    socket.close()
                    return (101, "")
                } catch let refused as WebSocketClient.Refused {
                    return (refused.status, refused.body)
                }
            }
        }

        static func expectAccepted(_ server: TestServer, _ token: String, room: String, _ what: String) async throws {
            for door in Door.allCases {
                let (status, body) = try await status(server, token: token, room: room, door: door)
                #expect(status == (door == .rest ? 200 : 101), "\(what) at \(door): \(status) \(body)")
            }
        }

        static func expectRefused(_ server: TestServer, _ token: String, room: String, _ what: String) async throws {
            for door in Door.allCases {
                let (status, body) = try await status(server, token: token, room: room, door: door)
                #expect(status == 401, "\(what) at \(door): \(status) \(body)")
                let detail = (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?["detail"]
                #expect(detail is String, "\(what) at \(door): \(body)")
            }
        }

        /// One raw HTTP/1.1 request (for header bytes URLSession will not send); the status code.
        static func rawStatus(port: Int, _ request: String) throws -> Int {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = TestServer.loopback(port: port)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            guard connected else { throw TestServerError(description: "connect: \(errno)") }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let bytes = Array(request.utf8)
            guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == bytes.count else {
                throw TestServerError(description: "send: \(errno)")
            }
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while !String(decoding: received, as: UTF8.self).contains("\r\n") {
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { break }
                received += chunk[0..<n]
            }
            let line = String(decoding: received, as: UTF8.self).split(separator: "\r\n").first ?? ""
            return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        }

        @Test func fileKeysVerifyAtEveryDoorAndRotateUnderOpenSockets() async throws {
            let dir = try TestServer.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let rsa = try TestSigningKey.rsa(kid: "rsa-2026-01")
            let ec = TestSigningKey.ec(kid: "ec-2026-01")
            let path = dir + "/jwks.json"
            try TestTokens.writeJWKS([try rsa.jwk(), try ec.jwk(minimal: true)], to: path)
            // The JWKS together with the HS256 secret TestServer configures.
            let server = try await TestServer.start(environment: ["CHAT_JWKS": path])
            defer { server.stop() }

            // alice by RS256, bob by ES256, carol by HS256: all one kind of user.
            let alice = try rsa.token(sub: "alice")
            let bob = try ec.token(sub: "bob")
            let carol = try await server.token(sub: "carol")
            for token in [alice, bob, carol] {
                #expect(try await server.request("GET", "/api/chat/rooms/", token: token).status == 200)
            }
            let room = try await Steps.room(server, token: alice, members: ["bob", "carol"])
            try await Self.expectAccepted(server, alice, room: room, "RS256")
            try await Self.expectAccepted(server, bob, room: room, "ES256")
            try await Self.expectAccepted(server, carol, room: room, "HS256")

            for (name, token) in try Forged.all(secret: server.secret, rsa: rsa, ec: ec) {
                try await Self.expectRefused(server, token, room: room, name)
            }
            // A control character in the Authorization value is refused, not
            // read past. HTAB is the one the HTTP parser lets through (the
            // others are its 400s); before it the scheme or within the token.
            for value in ["Bearer\t\(alice)", "Bearer \(alice.prefix(20))\t\(alice.dropFirst(20))"] {
                let status = try Self.rawStatus(
                    port: server.port, "GET /api/chat/rooms/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: \(value)\r\nConnection: close\r\n\r\n"
                )
                #expect(status == 401, "REST, tab in Authorization: \(status)")
                do {
                    _ = try WebSocketClient(port: server.port, path: "/ws/chat/\(room)/", headers: ["Authorization": value])
                    Issue.record("handshake with a tab in Authorization succeeded")
                } catch let refused as WebSocketClient.Refused {
                    #expect(refused.status == 401)
                }
            }

            // Two Authorization fields, each of which a different reader might take.
            let twice = "Authorization: Bearer \(carol)\r\nAuthorization: Bearer \(alice)\r\n"
            #expect(try Self.rawStatus(port: server.port, "GET /api/chat/rooms/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\(twice)Connection: close\r\n\r\n") == 401)
            #expect(try Self.rawStatus(
                port: server.port,
                "GET /ws/chat/\(room)/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\(twice)\r\n"
            ) == 401)

            // Rotation: a new key is published beside the old while sockets stay open.
            let bobSocket = try server.webSocket("/ws/chat/\(room)/", token: bob)
            let aliceSocket = try WebSocketClient(port: server.port, path: "/ws/chat/\(room)/?token=\(alice)")
            let next = try TestSigningKey.rsa(kid: "rsa-2026-07")
            let dave = try next.token(sub: "dave")
            try await Self.expectRefused(server, dave, room: room, "a key not yet published")
            try TestTokens.writeJWKS([try rsa.jwk(), try ec.jwk(minimal: true), try next.jwk()], to: path)
            #expect(try await server.request("GET", "/api/chat/rooms/", token: dave).status == 200)
            let aliceNext = try next.token(sub: "alice")
            try await Self.expectAccepted(server, aliceNext, room: room, "RS256 by the new key")
            // Old tokens still verify, old sockets still receive.
            #expect(try await server.request("GET", "/api/chat/rooms/", token: alice).status == 200)
            let posted = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: aliceNext, json: ["content": "rotated"])
            #expect(posted.status == 201, "\(posted.text)")
            #expect(try bobSocket.receiveMessage(content: "rotated") != nil)
            #expect(try aliceSocket.receiveMessage(content: "rotated") != nil)
            // Retiring the old key: its tokens stop verifying, the new key's keep working.
            try TestTokens.writeJWKS([try ec.jwk(minimal: true), try next.jwk()], to: path)
            try await server.waitUntil(timeout: 10, "old key retired") {
                try await server.request("GET", "/api/chat/rooms/", token: alice).status == 401
            }
            #expect(try await server.request("GET", "/api/chat/rooms/", token: aliceNext).status == 200)
            #expect(try await server.request("GET", "/api/chat/rooms/", token: bob).status == 200)
            bobSocket.close()
            aliceSocket.close()
        }

        @Test func urlKeysServedStaleWhileProviderIsDown() async throws {
            let rsa = try TestSigningKey.rsa(kid: "r1")
            let ec = TestSigningKey.ec(kid: "e1")
            let provider = try LocalHTTPServer(body: try TestTokens.jwks([try rsa.jwk()]))
            defer { provider.stop() }
            // The JWKS alone: no HS256 secret, none generated.
            let server = try await TestServer.start(environment: [
                "CHAT_JWKS": provider.url, "CHAT_JWT_SECRET": "", "CHAT_AUTH_JWKS_REFRESH_SECONDS": "1",
            ])
            defer { server.stop() }
            #expect(!FileManager.default.fileExists(atPath: server.dataDir + "/jwt-secret"))
            try await server.waitUntil(timeout: 10, "the JWKS fetched at start") { provider.requestCount == 1 }

            let alice = try rsa.token(sub: "alice")
            let bob = try ec.token(sub: "bob")
            #expect(try await server.request("GET", "/api/chat/rooms/", token: alice).status == 200)
            let hs256 = try await server.request("GET", "/api/chat/rooms/", token: try Forged.hs256(secret: server.secret))
            #expect(hs256.status == 401)
            #expect(hs256.object["detail"] as? String == "Token algorithm is not allowed.")

            // A key the provider starts publishing is fetched on its first token.
            provider.setBody(try TestTokens.jwks([try rsa.jwk(), try ec.jwk()]))
            try await server.waitUntil(timeout: 10, "ES256 key fetched") {
                try await server.request("GET", "/api/chat/rooms/", token: bob).status == 200
            }
            let room = try await Steps.room(server, token: alice, members: ["bob"])
            try await Self.expectAccepted(server, bob, room: room, "ES256 from the URL")

            // Unknown kids in a burst cost at most one fetch per interval.
            let fetches = provider.requestCount
            let stranger = TestSigningKey.ec(kid: "nobody")
            for index in 0..<20 {
                let token = try TestTokens.token(header: ["alg": "ES256", "kid": "nobody-\(index)"], claims: TestTokens.claims(sub: "mallory")) {
                    try stranger.sign($0)
                }
                #expect(try await server.request("GET", "/api/chat/rooms/", token: token).status == 401)
            }
            #expect(provider.requestCount - fetches <= 2, "\(provider.requestCount - fetches) fetches for 20 unknown kids")

            // The provider goes away: known keys keep verifying, unknown kids are refused.
            provider.stop()
            let aliceSocket = try server.webSocket("/ws/chat/\(room)/", token: alice)
            let unknown = try TestTokens.token(header: ["alg": "ES256", "kid": "nobody"], claims: TestTokens.claims(sub: "mallory")) {
                try stranger.sign($0)
            }
            // Unknown kids go on being refused; once the refresh interval has
            // passed one of them really tries the provider, and that fails.
            try await server.waitUntil(timeout: 15, "a failed JWKS fetch") {
                let refused = try await server.request("GET", "/api/chat/rooms/", token: unknown)
                #expect(refused.status == 401)
                #expect(refused.object["detail"] as? String == "Token key is unknown.")
                return server.log.contains("JWKS fetch failed")
            }
            try await Self.expectAccepted(server, alice, room: room, "RS256 while the provider is down")
            try await Self.expectAccepted(server, bob, room: room, "ES256 while the provider is down")
            let posted = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: bob, json: ["content": "still verified"])
            #expect(posted.status == 201)
            #expect(try aliceSocket.receiveMessage(content: "still verified") != nil)
            aliceSocket.close()

            // A frontend restarted while the provider is down starts from the
            // last document it fetched, kept in the data directory (0600).
            let cache = server.dataDir + "/jwks-cache.json"
            let mode = (try FileManager.default.attributesOfItem(atPath: cache)[.posixPermissions] as? NSNumber)?.intValue
            #expect(mode == 0o600)
            let frontend = try #require(server.childPIDs(matching: "frontend").first)
            #expect(kill(frontend, SIGKILL) == 0)
            try await server.waitUntil(timeout: 15, "the replacement frontend") {
                let pids = server.childPIDs(matching: "frontend")
                guard !pids.isEmpty, !pids.contains(frontend) else { return false }
                return (try? await server.request("GET", "/healthz").status) == 200
            }
            try await Self.expectAccepted(server, alice, room: room, "RS256 after a restart, provider down")
            try await Self.expectAccepted(server, bob, room: room, "ES256 after a restart, provider down")
            try await Self.expectRefused(server, unknown, room: room, "an unknown kid after a restart")
        }
    }
}
