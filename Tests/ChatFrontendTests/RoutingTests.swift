import ChatCore
import Foundation
import Testing

@testable import ChatFrontend

/// The router itself: every route behind its access rule (the caller in the
/// request context, set by `AuthenticatorMiddleware`), 405 with `Allow`, HEAD
/// wherever GET is, query strings as browsers encode them, media types, links.
@Suite struct Routing {
    /// Every route but the open ones, with its `:name` segments filled in.
    static func authenticatedPaths(_ server: InProcessServer, room: String, message: String) -> [(String, String)] {
        ChatAPI(services: server.services).routes.filter { $0.access != .open }.map { route in
            let path = route.path.replacingOccurrences(of: ":room", with: room).replacingOccurrences(of: ":message", with: message)
                .replacingOccurrences(of: ":user", with: message).replacingOccurrences(of: ":call", with: message)
                .replacingOccurrences(of: ":device", with: message)
            return (route.method.rawValue, path)
        }
    }

    @Test func everyRouteButHealthzAnswers401WithTheSameBody() async throws {
        try await InProcessServer.run { server in
            #expect(try await server.request("GET", "/healthz").status == 200)
            #expect(try await server.request("HEAD", "/healthz").status == 200)
            let paths = Self.authenticatedPaths(server, room: IDs.uuid7(), message: IDs.uuid7())
            // 23, issue 16's roles and pins (8), mute (POST, DELETE), notifications, mentions, users and blocks (5), webhooks (5),
            // issue 17's calls (7) and keys (3).
            #expect(paths.count == 55)
            #expect(
                ChatAPI(services: server.services).routes.filter { $0.access == .open }.map(\.path)
                    == ["/healthz", "/api/openapi.json", "/api/openapi.yaml", "/metrics", "/", "/app/:file",
                        // An incoming webhook's secret URL: its token is the credential.
                        "/api/chat/rooms/:room/webhooks/incoming/:hook/:token/"]
            )
            for (method, path) in paths + paths.filter({ $0.0 == "GET" }).map({ ("HEAD", $0.1) }) {
                let anonymous = try await server.request(method, path)
                #expect(anonymous.status == 401, "\(method) \(path)")
                #expect(anonymous.text == #"{"detail":"Authentication credentials were not provided."}"#, "\(method) \(path)")
                let basic = try await server.request(method, path, headers: ["Authorization": "Basic YWxpY2U6cHc="])
                #expect(basic.status == 401, "\(method) \(path)")
                #expect(basic.object["detail"] as? String == "Authorization header must use the Bearer scheme.")
                // The media type is checked after the caller, as DRF does.
                let typed = try await server.request(method, path, body: Data("{}".utf8), headers: ["Content-Type": "garbage"])
                #expect(typed.status == 401, "\(method) \(path)")
            }
        }
    }

    /// `/metrics` is open (Prometheus scrapes without a token) and Prometheus
    /// text; `metrics: false` removes it. (Its contents: EndToEnd.Metrics.)
    @Test func metricsIsOpenTextAndCanBeTurnedOff() async throws {
        try await InProcessServer.run { server in
            let scrape = try await server.request("GET", "/metrics")
            #expect(scrape.status == 200)
            #expect(scrape.headers["Content-Type"] ?? scrape.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
            #expect(try await server.request("HEAD", "/metrics").status == 200)
        }
        try await InProcessServer.run(configure: { $0.metrics = false }) { server in
            let response = try await server.request("GET", "/metrics")
            #expect(response.status == 404)
        }
    }

    @Test func queriesMethodsMediaTypesAndLinks() async throws {
        try await InProcessServer.run { server in
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            for text in ["see attached", "nothing here", "see+attached literally"] {
                #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": text]).status == 201)
            }

            // `+` is a space, as URLSearchParams and urlencode send it; %2B is a plus.
            try await server.waitUntil(timeout: 10, "the search index") {
                let found = try await server.request("GET", "/api/chat/search/messages/?q=see+attached", token: tokens[1])
                return (found.json as? [[String: Any]])?.map { $0["content"] as? String } == ["see attached"]
            }
            let plus = try await server.request("GET", "/api/chat/search/messages/?q=see%2Battached", token: tokens[1])
            #expect((plus.json as? [[String: Any]])?.map { $0["content"] as? String } == ["see+attached literally"])
            for blank in ["+++", "%20%20", "%09"] {
                let response = try await server.request("GET", "/api/chat/search/messages/?q=\(blank)", token: tokens[1])
                #expect(response.status == 400, "q=\(blank)")
                #expect(response.object["error"] as? String == "Search query is required")
            }

            // A known path with another method: 405 and Allow; HEAD wherever GET is.
            let wrong = try await server.request("DELETE", "/api/chat/rooms/\(room)/messages/", token: tokens[0])
            #expect(wrong.status == 405)
            #expect(wrong.headers["allow"] == "GET, HEAD, POST")
            #expect(wrong.object["detail"] as? String == "Method \"DELETE\" not allowed.")
            #expect(try await server.request("GET", "/api/chat/nothing/", token: tokens[0]).status == 404)
            #expect(try await server.request("HEAD", "/api/chat/rooms/", token: tokens[0]).status == 200)

            // A body of a type no endpoint takes is 415, even where the body is not read.
            for path in ["/api/chat/rooms/\(room)/mark_read/", "/api/chat/rooms/", "/api/chat/rooms/\(room)/messages/"] {
                let response = try await server.request("POST", path, token: tokens[1], body: Data("{}".utf8), headers: ["Content-Type": "garbage"])
                #expect(response.status == 415, "\(path): \(response.status)")
            }
            // Multipart only where a message is posted.
            let multipart = try await server.request(
                "POST", "/api/chat/rooms/", token: tokens[1], body: Data("--x--\r\n".utf8), headers: ["Content-Type": "multipart/form-data; boundary=x"]
            )
            #expect(multipart.status == 415)
            // Without a token, 401 comes first, as DRF authenticates before it parses.
            let anonymous = try await server.request("POST", "/api/chat/rooms/", body: Data("{}".utf8), headers: ["Content-Type": "garbage"])
            #expect(anonymous.status == 401)

            // Links come from the configured address.
            let page = try await server.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=1", token: tokens[0])
            #expect(page.object["next"] as? String == "http://127.0.0.1:\(server.port)/api/chat/rooms/\(room)/messages/?page=2&page_size=1")
        }
    }

    /// Every route's path, each method: the route's own methods answer (401
    /// without a token, 200 for the open ones), any other is 405 with exactly the
    /// route's methods in `Allow`, a literal segment (`direct_message`) taking
    /// precedence over a `:room` one as it does in the router.
    @Test func every405NamesTheMethodsThatAnswer() async throws {
        try await InProcessServer.run { server in
            var byPath: [String: Set<String>] = [:]
            var open: Set<String> = []
            for route in ChatAPI(services: server.services).routes {
                if route.access == .open { open.insert(route.path) }
                byPath[route.path, default: []].insert(route.method.rawValue)
                if route.method == .get { byPath[route.path]?.insert("HEAD") }
            }
            #expect(byPath["/api/chat/rooms/direct_message/"] == ["POST"])
            for (pattern, methods) in byPath {
                let path = pattern.replacingOccurrences(of: ":room", with: IDs.uuid7()).replacingOccurrences(of: ":message", with: IDs.uuid7())
                    .replacingOccurrences(of: ":file", with: "app.js")
                for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
                    let response = try await server.request(method, path)
                    if methods.contains(method) {
                        // An incoming webhook's URL with no such webhook is 404, as a wrong token is.
                        let opened = pattern.hasSuffix(":token/") ? 404 : 200
                        #expect(response.status == (open.contains(pattern) ? opened : 401), "\(method) \(pattern)")
                    } else {
                        #expect(response.status == 405, "\(method) \(pattern)")
                        #expect(response.headers["allow"] == methods.sorted().joined(separator: ", "), "\(method) \(pattern)")
                    }
                }
            }
        }
    }

    @Test func aThrottledCallerIsToldWhenToComeBack() async throws {
        // One request per 10 s after a burst of 2: the third is refused however slow the machine.
        try await InProcessServer.run(configure: { $0.restRequestsPerSecond = 0.1; $0.restBurst = 2 }) { server in
            let token = try await server.token(sub: "alice")
            var statuses: [Int] = []
            var retryAfter: String?
            for _ in 0..<4 {
                let response = try await server.request("GET", "/api/chat/rooms/", token: token)
                statuses.append(response.status)
                if response.status == 429 { retryAfter = response.headers["retry-after"] }
            }
            #expect(statuses == [200, 200, 429, 429])
            #expect(retryAfter.flatMap(Int.init).map { $0 >= 1 } == true)
            // Another caller is not throttled by alice's burst.
            #expect(try await server.request("GET", "/api/chat/rooms/", token: try await server.token(sub: "bob")).status == 200)
        }
    }
}
