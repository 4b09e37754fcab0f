import ChatCore
import ChatTesting
import Foundation
import Synchronization
import Testing

/// The frontend faces the internet: malformed requests and frames, and random
/// mutations of valid ones, sent at the socket of a real `chatd serve`. Each
/// gets a refusal or a close within a second, and afterwards nothing has
/// changed: no process restarted, `/healthz` answers, a sentinel user's
/// messages read back the same, the frontend holds no more descriptors.
///
/// CI runs a small size; a long run:
/// `CHATD_FUZZ_CASES=20000 swift test --filter FuzzTests` (`CHATD_FUZZ_SEED` repeats a run).
extension EndToEnd {
    @Suite struct FuzzTests {
        /// What a case must get back: a status, or (nil) any refusal: a 4xx,
        /// 501, 505, or a close.
        struct Case {
            var name: String
            var bytes: [UInt8]
            var status: Int?
        }

        static let cases = Int(ProcessInfo.processInfo.environment["CHATD_FUZZ_CASES"] ?? "") ?? 300
        /// Short waits, so that a request the server must time out still ends within the second.
        static let environment = [
            "CHAT_HEAD_TIMEOUT_SECONDS": "0.5", "CHAT_BODY_TIMEOUT_SECONDS": "0.5",
            // Rate limits stay on, high enough that the fuzz reaches the handlers behind them.
            "CHAT_REST_REQUESTS_PER_SECOND": "100000", "CHAT_REST_BURST": "100000",
        ]

        @Test func malformedInputIsRefusedAndHarmsNothing() async throws {
            let server = try await TestServer.start(environment: Self.environment)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "sentinel", "fuzzer")
            let room = try await Steps.room(server, token: tokens[0], members: ["fuzzer"], name: "sentinel")
            for text in ["first", "second", "third"] {
                let sent = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": text])
                #expect(sent.status == 201)
            }
            // The fuzzer works in a room of its own; the sentinel's must not change.
            let own = try await Steps.room(server, token: tokens[1], members: [], name: "fuzz")
            let history = try await server.request("GET", "/api/chat/rooms/\(room)/messages/", token: tokens[0])
            let before = try Self.processes(server)
            let frontend = try #require(server.childPIDs(matching: "chatd frontend").first)
            let descriptors = Self.openDescriptors(frontend)

            // The corpus: every rule of RFC 9112 the frontend enforces.
            for item in Self.httpCorpus(token: tokens[1]) {
                let outcome = try Self.exchange(server.port, item.bytes)
                Self.check(item, outcome)
            }
            // Multipart bodies the parser could not take: a 400, the frontend up (same pid, checked below).
            for item in Self.multipartCorpus(token: tokens[1], room: own) {
                let outcome = try Self.exchange(server.port, item.bytes)
                #expect(outcome.status == item.status, "\(item.name): \(outcome.text.prefix(300))")
                if item.status == 400 { #expect(outcome.text.contains(#"{"detail":"Multipart form parse error"#), "\(item.name)") }
            }
            #expect(server.childPIDs(matching: "chatd frontend").first == frontend, "the frontend restarted")
            // Random mutations of valid requests, several connections at once.
            let seed = UInt64(ProcessInfo.processInfo.environment["CHATD_FUZZ_SEED"] ?? "") ?? UInt64.random(in: 0...UInt64.max)
            let templates = Self.templates(token: tokens[1], room: own)
            let failures = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 8) { lane in
                var random = SeededRandom(seed: seed &+ UInt64(lane))
                for index in stride(from: lane, to: Self.cases, by: 8) {
                    let template = templates[index % templates.count]
                    let bytes = Self.mutate(template, &random)
                    guard let outcome = try? Self.exchange(server.port, bytes) else { continue }
                    if let problem = Self.problem(Case(name: "mutation", bytes: bytes, status: nil), outcome) {
                        failures.withLock { $0.append("seed \(seed) case \(index): \(problem)\n\(String(decoding: bytes.prefix(300), as: UTF8.self).debugDescription)") }
                    }
                }
            }
            let found = failures.withLock { $0 }
            #expect(found.isEmpty, "\(found.count) mutated requests not refused in time:\n\(found.prefix(5).joined(separator: "\n"))")

            // Extreme values in every query parameter and JSON field: 4xx or 2xx, never 5xx.
            try await Self.extremeValues(server, token: tokens[1], room: own)
            // RFC 6455 violations on a live socket.
            try Self.webSocketCorpus(server, token: tokens[1], room: own)

            #expect(try Self.processes(server) == before, "a process restarted")
            #expect(try await server.request("GET", "/healthz").status == 200)
            let after = try await server.request("GET", "/api/chat/rooms/\(room)/messages/", token: tokens[0])
            #expect(after.body == history.body, "the sentinel's messages changed")
            #expect(descriptors > 0)
            try await server.waitUntil(timeout: 10, "the frontend's descriptors back to \(descriptors)") {
                // -1 (the process gone) is not "back": it fails too.
                (0...descriptors).contains(Self.openDescriptors(frontend))
            }
        }

        // MARK: Corpus

        static func httpCorpus(token: String) -> [Case] {
            let ok = "GET /api/chat/rooms/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            func raw(_ text: String) -> [UInt8] { Array(text.utf8) }
            var cases: [Case] = [
                Case(name: "garbage", bytes: raw("GARBAGE\r\n\r\n"), status: nil),
                Case(name: "binary", bytes: (0..<256).map { UInt8(255 - $0) }, status: nil),
                Case(name: "HTTP/0.9", bytes: raw("GET /\r\n\r\n"), status: nil),
                Case(name: "empty lines", bytes: raw(String(repeating: "\r\n", count: 64) + "\u{0}"), status: nil),
                Case(name: "negative length", bytes: raw(ok + "Content-Length: -1\r\n\r\n"), status: 400),
                Case(name: "length not decimal", bytes: raw(ok + "Content-Length: 0x10\r\n\r\n"), status: 400),
                Case(name: "length list", bytes: raw(ok + "Content-Length: 1, 2\r\n\r\nab"), status: 400),
                Case(name: "conflicting lengths", bytes: raw(ok + "Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"), status: 400),
                Case(name: "length and chunked", bytes: raw(ok + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), status: 400),
                Case(name: "unknown coding", bytes: raw(ok + "Transfer-Encoding: gzip\r\n\r\n"), status: 501),
                Case(name: "coding list", bytes: raw(ok + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), status: 501),
                Case(name: "bad chunk size", bytes: raw("POST /api/chat/rooms/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), status: 400),
                Case(name: "space before colon", bytes: raw(ok + "X-Thing : 1\r\n\r\n"), status: 400),
                Case(name: "NUL in value", bytes: raw(ok + "X-Thing: a\u{0}b\r\n\r\n"), status: 400),
                Case(name: "CR in value", bytes: raw(ok + "X-Thing: a\rb\r\n\r\n"), status: 400),
                Case(name: "no Host", bytes: raw("GET /api/chat/rooms/ HTTP/1.1\r\n\r\n"), status: 400),
                Case(name: "two Hosts", bytes: raw(ok + "Host: evil.example\r\n\r\n"), status: 400),
                Case(name: "long target", bytes: raw("GET /" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\nHost: x\r\n\r\n"), status: 414),
                Case(name: "huge target", bytes: raw("GET /" + String(repeating: "a", count: 100_000) + " HTTP/1.1\r\nHost: x\r\n\r\n"), status: 414),
                Case(name: "too many headers", bytes: raw(ok + (0..<120).map { "X-\($0): 1\r\n" }.joined() + "\r\n"), status: 431),
                Case(name: "huge header", bytes: raw(ok + "X-Big: " + String(repeating: "b", count: 70_000) + "\r\n\r\n"), status: 431),
                Case(name: "HTTP/2.0 text", bytes: raw("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), status: 505),
                Case(name: "HTTP/1.2", bytes: raw("GET / HTTP/1.2\r\nHost: x\r\n\r\n"), status: 505),
                Case(name: "unknown method", bytes: raw("BREW /api/chat/rooms/ HTTP/1.1\r\nHost: x\r\n\r\n"), status: 501),
                Case(name: "WebDAV method", bytes: raw("PROPFIND /api/chat/rooms/ HTTP/1.1\r\nHost: x\r\n\r\n"), status: 501),
                Case(name: "slow head", bytes: raw("GET /api/chat/rooms/ HTTP/1.1\r\nHost: x\r\n"), status: 408),
                Case(name: "stalled body", bytes: raw(
                    "POST /api/chat/rooms/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"a"
                ), status: 408),
                Case(name: "wrong method", bytes: raw("PUT /api/chat/rooms/ HTTP/1.1\r\nHost: x\r\n\r\n"), status: 405),
                Case(name: "control in token", bytes: raw(ok + "Authorization: Bearer \(token.prefix(10))\u{1}\(token.dropFirst(10))\r\n\r\n"), status: nil),
                Case(name: "garbage media type", bytes: raw(
                    "POST /api/chat/rooms/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\nContent-Type: garbage\r\nContent-Length: 2\r\n\r\n{}"
                ), status: 415),
            ]
            // Every byte a header name may not hold.
            for byte in [UInt8(0), 1, 9, 0x20, 0x22, 0x28, 0x2C, 0x3A, 0x7F, 0x80, 0xFF] where byte != 0x3A {
                cases.append(Case(name: "header name byte \(byte)", bytes: raw(ok) + [UInt8(ascii: "X"), byte, UInt8(ascii: "Y")] + raw(": 1\r\n\r\n"), status: 400))
            }
            return cases
        }

        /// Message uploads with a byte >= 0x80 where a part header's name is
        /// read (MultipartKit 4.7.1 traps on it), in each part header position,
        /// with a length and chunked; a UTF-8 file name (a header value) still passes.
        static func multipartCorpus(token: String, room: String) -> [Case] {
            func request(_ body: [UInt8], chunked: Bool = false) -> [UInt8] {
                let head = "POST /api/chat/rooms/\(room)/messages/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\n"
                    + "Content-Type: multipart/form-data; boundary=XX\r\n"
                guard chunked else { return Array((head + "Content-Length: \(body.count)\r\n\r\n").utf8) + body }
                let size = Array(String(body.count, radix: 16).utf8)
                return Array((head + "Transfer-Encoding: chunked\r\n\r\n").utf8) + size + [13, 10] + body + Array("\r\n0\r\n\r\n".utf8)
            }
            let field = Array("Content-Disposition: form-data; name=\"content\"\r\n".utf8)
            let bodies: [(String, [UInt8])] = [
                ("first header byte 0x80", Array("--XX\r\n".utf8) + [0x80] + Array("--XX--\r\n".utf8)),
                ("header name byte 0xFF", Array("--XX\r\nContent-".utf8) + [0xFF] + Array("Disposition: x\r\n\r\nhi\r\n--XX--\r\n".utf8)),
                ("second header UTF-8", Array("--XX\r\n".utf8) + field + [0xC3, 0xA9] + Array(": x\r\n\r\nhi\r\n--XX--\r\n".utf8)),
                ("second part header", Array("--XX\r\n".utf8) + field + Array("\r\nhi\r\n--XX\r\n".utf8) + [0xE2, 0x80, 0xAE] + Array("\r\n--XX--\r\n".utf8)),
                ("preamble without CRLF", Array("x--XX\r\n".utf8) + [0x80] + Array(": 1\r\n--XX--\r\n".utf8)),
            ]
            var cases = bodies.flatMap { name, body in
                [Case(name: "multipart " + name, bytes: request(body), status: 400), Case(name: "chunked multipart " + name, bytes: request(body, chunked: true), status: 400)]
            }
            let named = Array("--XX\r\nContent-Disposition: form-data; name=\"file_attachment\"; filename=\"é.txt\"\r\n\r\nhi\r\n--XX--\r\n".utf8)
            cases.append(Case(name: "multipart UTF-8 file name", bytes: request(named), status: 201))
            return cases
        }

        /// Valid requests the mutations start from.
        static func templates(token: String, room: String) -> [[UInt8]] {
            let auth = "Authorization: Bearer \(token)\r\n"
            let message = #"{"content": "hello", "message_type": "text", "client_msg_id": "c-1"}"#
            let form = "--XX\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\nhi\r\n"
                + "--XX\r\nContent-Disposition: form-data; name=\"file_attachment\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nabc\r\n--XX--\r\n"
            let requests = [
                "GET /api/chat/rooms/?page=1&page_size=10 HTTP/1.1\r\nHost: 127.0.0.1\r\n\(auth)\r\n",
                "GET /api/chat/rooms/\(room)/messages/?page=2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\(auth)Connection: close\r\n\r\n",
                "POST /api/chat/rooms/\(room)/messages/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\(auth)Content-Type: application/json\r\nContent-Length: \(message.utf8.count)\r\n\r\n\(message)",
                "POST /api/chat/rooms/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\(auth)Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"name\": \"fuzz\"}\r\n0\r\n\r\n",
                "POST /api/chat/rooms/\(room)/messages/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\(auth)Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: \(form.utf8.count)\r\n\r\n\(form)",
                "GET /api/chat/search/messages/?q=see+attached&after=2025-01-01T00:00:00Z HTTP/1.1\r\nHost: 127.0.0.1\r\n\(auth)\r\n",
                "GET /ws/chat/\(room)/?token=\(token) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            ]
            return requests.map { Array($0.utf8) }
        }

        /// One to four random edits: flip, insert, delete, duplicate, or splice an extreme value.
        static func mutate(_ template: [UInt8], _ random: inout SeededRandom) -> [UInt8] {
            var bytes = template
            let extremes = ["-1", "9223372036854775808", "99999999999999999999999", "1e309", "%00", "\r\n", " ", "\u{0}", "%", "+", "\r\n\r\n", ":", "\u{7F}"]
            for _ in 0..<(1 + Int(random.next() % 4)) where !bytes.isEmpty {
                let at = Int(random.next() % UInt64(bytes.count))
                switch random.next() % 6 {
                case 0: bytes[at] ^= UInt8(1 << (random.next() % 8))
                case 1: bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: at)
                case 2: bytes.removeSubrange(at..<min(bytes.count, at + 1 + Int(random.next() % 16)))
                case 3: bytes.insert(contentsOf: bytes[at..<min(bytes.count, at + 1 + Int(random.next() % 64))], at: at)
                case 4: bytes.insert(contentsOf: Array(extremes[Int(random.next() % UInt64(extremes.count))].utf8), at: at)
                default: bytes[at] = [UInt8(ascii: "0"), UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: ":")][Int(random.next() % 4)]
                }
            }
            return bytes
        }

        // MARK: Checks

        static func exchange(_ port: Int, _ bytes: [UInt8]) throws -> RawConnection.Outcome {
            let connection = try RawConnection(port: port)
            connection.send(bytes)
            // 3 s: a search answer comes from a worker at nice 10, which a busy machine can starve for a second.
            return connection.read(timeout: 3.0, until: RawConnection.hasHead)
        }

        static func check(_ item: Case, _ outcome: RawConnection.Outcome) {
            if let problem = problem(item, outcome) {
                Issue.record("\(item.name): \(problem)")
            }
        }

        /// Why an outcome breaks the rules, or nil when it keeps them.
        static func problem(_ item: Case, _ outcome: RawConnection.Outcome) -> String? {
            guard let status = outcome.status else {
                return outcome.closed ? nil : "no answer and no close within 3 s (got \(outcome.bytes.count) bytes)"
            }
            if let expected = item.status {
                guard status == expected else { return "status \(status), expected \(expected): \(outcome.text.prefix(300))" }
            } else if status >= 500 && status != 501 && status != 505 {
                return "status \(status): \(outcome.text.prefix(300))"
            }
            // A refusal of the request's form closes the connection and says so.
            let refusal = item.status != nil && [400, 408, 414, 431, 501, 505].contains(status)
            if refusal && !outcome.text.lowercased().contains("connection: close") {
                return "status \(status) without Connection: close"
            }
            if status == 405 && !outcome.text.contains(item.status == 405 ? "Allow: GET, HEAD, POST" : "Allow: ") {
                return "405 without the Allow header: \(outcome.text.prefix(300))"
            }
            return nil
        }

        /// Extreme numbers, dates and lengths in every query parameter and
        /// JSON field: refused or accepted, never a server error.
        static func extremeValues(_ server: TestServer, token: String, room: String) async throws {
            let values = [
                "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-1", "0", "1e309", "NaN", "",
                "%00", "100000000-01-01T00:00:00Z", "0000-01-01", "-0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
                "2025-13-45", String(repeating: "9", count: 400), String(repeating: "a", count: 5000), "%25", "+", "'--", "\"", "*", "NEAR(",
            ]
            let lists = ["/api/chat/rooms/", "/api/chat/rooms/\(room)/messages/", "/api/chat/search/messages/", "/api/chat/search/rooms/"]
            let names = ["page", "page_size", "before", "after", "room_type", "discover", "q", "room", "sender"]
            for list in lists {
                for name in names {
                    for value in values {
                        let encoded = value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
                        let extra = name == "q" ? "" : "&q=a"
                        let response = try await server.request("GET", "\(list)?\(name)=\(encoded)\(extra)", token: token)
                        #expect(response.status < 500, "GET \(list)?\(name)=\(value.prefix(40)): \(response.status) \(response.text.prefix(200))")
                    }
                }
            }
            let jsonValues: [Any] = [
                NSNumber(value: Int64.max), NSNumber(value: Int64.min), NSNumber(value: -1), NSNumber(value: 1e300), NSNumber(value: true),
                "", " ", String(repeating: "x", count: 20_000), String(repeating: "👍", count: 100), "\u{0}", NSNull(), [String](), ["a": 1],
                Array(repeating: "00000000-0000-0000-0000-000000000000", count: 1200),
            ]
            let message = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: token, json: ["content": "target"])
            let messageID = try #require(message.object["id"] as? String)
            let endpoints: [(String, String, [String])] = [
                ("POST", "/api/chat/rooms/", ["name", "room_type", "participant_ids"]),
                ("PATCH", "/api/chat/rooms/\(room)/", ["name", "participant_ids"]),
                ("POST", "/api/chat/rooms/\(room)/messages/", ["content", "message_type", "reply_to", "client_msg_id"]),
                ("PATCH", "/api/chat/rooms/\(room)/messages/\(messageID)/", ["content"]),
                ("POST", "/api/chat/rooms/\(room)/messages/\(messageID)/react/", ["emoji", "action"]),
                ("POST", "/api/chat/rooms/direct_message/", ["user_id"]),
            ]
            for (method, path, fields) in endpoints {
                for field in fields {
                    for value in jsonValues {
                        var body: [String: Any] = ["content": "x"]
                        body[field] = value
                        let response = try await server.request(method, path, token: token, json: body)
                        #expect(response.status < 500, "\(method) \(path) \(field): \(response.status) \(response.text.prefix(200))")
                    }
                }
            }
            // JSON nested past any sane depth.
            let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
            let response = try await server.request(
                "POST", "/api/chat/rooms/", token: token, body: Data(deep.utf8), headers: ["Content-Type": "application/json"]
            )
            #expect(response.status == 400, "deep JSON: \(response.status)")
        }

        /// Each frame breaks RFC 6455 and must close the socket with its code.
        static func webSocketCorpus(_ server: TestServer, token: String, room: String) throws {
            let utf8Bad: [UInt8] = [0xC3, 0x28]
            let cases: [(name: String, first: UInt8, payload: [UInt8], masked: Bool, code: Int)] = [
                ("unmasked", 0x81, Array(#"{"type":"ping"}"#.utf8), false, 1002),
                ("RSV1", 0xC1, Array(#"{"type":"ping"}"#.utf8), true, 1002),
                ("RSV2", 0xA1, Array("{}".utf8), true, 1002),
                ("RSV3", 0x91, Array("{}".utf8), true, 1002),
                ("opcode 3", 0x83, [], true, 1002),
                ("opcode 0xB", 0x8B, [], true, 1002),
                ("long ping", 0x89, [UInt8](repeating: 1, count: 126), true, 1002),
                ("fragmented ping", 0x09, [1], true, 1002),
                ("continuation first", 0x80, Array("{}".utf8), true, 1002),
                ("close of 1 byte", 0x88, [3], true, 1002),
                ("close 999", 0x88, [0x03, 0xE7], true, 1002),
                ("close 1004", 0x88, [0x03, 0xEC], true, 1002),
                ("close 1005", 0x88, [0x03, 0xED], true, 1002),
                ("close 1006", 0x88, [0x03, 0xEE], true, 1002),
                ("close 1015", 0x88, [0x03, 0xF7], true, 1002),
                ("close 2000", 0x88, [0x07, 0xD0], true, 1002),
                ("close 5000", 0x88, [0x13, 0x88], true, 1002),
                ("close reason not UTF-8", 0x88, [0x03, 0xE8] + utf8Bad, true, 1007),
                ("text not UTF-8", 0x81, utf8Bad, true, 1007),
                ("frame over the limit", 0x81, [UInt8](repeating: 0x20, count: 70_000), true, 1009),
            ]
            for item in cases {
                let socket = try server.webSocket("/ws/chat/\(room)/", token: token)
                let started = Date()
                try socket.send(firstByte: item.first, payload: item.payload, masked: item.masked)
                #expect(socket.waitForClose(timeout: 1), "\(item.name): not closed within 1 s")
                #expect(socket.closeCode == item.code, "\(item.name): closed with \(socket.closeCode.map(String.init) ?? "no close frame"), expected \(item.code)")
                #expect(Date().timeIntervalSince(started) < 1.5, "\(item.name): slow")
            }
            // Fragments that together pass 64 KiB: 1009 at the fragment that passes it.
            let socket = try server.webSocket("/ws/chat/\(room)/", token: token)
            let piece = [UInt8](repeating: 0x20, count: 30_000)
            try socket.send(firstByte: 0x01, payload: piece)
            try socket.send(firstByte: 0x00, payload: piece)
            try socket.send(firstByte: 0x00, payload: piece)
            #expect(socket.waitForClose(timeout: 1))
            #expect(socket.closeCode == 1009, "fragments: \(socket.closeCode.map(String.init) ?? "none")")
            // A handshake and the first frame in one write: the bytes after the
            // head belong to the WebSocket, not to the HTTP handlers (a
            // mutation once crashed the frontend here).
            let eager = try RawConnection(port: server.port)
            let handshake = "GET /ws/chat/\(room)/?token=\(token) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            let ping: [UInt8] = [0x89, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2]  // a masked ping, "hi"
            eager.send(Array(handshake.utf8) + ping)
            // The pong anywhere after the head: room events (the sockets above
            // leaving, this one joining) may come before or after it.
            let pong: [UInt8] = [0x8A, 0x02, 0x68, 0x69]
            let hasPong = { (bytes: [UInt8]) in bytes.count >= 4 && (0...(bytes.count - 4)).contains { Array(bytes[$0..<$0 + 4]) == pong } }
            let answer = eager.read(timeout: 5) { hasPong($0) }
            #expect(answer.status == 101, "\(answer.text.prefix(200))")
            #expect(hasPong(answer.bytes), "no pong for the ping sent with the handshake: \(String(decoding: answer.bytes.suffix(400), as: UTF8.self))")

            // A binary frame is an error event; the socket stays open and serves.
            let open = try server.webSocket("/ws/chat/\(room)/", token: token)
            try open.send(opcode: .binary, payload: [1, 2, 3])
            #expect(try open.receive(type: "error", timeout: 5) != nil)
            try open.send(json: ["type": "ping"])
            #expect(try open.receive(type: "pong", timeout: 5) != nil)
            open.close()
        }

        // MARK: Process state

        /// Each child's name, pid and restart count, from `chatd ctl status`.
        static func processes(_ server: TestServer) throws -> [String] {
            let output = try server.ctl(["status", "--json"])
            let status = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
            let children = status["children"] as? [[String: Any]] ?? []
            return children.map { "\($0["child"] ?? "?") pid \($0["pid"] ?? "?") restarts \($0["restarts"] ?? "?")" }.sorted()
        }

        static func openDescriptors(_ pid: Int32) -> Int {
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
        }
    }
}
