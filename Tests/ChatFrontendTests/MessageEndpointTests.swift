import ChatCore
import Foundation
import Testing

/// Issue 3: message endpoints, pagination, and counts that agree. The news a
/// WebSocket would get is checked as the room events the workers publish.
@Suite struct MessageEndpoints {
    @Test func paginationAndCursors() async throws {
        try await InProcessServer.run(configure: Steps.noRateLimits) { server in
            let t = try await Steps.users(server, "alice")
            let room = try await Steps.room(server, token: t[0], members: [])
            // Posted over REST, one after another (EndToEndTests post them over a WebSocket).
            for i in 1...120 {
                #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: t[0], json: ["content": "m\(i)"]).status == 201)
            }

            let base = "/api/chat/rooms/\(room)/messages/"
            let first = try await server.request("GET", base, token: t[0])
            #expect(first.object["count"] as? Int == 120)
            let firstResults = first.object["results"] as? [[String: Any]] ?? []
            #expect(firstResults.count == 50)
            #expect(firstResults.first?["content"] as? String == "m120")
            #expect(first.object["previous"] is NSNull)
            let next = try #require(first.object["next"] as? String)
            #expect(next == "http://127.0.0.1:\(server.port)\(base)?page=2")

            let third = try await server.request("GET", base + "?page=3", token: t[0])
            #expect((third.object["results"] as? [Any])?.count == 20)
            #expect(third.object["next"] is NSNull)
            #expect(third.object["previous"] as? String == "http://127.0.0.1:\(server.port)\(base)?page=2")
            let sized = try await server.request("GET", base + "?page_size=40&page=2", token: t[0])
            #expect((sized.object["results"] as? [[String: Any]])?.first?["content"] as? String == "m80")
            #expect(sized.object["next"] as? String == "http://127.0.0.1:\(server.port)\(base)?page=3&page_size=40")
            #expect(sized.object["previous"] as? String == "http://127.0.0.1:\(server.port)\(base)?page_size=40")
            let capped = try await server.request("GET", base + "?page_size=500", token: t[0])
            #expect((capped.object["results"] as? [Any])?.count == 100)
            for bad in ["4", "0", "-1", "abc"] {
                let response = try await server.request("GET", base + "?page=\(bad)", token: t[0])
                #expect(response.status == 404, "page=\(bad)")
                #expect(response.object["detail"] as? String == "Invalid page.")
            }

            // Cursors: strictly older / newer than a message.
            let m60 = try #require(firstResults.first { $0["content"] as? String == "m100" }?["id"] as? String)
            let after = try await server.request("GET", base + "?after=\(m60)", token: t[0])
            #expect(after.object["count"] as? Int == 20)
            #expect((after.object["results"] as? [[String: Any]])?.last?["content"] as? String == "m101")
            let before = try await server.request("GET", base + "?before=\(m60)&page_size=10", token: t[0])
            #expect(before.object["count"] as? Int == 99)
            #expect((before.object["results"] as? [[String: Any]])?.first?["content"] as? String == "m99")
            #expect((before.object["next"] as? String)?.contains("before=\(m60)") == true)
            #expect(try await server.request("GET", base + "?before=\(IDs.uuid7())", token: t[0]).status == 400)
            #expect(try await server.request("GET", base + "?after=nonsense", token: t[0]).status == 400)
        }
    }

    @Test func editDeleteReactRead() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            try await server.watch(room: room)
            let base = "/api/chat/rooms/\(room)/messages/"
            let created = try await server.request("POST", base, token: t[0], json: ["content": "original", "client_msg_id": "c-1"])
            #expect(created.status == 201)
            #expect(created.object["client_msg_id"] as? String == "c-1")
            let id = try #require(created.object["id"] as? String)
            let repeated = try await server.request("POST", base, token: t[0], json: ["content": "original", "client_msg_id": "c-1"])
            #expect(repeated.status == 200)
            #expect(repeated.object["id"] as? String == id)
            let reply = try await server.request("POST", base, token: t[1], json: ["content": "answer", "reply_to": id])
            #expect(reply.status == 201)
            #expect(reply.object["reply_to"] as? String == id)

            // Edit: sender only; edited_at and is_edited set; the room hears of it.
            #expect(try await server.request("PATCH", base + "\(id)/", token: t[1], json: ["content": "hijack"]).status == 403)
            let edited = try await server.request("PATCH", base + "\(id)/", token: t[0], json: ["content": "changed"])
            #expect(edited.status == 200)
            #expect(edited.object["content"] as? String == "changed")
            #expect(edited.object["is_edited"] as? Bool == true)
            #expect(edited.object["edited_at"] is String)
            let editEvent = try #require(try await server.event(room: room, type: "message_edited"))
            #expect((editEvent["message"] as? [String: Any])?["content"] as? String == "changed")
            #expect(try await server.request("PATCH", base + "\(id)/", token: t[0], json: [String: Any]()).status == 400)

            // Reactions.
            let added = try await server.request("POST", base + "\(id)/react/", token: t[1], json: ["emoji": "👍", "action": "add"])
            #expect(added.status == 200)
            #expect(added.object["message"] as? String == "Reaction added")
            #expect((added.object["reactions"] as? [String: [String]])?["👍"] == [IDs.userID(forSubject: "bob")])
            _ = try await server.request("POST", base + "\(id)/react/", token: t[1], json: ["emoji": "👍"])
            let removed = try await server.request("POST", base + "\(id)/react/", token: t[1], json: ["emoji": "👍", "action": "remove"])
            #expect(removed.object["message"] as? String == "Reaction removed")
            #expect((removed.object["reactions"] as? [String: Any])?.isEmpty == true)
            #expect(try await server.request("POST", base + "\(id)/react/", token: t[1], json: ["emoji": ""]).status == 400)
            #expect(try await server.request("POST", base + "\(id)/react/", token: t[1], json: ["emoji": "x", "action": "poke"]).status == 400)
            #expect(try await server.event(room: room, type: "reaction") != nil)

            // Read receipts.
            let read = try await server.request("POST", base + "\(id)/mark_read/", token: t[1])
            #expect(read.status == 200)
            #expect(read.object["was_already_read"] as? Bool == false)
            #expect(try await server.request("POST", base + "\(id)/mark_read/", token: t[1]).object["was_already_read"] as? Bool == true)
            let fetched = try await server.request("GET", base + "\(id)/", token: t[0])
            #expect(((fetched.object["read_by"] as? [[String: Any]])?.map { $0["id"] as? String }) == [IDs.userID(forSubject: "bob")])

            // Delete: sender only, soft, 204.
            #expect(try await server.request("DELETE", base + "\(id)/", token: t[1]).status == 403)
            let deleted = try await server.request("DELETE", base + "\(id)/", token: t[0])
            #expect(deleted.status == 204)
            let after = try await server.request("GET", base + "\(id)/", token: t[0])
            #expect(after.object["is_deleted"] as? Bool == true)
            #expect(after.object["content"] as? String == "")
            #expect(try await server.event(room: room, type: "message_deleted") != nil)
            #expect(try await server.request("PATCH", base + "\(id)/", token: t[0], json: ["content": "again"]).status == 400)
            #expect(try await server.request("POST", base + "\(id)/react/", token: t[0], json: ["emoji": "👍"]).status == 400)
        }
    }

    @Test func unreadCountsLastMessageAndReadByAgree() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice", "bob", "carol")
            let room = try await Steps.room(server, token: t[0], members: ["bob", "carol"])
            let base = "/api/chat/rooms/\(room)/messages/"
            var ids: [String: String] = [:]
            for (sender, content) in [(0, "a1"), (1, "b1"), (2, "c1"), (1, "b2"), (0, "a2"), (2, "c2")] {
                ids[content] = try await server.request("POST", base, token: t[sender], json: ["content": content]).object["id"] as? String
            }
            func roomView(_ token: String) async throws -> [String: Any] {
                try await server.request("GET", "/api/chat/rooms/\(room)/", token: token).object
            }
            // Alice has 4 unread (others' messages); she reads b1 alone.
            #expect(try await roomView(t[0])["unread_count"] as? Int == 4)
            _ = try await server.request("POST", base + "\(ids["b1"]!)/mark_read/", token: t[0])
            #expect(try await roomView(t[0])["unread_count"] as? Int == 3)
            // Bob deletes b2: it leaves unread counts; carol deletes c2: last_message moves back.
            _ = try await server.request("DELETE", base + "\(ids["b2"]!)/", token: t[1])
            _ = try await server.request("DELETE", base + "\(ids["c2"]!)/", token: t[2])
            let view = try await roomView(t[0])
            #expect(view["unread_count"] as? Int == 1)
            #expect((view["last_message"] as? [String: Any])?["content"] as? String == "a2")
            // mark_read marks exactly what was unread, then nothing.
            let marked = try await server.request("POST", "/api/chat/rooms/\(room)/mark_read/", token: t[0])
            #expect(marked.object["status"] as? String == "marked as read")
            #expect(marked.object["count"] as? Int == 1)
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/mark_read/", token: t[0]).object["count"] as? Int == 0)
            #expect(try await roomView(t[0])["unread_count"] as? Int == 0)
            // Bob: a1, c1, a2 unread (c2 deleted); read_by of c1 is alice only, the sender never.
            #expect(try await roomView(t[1])["unread_count"] as? Int == 3)
            let c1 = try await server.request("GET", base + "\(ids["c1"]!)/", token: t[1])
            #expect((c1.object["read_by"] as? [[String: Any]])?.map { $0["id"] as? String } == [IDs.userID(forSubject: "alice")])
            let listed = try await server.request("GET", "/api/chat/rooms/", token: t[1])
            let listedRoom = (listed.object["results"] as? [[String: Any]])?.first
            #expect(listedRoom?["unread_count"] as? Int == 3)
            #expect((listedRoom?["last_message"] as? [String: Any])?["content"] as? String == "a2")
        }
    }
}
