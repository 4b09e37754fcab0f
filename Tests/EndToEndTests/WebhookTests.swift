import ChatCore
import ChatTesting
import Crypto
import Foundation
import Testing

extension EndToEnd {
    /// Issue 16's webhooks against the real server and a receiver on 127.0.0.1
    /// (allowed by `CHAT_WEBHOOKS_ALLOW_PRIVATE=1`, as every test but the SSRF one says).
    @Suite struct WebhookDeliveries {
        static let allowPrivate = ["CHAT_WEBHOOKS_ALLOW_PRIVATE": "1"]

        /// Creates a webhook; returns its id and secret.
        static func hook(_ server: TestServer, token: String, room: String, url: String,
                         events: [String] = ["message_created"]) async throws -> (id: String, secret: String) {
            let created = try await server.request("POST", "/api/chat/rooms/\(room)/webhooks/", token: token, json: ["url": url, "events": events])
            #expect(created.status == 201, "\(created.text)")
            return (try #require(created.object["id"] as? String), try #require(created.object["secret"] as? String))
        }

        static func send(_ server: TestServer, token: String, room: String, _ content: String) async throws -> String {
            let sent = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: token, json: ["content": content])
            #expect(sent.status == 201, "\(sent.text)")
            return try #require(sent.object["id"] as? String)
        }

        static func hex(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

        @Test func signedDeliveryOfEachEvent() async throws {
            let receiver = try WebhookReceiver()
            defer { receiver.stop() }
            let server = try await TestServer.start(environment: Self.allowPrivate)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let (hookID, secret) = try await Self.hook(server, token: tokens[0], room: room, url: receiver.url(),
                                                       events: ["message_created", "message_edited", "message_deleted", "member_left"])
            // The list shows it without its secret.
            let list = try await server.request("GET", "/api/chat/rooms/\(room)/webhooks/", token: tokens[0])
            let hooks = try #require(list.json as? [[String: Any]])
            #expect(hooks.map { $0["id"] as? String } == [hookID] && hooks.first?["secret"] == nil)

            let message = try await Self.send(server, token: tokens[0], room: room, "hello hooks")
            #expect(try await server.request("PATCH", "/api/chat/rooms/\(room)/messages/\(message)/", token: tokens[0],
                                             json: ["content": "edited"]).status == 200)
            #expect(try await server.request("DELETE", "/api/chat/rooms/\(room)/messages/\(message)/", token: tokens[0]).status == 204)
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/leave/", token: tokens[1]).status == 200)
            try await server.waitUntil(timeout: 15, "four deliveries") { receiver.requests.count >= 4 }

            // One webhook's deliveries run side by side: they may arrive in any order.
            let order = ["message_created", "message_edited", "message_deleted", "member_left"]
            let requests = receiver.requests.sorted {
                order.firstIndex(of: $0.headers["x-chat-event"] ?? "") ?? 9 < order.firstIndex(of: $1.headers["x-chat-event"] ?? "") ?? 9
            }
            #expect(requests.map { $0.headers["x-chat-event"] ?? "" } == order)
            for request in requests {
                let mac = HMAC<SHA256>.authenticationCode(for: request.body, using: SymmetricKey(data: Array(secret.utf8)))
                #expect(request.headers["x-chat-signature"] == "sha256=" + Self.hex(mac))
                let body = try #require(try JSONSerialization.jsonObject(with: request.body) as? [String: Any])
                #expect(body["id"] as? String == request.headers["x-chat-delivery"])
                #expect(body["event"] as? String == request.headers["x-chat-event"] && body["room"] as? String == room)
                #expect(body["timestamp"] is String && body["data"] is [String: Any])
            }
            let first = try JSONSerialization.jsonObject(with: requests[0].body) as? [String: Any]
            #expect((first?["data"] as? [String: Any])?["content"] as? String == "hello hooks")

            #expect(try await server.request("DELETE", "/api/chat/rooms/\(room)/webhooks/\(hookID)/", token: tokens[0]).status == 204)
            _ = try await Self.send(server, token: tokens[0], room: room, "after delete")
            let empty = try await server.request("GET", "/api/chat/rooms/\(room)/webhooks/", token: tokens[0])
            #expect((empty.json as? [Any])?.isEmpty == true)
        }

        @Test func memberJoinedOncePerJoin() async throws {
            let receiver = try WebhookReceiver()
            defer { receiver.stop() }
            let server = try await TestServer.start(environment: Self.allowPrivate)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "carol", "dave")
            let created = try await server.request("POST", "/api/chat/rooms/", token: tokens[0], json: ["name": "town", "room_type": "public"])
            let room = try #require(created.object["id"] as? String)
            _ = try await Self.hook(server, token: tokens[0], room: room, url: receiver.url(), events: ["member_joined"])
            // carol joins twice (the second is a no-op), dave by opening the room's socket.
            for _ in 0..<2 { #expect(try await server.request("POST", "/api/chat/rooms/\(room)/join/", token: tokens[1]).status == 200) }
            let dave = try server.webSocket("/ws/chat/\(room)/", token: tokens[2])
            defer { dave.close() }
            try await server.waitUntil(timeout: 15, "two deliveries") { receiver.requests.count >= 2 }
            let users = try receiver.requests.map { request -> String in
                let body = try JSONSerialization.jsonObject(with: request.body) as? [String: Any]
                return ((body?["data"] as? [String: Any])?["user"] as? [String: Any])?["id"] as? String ?? ""
            }
            #expect(users.sorted() == [IDs.userID(forSubject: "carol"), IDs.userID(forSubject: "dave")].sorted())
        }

        @Test func failedDeliveryRetriedWithTheSameID() async throws {
            // The first attempt gets a 500, the next a 200.
            let receiver = try WebhookReceiver { _, index in .status(index == 0 ? 500 : 200) }
            defer { receiver.stop() }
            let server = try await TestServer.start(environment: Self.allowPrivate)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice")
            let room = try await Steps.room(server, token: tokens[0], members: [])
            _ = try await Self.hook(server, token: tokens[0], room: room, url: receiver.url())
            _ = try await Self.send(server, token: tokens[0], room: room, "retry me")
            // The first retry comes within 10 s (api-contract.md).
            try await server.waitUntil(timeout: 15, "a retry") { receiver.requests.count >= 2 }
            let requests = receiver.requests
            #expect(requests[0].headers["x-chat-delivery"] != nil)
            #expect(requests[0].headers["x-chat-delivery"] == requests[1].headers["x-chat-delivery"])
            #expect(requests[0].body == requests[1].body)
            print("webhook retry came \(requests[1].at.timeIntervalSince(requests[0].at)) s after the 500")
        }

        @Test func failuresAreKeptAndListed() async throws {
            let receiver = try WebhookReceiver { _, _ in .status(503) }
            defer { receiver.stop() }
            // A 3-second retry window: the first retry, then the delivery is a failure.
            let server = try await TestServer.start(environment: Self.allowPrivate.merging(["CHAT_WEBHOOKS_RETRY_WINDOW_SECONDS": "3"]) { $1 })
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice")
            let room = try await Steps.room(server, token: tokens[0], members: [])
            let (hookID, _) = try await Self.hook(server, token: tokens[0], room: room, url: receiver.url())
            _ = try await Self.send(server, token: tokens[0], room: room, "doomed")
            var failures: [[String: Any]] = []
            try await server.waitUntil(timeout: 20, "a failure listed") {
                let page = try await server.request("GET", "/api/chat/rooms/\(room)/webhooks/\(hookID)/failures/", token: tokens[0])
                failures = page.object["results"] as? [[String: Any]] ?? []
                return !failures.isEmpty
            }
            #expect(failures.first?["event"] as? String == "message_created")
            #expect(failures.first?["last_status"] as? Int == 503)
            #expect(failures.first?["id"] as? String == receiver.requests.first?.headers["x-chat-delivery"])
        }

        @Test func workerKilledMidDeliveryLosesNothing() async throws {
            // The first request is held unanswered (the worker dies while it
            // waits); every later one is answered 200.
            let receiver = try WebhookReceiver { _, index in index == 0 ? .never : .status(200) }
            defer { receiver.stop() }
            let server = try await TestServer.start(environment: Self.allowPrivate)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice")
            let room = try await Steps.room(server, token: tokens[0], members: [])
            _ = try await Self.hook(server, token: tokens[0], room: room, url: receiver.url())
            _ = try await Self.send(server, token: tokens[0], room: room, "survive")
            try await server.waitUntil(timeout: 10, "the first attempt") { !receiver.requests.isEmpty }
            let worker = try #require(server.childPIDs(matching: "worker --role webhooks").first)
            #expect(kill(worker, SIGKILL) == 0)
            try await server.waitUntil(timeout: 10, "a new webhooks worker") {
                let pids = server.childPIDs(matching: "worker --role webhooks")
                return !pids.isEmpty && !pids.contains(worker)
            }
            // The killed worker's claim runs out (20 s) and the delivery goes again.
            try await server.waitUntil(timeout: 40, "the delivery again") { receiver.requests.count >= 2 }
            let ids = receiver.requests.map { $0.headers["x-chat-delivery"] }
            #expect(ids[0] != nil && ids[0] == ids[1])
        }

        @Test func deadReceiverDoesNotSlowMessages() async throws {
            let dead = try WebhookReceiver { _, _ in .never }
            let live = try WebhookReceiver()
            defer { dead.stop(); live.stop() }
            let server = try await TestServer.start(environment: Self.allowPrivate)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let other = try await Steps.room(server, token: tokens[0], members: ["bob"], name: "other")
            _ = try await Self.hook(server, token: tokens[0], room: room, url: dead.url())
            _ = try await Self.hook(server, token: tokens[0], room: other, url: live.url())
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            var latencies: [Double] = []
            for index in 0..<20 {
                let started = Date()
                _ = try await Self.send(server, token: tokens[0], room: room, "m\(index)")
                #expect(try bob.receiveMessage(content: "m\(index)") != nil)
                latencies.append(Date().timeIntervalSince(started) * 1000)
            }
            // The other room's webhook still gets its delivery while the dead one holds its slots.
            _ = try await Self.send(server, token: tokens[0], room: other, "elsewhere")
            try await server.waitUntil(timeout: 10, "the live receiver's delivery") { !live.requests.isEmpty }
            let sorted = latencies.sorted()
            print("message delivery with a receiver that never answers: median \(sorted[10]) ms, max \(sorted.last ?? 0) ms (20 messages)")
            #expect(!dead.requests.isEmpty)
        }

        @Test func privateTargetsRefusedWithoutTheSetting() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice")
            let room = try await Steps.room(server, token: tokens[0], members: [])
            for url in ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.1.2.3/", "http://[::1]/", "http://169.254.169.254/latest"] {
                let refused = try await server.request("POST", "/api/chat/rooms/\(room)/webhooks/", token: tokens[0],
                                                       json: ["url": url, "events": ["message_created"]])
                #expect(refused.status == 400, "\(url): \(refused.text)")
                #expect(refused.object["url"] != nil, "\(url): \(refused.text)")
            }
            let badEvent = try await server.request("POST", "/api/chat/rooms/\(room)/webhooks/", token: tokens[0],
                                                    json: ["url": "http://127.0.0.1/", "events": ["message_exploded"]])
            #expect(badEvent.status == 400 && badEvent.object["events"] != nil, "\(badEvent.text)")
            let badURL = try await server.request("POST", "/api/chat/rooms/\(room)/webhooks/", token: tokens[0],
                                                  json: ["url": "ftp://example.com/", "events": ["message_created"]])
            #expect(badURL.status == 400 && badURL.object["url"] != nil, "\(badURL.text)")
        }

        @Test func managementRefusals() async throws {
            let server = try await TestServer.start(environment: Self.allowPrivate)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob", "carol")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let body: [String: Any] = ["url": "http://127.0.0.1:9/", "events": ["message_created"]]
            let (hookID, _) = try await Self.hook(server, token: tokens[0], room: room, url: "http://127.0.0.1:9/")
            // bob is a member, not the owner; carol is no member.
            for token in [tokens[1], tokens[2]] {
                #expect(try await server.request("POST", "/api/chat/rooms/\(room)/webhooks/", token: token, json: body).status == 403)
                #expect(try await server.request("GET", "/api/chat/rooms/\(room)/webhooks/", token: token).status == 403)
                #expect(try await server.request("DELETE", "/api/chat/rooms/\(room)/webhooks/\(hookID)/", token: token).status == 403)
                #expect(try await server.request("GET", "/api/chat/rooms/\(room)/webhooks/\(hookID)/failures/", token: token).status == 403)
                #expect(try await server.request("POST", "/api/chat/rooms/\(room)/webhooks/incoming/", token: token,
                                                 json: ["name": "bot"]).status == 403)
            }
            // An admin manages them like the owner (Permissions' manageWebhooks row).
            let bob = IDs.userID(forSubject: "bob")
            #expect(try await server.request("PATCH", "/api/chat/rooms/\(room)/members/\(bob)/", token: tokens[0], json: ["role": "admin"]).status == 200)
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/webhooks/", token: tokens[1], json: body).status == 201)
            #expect(try await server.request("GET", "/api/chat/rooms/\(room)/webhooks/", token: tokens[1]).status == 200)
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/webhooks/", json: body).status == 401)
            #expect(try await server.request("DELETE", "/api/chat/rooms/\(room)/webhooks/\(UUID().uuidString.lowercased())/",
                                             token: tokens[0]).status == 404)
        }

        @Test func incomingWebhookPostsAsItsBot() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            let created = try await server.request("POST", "/api/chat/rooms/\(room)/webhooks/incoming/", token: tokens[0], json: ["name": "CI bot"])
            #expect(created.status == 201, "\(created.text)")
            #expect(created.object["name"] as? String == "CI bot" && created.object["id"] is String)
            let link = try #require(created.object["url"] as? String)
            let url = try #require(URL(string: link))
            let posted = try await server.request("POST", url.path + "/", json: ["content": "build passed"])
            #expect(posted.status == 201, "\(posted.text)")
            #expect((posted.object["sender"] as? [String: Any])?["display_name"] as? String == "CI bot")
            let event = try #require(try bob.receiveMessage(content: "build passed"))
            #expect((event["sender"] as? [String: Any])?["display_name"] as? String == "CI bot")
            // A wrong token, another room's path: 404, and nothing posted.
            let wrong = url.path.replacingOccurrences(of: String(url.path.split(separator: "/").last!), with: String(repeating: "0", count: 64))
            #expect(try await server.request("POST", wrong + "/", json: ["content": "forged"]).status == 404)
            #expect(try await server.request("POST", url.path + "/", json: ["nothing": 1]).status == 400)
        }
    }
}
