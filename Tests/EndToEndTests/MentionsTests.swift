import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 16: mute, notification level and mentions against the real
    /// `chatd serve` (api-contract.md "Mute and block", "Notification
    /// preferences and mentions").
    @Suite struct MentionsAndPreferences {
        /// The room as `token`'s user sees it in the room list.
        static func listed(_ server: TestServer, _ room: String, token: String) async throws -> [String: Any] {
            let list = try await server.request("GET", "/api/chat/rooms/", token: token)
            #expect(list.status == 200)
            let rooms = list.object["results"] as? [[String: Any]] ?? []
            return try #require(rooms.first { $0["id"] as? String == room })
        }

        static func unreadMentions(_ server: TestServer, _ room: String, token: String) async throws -> Int? {
            try await listed(server, room, token: token)["unread_mentions"] as? Int
        }

        @Test func muteAndUnmute() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob", "mallory")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            let mute = "/api/chat/rooms/\(room)/mute/"
            let fresh = try await Self.listed(server, room, token: t[0])
            #expect(fresh["muted"] as? Bool == false && fresh["notification_level"] as? String == "all" && fresh["unread_mentions"] as? Int == 0)

            let forever = try await server.request("POST", mute, token: t[0], json: ["until": NSNull()])
            #expect(forever.status == 200, "\(forever.text)")
            #expect(forever.object["muted"] as? Bool == true && forever.object["muted_until"] is NSNull)
            #expect(try await Self.listed(server, room, token: t[0])["muted"] as? Bool == true)
            #expect(try await server.request("GET", "/api/chat/rooms/\(room)/", token: t[0]).object["muted"] as? Bool == true)
            // The mute is the caller's own.
            #expect(try await Self.listed(server, room, token: t[1])["muted"] as? Bool == false)

            // A muted room still delivers messages and counts them unread.
            let aliceSocket = try server.webSocket("/ws/chat/\(room)/", token: t[0])
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: t[1], json: ["content": "while muted"]).status == 201)
            #expect(try aliceSocket.receiveMessage(content: "while muted") != nil)
            #expect(try await Self.listed(server, room, token: t[0])["unread_count"] as? Int == 1)

            let until = "2099-01-02T03:04:05.000006Z"
            let timed = try await server.request("POST", mute, token: t[0], json: ["until": until])
            #expect(timed.status == 200 && timed.object["muted_until"] as? String == until, "\(timed.text)")
            #expect(try await server.request("DELETE", mute, token: t[0]).status == 204)
            #expect(try await Self.listed(server, room, token: t[0])["muted"] as? Bool == false)
            #expect(try await server.request("DELETE", mute, token: t[0]).status == 204)
            // No body at all: muted until unmuted.
            #expect(try await server.request("POST", mute, token: t[0]).status == 200)
            #expect(try await Self.listed(server, room, token: t[0])["muted"] as? Bool == true)

            // Refusals: a bad or past `until`, a stranger, a room that does not exist.
            for bad: Any in ["tomorrow", "2001-01-01T00:00:00Z", 5, ["x"]] {
                let refused = try await server.request("POST", mute, token: t[1], json: ["until": bad])
                #expect(refused.status == 400 && refused.object["until"] != nil, "\(bad): \(refused.text)")
            }
            #expect(try await Self.listed(server, room, token: t[1])["muted"] as? Bool == false)
            #expect(try await server.request("POST", mute, token: t[2], json: [:]).status == 403)
            #expect(try await server.request("DELETE", mute, token: t[2]).status == 403)
            #expect(try await server.request("POST", "/api/chat/rooms/\(IDs.uuid7())/mute/", token: t[0], json: [:]).status == 404)
            #expect(try await server.request("POST", "/api/chat/rooms/not-a-room/mute/", token: t[0], json: [:]).status == 404)
            #expect(try await server.request("POST", mute, json: [:]).status == 401)
        }

        @Test func notificationLevel() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob", "mallory")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            let path = "/api/chat/rooms/\(room)/notifications/"
            for level in ["mentions", "none", "all", "mentions"] {
                let set = try await server.request("PUT", path, token: t[0], json: ["level": level])
                #expect(set.status == 200 && set.object["level"] as? String == level, "\(set.text)")
            }
            #expect(try await Self.listed(server, room, token: t[0])["notification_level"] as? String == "mentions")
            #expect(try await Self.listed(server, room, token: t[1])["notification_level"] as? String == "all")
            for bad: [String: Any] in [["level": "loud"], ["level": 1], [:], ["level": NSNull()]] {
                let refused = try await server.request("PUT", path, token: t[0], json: bad)
                #expect(refused.status == 400 && refused.object["level"] != nil, "\(bad): \(refused.text)")
            }
            #expect(try await Self.listed(server, room, token: t[0])["notification_level"] as? String == "mentions")
            #expect(try await server.request("PUT", path, token: t[2], json: ["level": "none"]).status == 403)
            #expect(try await server.request("PUT", "/api/chat/rooms/\(IDs.uuid7())/notifications/", token: t[0], json: ["level": "none"]).status == 404)
            #expect(try await server.request("POST", path, token: t[0], json: ["level": "none"]).status == 405)
        }

        @Test func mentionsAreParsedCountedAndListed() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob", "carol", "mallory")
            let bobSmith = try await server.token(sub: "bobsmith", email: "smith@example.com", name: "Bob Smith")
            #expect(try await server.request("GET", "/api/chat/rooms/", token: bobSmith).status == 200)
            let room = try await Steps.room(server, token: t[0], members: ["bob", "carol", "bobsmith"])
            let (alice, bob, carol, smith) = ("alice", "bob", "carol", "bobsmith")
            let id = { (sub: String) in IDs.userID(forSubject: sub) }
            let messages = "/api/chat/rooms/\(room)/messages/"
            let bobSocket = try server.webSocket("/ws/chat/\(room)/", token: t[1])

            func post(_ content: String, token: String) async throws -> [String: Any] {
                let response = try await server.request("POST", messages, token: token, json: ["content": content])
                #expect(response.status == 201, "\(response.text)")
                return response.object
            }
            // Display name (longest match), email, @here; nobody for an address in running text.
            let toSmith = try await post("@bob smith can you look?", token: t[0])
            let toBob = try await post("@Bob, hi", token: t[0])
            let toCarol = try await post("ping @carol@example.com.", token: t[0])
            let plain = try await post("write to bob@example.com", token: t[0])
            let here = try await post("@here standup", token: t[0])
            #expect(toSmith["mentions"] as? [String] == [id(smith)])
            #expect(toBob["mentions"] as? [String] == [id(bob)])
            #expect(toCarol["mentions"] as? [String] == [id(carol)])
            #expect(plain["mentions"] as? [String] == [])
            #expect(Set(here["mentions"] as? [String] ?? []) == Set([bob, carol, smith].map(id)))
            // Sockets get the same message objects; the history keeps them.
            let event = try #require(try bobSocket.receiveMessage(content: "@Bob, hi"))
            #expect(event["mentions"] as? [String] == [id(bob)])
            let history = try await server.request("GET", messages, token: t[1])
            let stored = (history.object["results"] as? [[String: Any]] ?? []).first { $0["id"] as? String == toBob["id"] as? String }
            #expect(stored?["mentions"] as? [String] == [id(bob)])

            // unread_mentions rises on write ...
            #expect(try await Self.unreadMentions(server, room, token: t[1]) == 2)
            #expect(try await Self.unreadMentions(server, room, token: bobSmith) == 2)
            #expect(try await Self.unreadMentions(server, room, token: t[2]) == 2)
            #expect(try await Self.unreadMentions(server, room, token: t[0]) == 0)
            // ... and clears when the message, or the room, is read.
            let toBobID = try #require(toBob["id"] as? String)
            #expect(try await server.request("POST", messages + "\(toBobID)/mark_read/", token: t[1]).status == 200)
            #expect(try await Self.unreadMentions(server, room, token: t[1]) == 1)
            #expect(try await server.request("POST", messages + "\(toBobID)/mark_read/", token: t[1]).status == 200)
            #expect(try await Self.unreadMentions(server, room, token: t[1]) == 1)
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/mark_read/", token: t[1]).status == 200)
            #expect(try await Self.unreadMentions(server, room, token: t[1]) == 0)
            #expect(try await Self.unreadMentions(server, room, token: t[2]) == 2)
            // A deleted message no longer counts.
            let hereID = try #require(here["id"] as? String)
            #expect(try await server.request("DELETE", messages + "\(hereID)/", token: t[0]).status == 204)
            #expect(try await Self.unreadMentions(server, room, token: t[2]) == 1)

            // Over the WebSocket too.
            try bobSocket.send(json: ["type": "message", "content": "@alice thanks"])
            #expect(try bobSocket.receiveMessage(content: "@alice thanks")?["mentions"] as? [String] == [id(alice)])
            #expect(try await Self.unreadMentions(server, room, token: t[0]) == 1)

            // The feed: the caller's mentions, newest first, paginated.
            let feed = try await server.request("GET", "/api/chat/mentions/", token: bobSmith)
            #expect(feed.status == 200 && feed.object["count"] as? Int == 1, "\(feed.text)")
            #expect((feed.object["results"] as? [[String: Any]])?.map { $0["id"] as? String } == [toSmith["id"] as? String])
            _ = try await post("@carol again", token: t[1])
            let carolFeed = try await server.request("GET", "/api/chat/mentions/?page_size=1", token: t[2])
            #expect(carolFeed.object["count"] as? Int == 2)
            let first = (carolFeed.object["results"] as? [[String: Any]])?.first
            #expect(first?["content"] as? String == "@carol again")
            let next = try #require(carolFeed.object["next"] as? String)
            #expect(next.contains("/api/chat/mentions/") && next.contains("page=2"))
            let second = try await server.request("GET", "/api/chat/mentions/?page_size=1&page=2", token: t[2])
            #expect((second.object["results"] as? [[String: Any]])?.first?["id"] as? String == toCarol["id"] as? String)
            #expect(try await server.request("GET", "/api/chat/mentions/?page=3", token: t[2]).status == 404)
            // A stranger sees none of it.
            #expect(try await server.request("GET", "/api/chat/mentions/", token: t[3]).object["count"] as? Int == 0)
            #expect(try await server.request("GET", "/api/chat/mentions/").status == 401)
        }
    }
}
