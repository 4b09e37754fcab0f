import ChatCore
import ChatTesting
import Foundation
import Testing

/// Every end-to-end suite nests in this one, so they run one at a time: each
/// starts a real server with its children, and the machine has two cores.
@Suite(.serialized) struct EndToEnd {}

/// The long runs (the soak, presence under faults) spend most of their time
/// pacing load and waiting for the system to settle, so they run one at a
/// time beside `EndToEnd` rather than after it: two servers at once at most.
/// Their assertions are about what arrives and how much memory grows, not
/// about how fast, so sharing the cores does not change their outcome.
@Suite(.serialized) struct LongRuns {}

/// Shared steps of the end-to-end tests.
enum Steps {
    /// For tests that send bursts far past what one user may (hundreds of
    /// messages a second): rate limits would measure the limiter.
    static let noRateLimits = ["CHAT_RATE_LIMITS": "off"]

    /// Makes `subs` known to the server (users are provisioned on first request)
    /// and returns their tokens.
    static func users(_ server: TestServer, _ subs: String...) async throws -> [String] {
        var tokens: [String] = []
        for sub in subs {
            let token = try await server.token(sub: sub, name: sub.capitalized)
            let response = try await server.request("GET", "/api/chat/rooms/", token: token)
            #expect(response.status == 200)
            tokens.append(token)
        }
        return tokens
    }

    /// Creates a group room of the token's user with the given other subjects.
    static func room(_ server: TestServer, token: String, members: [String], name: String = "team") async throws -> String {
        let response = try await server.request(
            "POST", "/api/chat/rooms/", token: token,
            json: ["name": name, "participant_ids": members.map(IDs.userID(forSubject:))]
        )
        #expect(response.status == 201, "\(response.text)")
        return try #require(response.object["id"] as? String)
    }

    /// Contents of a room's messages, oldest first (all pages of 100).
    static func contents(_ server: TestServer, token: String, room: String) async throws -> [String] {
        var contents: [String] = []
        var page = 1
        while true {
            let response = try await server.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=100&page=\(page)", token: token)
            #expect(response.status == 200)
            let results = response.object["results"] as? [[String: Any]] ?? []
            contents += results.compactMap { $0["content"] as? String }
            if response.object["next"] is NSNull || response.object["next"] == nil { break }
            page += 1
        }
        return contents.reversed()
    }
}

extension WebSocketClient {
    /// Receives `message` events until one with `content` arrives; returns it
    /// and how many events with that content came on the way (including it).
    func receiveMessage(content: String, timeout: Double = 10) throws -> [String: Any]? {
        let deadline = Date().addingTimeInterval(timeout)
        while deadline.timeIntervalSinceNow > 0 {
            guard let event = try receive(type: "message", timeout: deadline.timeIntervalSinceNow) else { return nil }
            if let message = event["message"] as? [String: Any], message["content"] as? String == content { return message }
        }
        return nil
    }
}
