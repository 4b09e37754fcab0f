import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// What an operator reads: the JSON log, the access log.
    @Suite struct Operations {
        /// The log's lines, each parsed as a JSON object (nil for a line that is not one).
        static func jsonLines(_ log: String) -> [(line: String, object: [String: Any]?)] {
            log.split(separator: "\n").map { line in
                (String(line), (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any])
            }
        }

        /// `logFormat: json`: every line of every process (supervisor,
        /// frontend, workers, standbys), interleaved in one stream, is one
        /// JSON object naming its process's role and pid.
        @Test func theJSONLogIsOneObjectPerLineFromEveryProcess() async throws {
            let server = try await TestServer.start(environment: ["CHAT_LOG_FORMAT": "json"])
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            _ = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let lines = Self.jsonLines(server.log)
            #expect(lines.count > 5)
            for (line, object) in lines {
                #expect(object != nil, "not a JSON object: \(line)")
                guard let object else { continue }
                #expect(object["pid"] is Int && object["role"] is String && object["message"] is String && object["level"] is String, "\(line)")
                #expect((object["time"] as? String)?.hasSuffix("Z") == true, "\(line)")
            }
            let roles = Set(lines.compactMap { $0.object?["role"] as? String })
            #expect(roles.isSuperset(of: ["supervisor", "frontend.0", "store.0", "search.0"]), "\(roles)")
            let supervisor = lines.compactMap(\.object).filter { $0["role"] as? String == "supervisor" }
            #expect(supervisor.allSatisfy { $0["pid"] as? Int == Int(server.process.processIdentifier) })
            // Metadata is an object: the supervisor's "child started" names the child.
            #expect(supervisor.contains { $0["message"] as? String == "child started" && ($0["metadata"] as? [String: Any])?["child"] is String })
        }

        /// `accessLog: true`: one line per request and per handshake, with
        /// no token in it, whether it came in the query or the header.
        @Test func theAccessLogHasEveryRequestAndNoToken() async throws {
            let server = try await TestServer.start(environment: ["CHAT_ACCESS_LOG": "true", "CHAT_LOG_FORMAT": "json"])
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let listed = try await server.request("GET", "/api/chat/rooms/?page=1&token=\(tokens[1])", token: tokens[0], headers: ["X-Request-ID": "req-42"])
            #expect(listed.status == 200)
            let socket = try server.webSocket("/ws/chat/\(room)/?token=\(tokens[1])&session_type=web", token: nil)
            try socket.send(json: ["type": "ping"])
            #expect(try socket.receive(type: "pong", timeout: 5) != nil)
            #expect(throws: WebSocketClient.Refused.self) { try server.webSocket("/ws/chat/\(room)/?token=not-a-token", token: nil) }
            socket.close()
            var access: [[String: Any]] = []
            try await server.waitUntil(timeout: 10, "the handshakes' access lines") {
                access = Self.jsonLines(server.log).compactMap(\.object).filter { $0["label"] as? String == "chatd.access" }
                return access.filter { (($0["metadata"] as? [String: Any])?["path"] as? String)?.hasPrefix("/ws/") == true }.count == 2
            }
            let log = server.log
            for token in tokens { #expect(!log.contains(token), "a token in the log") }
            #expect(!log.contains("not-a-token"))
            let fields = access.compactMap { $0["metadata"] as? [String: String] }
            let rooms = try #require(fields.first { $0["path"]?.hasPrefix("/api/chat/rooms/?") == true })
            #expect(rooms["path"] == "/api/chat/rooms/?page=1&token=REDACTED")
            #expect(rooms["method"] == "GET" && rooms["status"] == "200" && rooms["request_id"] == "req-42")
            #expect(Int(rooms["bytes"] ?? "") == listed.body.count)
            #expect(rooms["remote"]?.hasPrefix("127.0.0.1:") == true)
            #expect(Double(rooms["duration_ms"] ?? "") != nil)
            let handshakes = fields.filter { $0["path"]?.hasPrefix("/ws/") == true }
            #expect(handshakes.map { $0["status"] } == ["101", "401"])
            #expect(handshakes[0]["path"] == "/ws/chat/\(room)/?token=REDACTED&session_type=web")
            // Every request of the test is there: the users' first requests and the room's creation too.
            #expect(fields.filter { $0["path"] == "/api/chat/rooms/" }.count >= 3)
            #expect(access.allSatisfy { $0["level"] as? String == "info" && $0["role"] as? String == "frontend.0" })
        }
    }
}
