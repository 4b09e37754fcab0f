import ChatConfig
import ChatCore
import Foundation
import Testing

/// Shared steps of the in-process tests, as `EndToEndTests` has them for a real server.
enum Steps {
    /// For tests that send far more than one user may in a second: rate
    /// limits would measure the limiter.
    static let noRateLimits: @Sendable (inout ChatConfig) -> Void = { $0.rateLimits = false }

    /// Makes `subs` known (users are provisioned on first request) and returns their tokens.
    static func users(_ server: InProcessServer, _ subs: String...) async throws -> [String] {
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
    static func room(_ server: InProcessServer, token: String, members: [String], name: String = "team") async throws -> String {
        let response = try await server.request(
            "POST", "/api/chat/rooms/", token: token,
            json: ["name": name, "participant_ids": members.map(IDs.userID(forSubject:))]
        )
        #expect(response.status == 201, "\(response.text)")
        return try #require(response.object["id"] as? String)
    }

    /// Contents of a room's messages, oldest first (all pages of 100).
    static func contents(_ server: InProcessServer, token: String, room: String) async throws -> [String] {
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
