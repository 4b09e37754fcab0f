import ChatCore
import Foundation
import Testing

/// Issue 5: the search endpoints and worker (killing it: EndToEndTests).
@Suite struct Search {
    static func search(_ server: InProcessServer, _ token: String, _ query: String) async throws -> [String] {
        let q = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
        let response = try await server.request("GET", "/api/chat/search/messages/?q=\(q)", token: token)
        #expect(response.status == 200, "\(response.text)")
        return (response.json as? [[String: Any]] ?? []).compactMap { $0["content"] as? String }
    }

    @Test func substringsMembershipEditsDeletesCapAndFilters() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice", "bob", "eve")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            let other = try await Steps.room(server, token: t[0], members: [])
            let eveRoom = try await Steps.room(server, token: t[2], members: [], name: "eve only")
            let base = "/api/chat/rooms/\(room)/messages/"
            let hello = try await server.request("POST", base, token: t[0], json: ["content": "Hello World"]).object["id"] as! String
            _ = try await server.request("POST", base, token: t[1], json: ["content": "say hello again"])
            _ = try await server.request("POST", "/api/chat/rooms/\(other)/messages/", token: t[0], json: ["content": "hello from elsewhere"])
            _ = try await server.request("POST", "/api/chat/rooms/\(eveRoom)/messages/", token: t[2], json: ["content": "hello secret"])
            _ = try await server.request("POST", base, token: t[0], json: ["content": "100% sure"])

            try await server.waitUntil(timeout: 10, "indexing") { try await Self.search(server, t[0], "hello").count == 3 }
            // Substring, case-insensitive, newest first; eve's room never leaks.
            #expect(try await Self.search(server, t[0], "ELLO") == ["hello from elsewhere", "say hello again", "Hello World"])
            #expect(try await Self.search(server, t[1], "ello") == ["say hello again", "Hello World"])
            #expect(try await Self.search(server, t[2], "hello") == ["hello secret"])
            // Short queries (no trigram) scan; metacharacters are literal.
            #expect(try await Self.search(server, t[0], "wo") == ["Hello World"])
            #expect(try await Self.search(server, t[0], "%") == ["100% sure"])
            #expect(try await Self.search(server, t[0], "\"a\" OR *").isEmpty)

            // Filters: room, sender, dates.
            let byRoom = try await server.request("GET", "/api/chat/search/messages/?q=hello&room=\(other)", token: t[0]).json as? [[String: Any]]
            #expect(byRoom?.map { $0["content"] as? String } == ["hello from elsewhere"])
            let bySender = try await server.request("GET", "/api/chat/search/messages/?q=hello&sender=\(IDs.userID(forSubject: "bob"))", token: t[0]).json as? [[String: Any]]
            #expect(bySender?.map { $0["content"] as? String } == ["say hello again"])
            #expect((try await server.request("GET", "/api/chat/search/messages/?q=hello&after=2099-01-01", token: t[0]).json as? [Any])?.isEmpty == true)
            #expect((try await server.request("GET", "/api/chat/search/messages/?q=hello&before=2099-01-01T00:00:00Z", token: t[0]).json as? [Any])?.count == 3)
            #expect(try await server.request("GET", "/api/chat/search/messages/?q=hello&after=yesterday", token: t[0]).status == 400)
            #expect(try await server.request("GET", "/api/chat/search/messages/?q=hello&room=nope", token: t[0]).status == 400)

            // Edits re-index, deletions remove.
            _ = try await server.request("PATCH", base + "\(hello)/", token: t[0], json: ["content": "Goodbye World"])
            try await server.waitUntil(timeout: 10, "re-indexing the edit") { try await Self.search(server, t[0], "goodbye") == ["Goodbye World"] }
            #expect(try await Self.search(server, t[0], "hello world").isEmpty)
            _ = try await server.request("DELETE", base + "\(hello)/", token: t[0])
            try await server.waitUntil(timeout: 10, "removing the deleted") { try await Self.search(server, t[0], "world").isEmpty }

            // Missing or blank q.
            for path in ["/api/chat/search/messages/", "/api/chat/search/messages/?q=%20%20", "/api/chat/search/rooms/?q="] {
                let response = try await server.request("GET", path, token: t[0])
                #expect(response.status == 400)
                #expect(response.object["error"] as? String == "Search query is required")
            }

            // At most 50, newest first.
            // Posted over REST (EndToEndTests posted them over a WebSocket).
            for i in 0..<60 {
                #expect(try await server.request("POST", "/api/chat/rooms/\(other)/messages/", token: t[0], json: ["content": "bulk \(i)"]).status == 201)
            }
            try await server.waitUntil(timeout: 10, "the bulk") { try await Self.search(server, t[0], "bulk").first == "bulk 59" }
            let bulk = try await Self.search(server, t[0], "bulk")
            #expect(bulk.count == 50)
            #expect(bulk.last == "bulk 10")

            // Rooms: by name and by participants' names and emails, the user's and public ones.
            let rooms = try await server.request("GET", "/api/chat/search/rooms/?q=BOB", token: t[0]).json as? [[String: Any]]
            #expect(rooms?.map { $0["id"] as? String } == [room])
            #expect((try await server.request("GET", "/api/chat/search/rooms/?q=eve", token: t[0]).json as? [Any])?.isEmpty == true)
            let pub = try await server.request("POST", "/api/chat/rooms/", token: t[2], json: ["name": "Open Plaza", "room_type": "public"])
            let found = try await server.request("GET", "/api/chat/search/rooms/?q=plaza", token: t[0]).json as? [[String: Any]]
            #expect(found?.map { $0["id"] as? String } == [pub.object["id"] as? String])
        }
    }

    /// Issue 10: a date outside years 1–9999 is a field error; it used to
    /// trap the frontend (`Int64(Double)`), dropping every WebSocket.
    @Test func datesOutOfRangeAreRefusedNotFatal() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice")
            _ = try await Steps.room(server, token: t[0], members: [])
            for value in ["100000000-01-01T00:00:00Z", "10000-01-01", "-100000000-01-01T00:00:00Z", "0000-06-01T00:00:00Z",
                          String(repeating: "9", count: 4_000) + "-01-01"] {
                for name in ["after", "before"] {
                    let response = try await server.request("GET", "/api/chat/search/messages/?q=abc&\(name)=\(value)", token: t[0])
                    #expect(response.status == 400, "\(name)=\(value.prefix(30)): \(response.status)")
                    #expect(response.object[name] is [String])
                }
            }
            let inRange = try await server.request("GET", "/api/chat/search/messages/?q=abc&after=0001-01-01T00:00:00Z&before=9999-12-31", token: t[0])
            #expect(inRange.status == 200, "\(inRange.text)")
            // Not fatal: a trap here would have stopped this test process.
        }
    }
}
