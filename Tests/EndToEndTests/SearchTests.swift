import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 5: the search worker, killed and rebuilt (the endpoints: ChatFrontendTests.Search).
    @Suite struct Search {
        static func search(_ server: TestServer, _ token: String, _ query: String) async throws -> [String] {
            let q = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
            let response = try await server.request("GET", "/api/chat/search/messages/?q=\(q)", token: token)
            #expect(response.status == 200, "\(response.text)")
            return (response.json as? [[String: Any]] ?? []).compactMap { $0["content"] as? String }
        }

        @Test func deletedIndexIsRebuiltAndAKilledWorkerCatchesUp() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            defer { server.stop() }
            let t = try await Steps.users(server, "alice")
            let room = try await Steps.room(server, token: t[0], members: [])
            let socket = try server.webSocket("/ws/chat/\(room)/", token: t[0])
            for i in 0..<100 { try socket.send(json: ["type": "message", "content": "first \(i)"]) }
            #expect(try socket.receiveMessage(content: "first 99") != nil)
            try await server.waitUntil(timeout: 10, "indexing") { try await Self.search(server, t[0], "first 99") == ["first 99"] }

            // The index file deleted under the running worker (SQLite's: on
            // PostgreSQL the index is a table of the database, no file).
            if !PostgresServer.enabled {
                let index = server.dataDir + "/search.sqlite"
                #expect(unlink(index) == 0)
                try socket.send(json: ["type": "message", "content": "wake up"])
                try await server.waitUntil(timeout: 15, "the rebuilt index") {
                    try await Self.search(server, t[0], "first 42") == ["first 42"] && FileManager.default.fileExists(atPath: index)
                }
            }

            // The worker killed while messages flow; after its restart it has every one.
            let worker = try #require(server.childPIDs(matching: "worker --role search").first)
            for i in 0..<300 {
                if i == 100 { #expect(kill(worker, SIGKILL) == 0) }
                try socket.send(json: ["type": "message", "content": "second \(i)"])
            }
            #expect(try socket.receiveMessage(content: "second 299", timeout: 15) != nil)
            try await server.waitUntil(timeout: 15, "catching up") {
                (try await server.request("GET", "/api/chat/search/messages/?q=second", token: t[0]).json as? [Any])?.count == 50
            }
            for probe in ["second 0", "second 100", "second 150", "second 299"] {
                #expect(try await Self.search(server, t[0], probe) == [probe], "\(probe)")
            }
            #expect(!server.childPIDs(matching: "worker --role search").contains(worker))
        }
    }
}
