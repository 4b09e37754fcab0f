import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 16: users/me, the user lookup, and blocks on every path a
    /// message takes (api-contract.md "Users", "Mute and block").
    @Suite struct Blocks {
        static func users(_ response: TestServer.HTTPResult) -> [String] {
            (response.json as? [[String: Any]] ?? []).compactMap { $0["display_name"] as? String }
        }

        static func post(_ server: TestServer, _ token: String, room: String, _ content: String) async throws -> Int {
            try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: token, json: ["content": content]).status
        }

        /// Message events until one with `content`: the contents on the way, it included.
        static func contents(until content: String, on socket: WebSocketClient) throws -> [String] {
            var seen: [String] = []
            let deadline = Date().addingTimeInterval(10)
            while deadline.timeIntervalSinceNow > 0, let event = try socket.receive(type: "message", timeout: deadline.timeIntervalSinceNow) {
                let text = (event["message"] as? [String: Any])?["content"] as? String ?? ""
                seen.append(text)
                if text == content { return seen }
            }
            Issue.record("\(content) never came; saw \(seen)")
            return seen
        }

        /// The room as the token's user's room list shows it.
        static func room(_ server: TestServer, _ token: String, room: String) async throws -> [String: Any]? {
            let rooms = try await server.request("GET", "/api/chat/rooms/", token: token).object["results"] as? [[String: Any]] ?? []
            return rooms.first { $0["id"] as? String == room }
        }

        static func unread(_ server: TestServer, _ token: String, room: String) async throws -> Int? {
            try await Self.room(server, token, room: room)?["unread_count"] as? Int
        }

        /// A new user learns its own id, finds another by email (no room in
        /// common yet), adds them, then finds them by name.
        @Test func aNewUserFindsAnotherAndAddsThem() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let alice = try await server.token(sub: "alice", name: "Alice Liddell")
            let me = try await server.request("GET", "/api/chat/users/me/", token: alice)
            #expect(me.status == 200, "\(me.text)")
            #expect(me.object["id"] as? String == IDs.userID(forSubject: "alice"))
            #expect(me.object["email"] as? String == "alice@example.com")
            #expect(me.object["display_name"] as? String == "Alice Liddell")
            let t = try await Steps.users(server, "bob", "carol", "dave")

            // Bob shares nothing with Alice: found by his exact email only (any case).
            #expect(Self.users(try await server.request("GET", "/api/chat/users/?q=bo", token: alice)) == [])
            let byEmail = try await server.request("GET", "/api/chat/users/?q=BOB%40Example.com", token: alice)
            #expect(byEmail.status == 200)
            let bobID = try #require((byEmail.json as? [[String: Any]])?.first?["id"] as? String)
            #expect(bobID == IDs.userID(forSubject: "bob"))
            let room = try await server.request("POST", "/api/chat/rooms/", token: alice, json: ["name": "tea", "participant_ids": [bobID]])
            #expect(room.status == 201)
            #expect(Self.users(try await server.request("GET", "/api/chat/users/?q=bo", token: alice)) == ["Bob"])

            // Members of public rooms are found by name; others are not.
            let open = try await server.request("POST", "/api/chat/rooms/", token: t[1], json: ["name": "open", "room_type": "public"])
            #expect(open.status == 201)
            #expect(Self.users(try await server.request("GET", "/api/chat/users/?q=CAR", token: alice)) == ["Carol"])
            #expect(Self.users(try await server.request("GET", "/api/chat/users/?q=dav", token: alice)) == [])
            // A literal `%`, a blank or missing q, no token.
            #expect(Self.users(try await server.request("GET", "/api/chat/users/?q=%25", token: alice)) == [])
            #expect(try await server.request("GET", "/api/chat/users/?q=%20", token: alice).status == 400)
            #expect(try await server.request("GET", "/api/chat/users/", token: alice).status == 400)
            #expect(try await server.request("GET", "/api/chat/users/me/").status == 401)
        }

        @Test func blockRefusalsAndTheList() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob", "carol")
            let (bob, carol) = (IDs.userID(forSubject: "bob"), IDs.userID(forSubject: "carol"))
            #expect(try await server.request("POST", "/api/chat/users/\(IDs.uuid7())/block/", token: t[0]).status == 404)
            #expect(try await server.request("POST", "/api/chat/users/not-a-uuid/block/", token: t[0]).status == 404)
            #expect(try await server.request("POST", "/api/chat/users/\(IDs.userID(forSubject: "alice"))/block/", token: t[0]).status == 400)
            #expect(try await server.request("POST", "/api/chat/users/\(bob)/block/").status == 401)
            let blocked = try await server.request("POST", "/api/chat/users/\(bob)/block/", token: t[0])
            #expect(blocked.status == 200)
            #expect(blocked.object["id"] as? String == bob)
            #expect(try await server.request("POST", "/api/chat/users/\(bob)/block/", token: t[0]).status == 200)
            #expect(try await server.request("POST", "/api/chat/users/\(carol)/block/", token: t[0]).status == 200)
            let list = try await server.request("GET", "/api/chat/users/blocked/?page_size=1", token: t[0])
            #expect(list.object["count"] as? Int == 2)
            #expect((list.object["results"] as? [[String: Any]])?.map { $0["id"] as? String } == [carol])
            #expect(list.object["next"] is String)
            // Bob is not told: his own list is empty, and Alice is still found.
            #expect(try await server.request("GET", "/api/chat/users/blocked/", token: t[1]).object["count"] as? Int == 0)
            #expect(Self.users(try await server.request("GET", "/api/chat/users/?q=alice%40example.com", token: t[1])) == ["Alice"])
            #expect(try await server.request("DELETE", "/api/chat/users/\(bob)/block/", token: t[0]).status == 204)
            #expect(try await server.request("DELETE", "/api/chat/users/\(bob)/block/", token: t[0]).status == 204)
            let after = try await server.request("GET", "/api/chat/users/blocked/", token: t[0])
            #expect((after.object["results"] as? [[String: Any]])?.map { $0["id"] as? String } == [carol])
            #expect(try await server.request("GET", "/api/chat/users/blocked/?page=3", token: t[0]).status == 404)
        }

        /// Alice blocks Bob: in a room the three share, Bob's new messages
        /// reach neither her socket, her history, her search nor her unread
        /// count; Carol and Bob see everything as before.
        @Test func aBlockHoldsInARoom() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob", "carol")
            let room = try await Steps.room(server, token: t[2], members: ["alice", "bob"])
            let sockets = try t.map { try server.webSocket("/ws/chat/\(room)/", token: $0) }
            #expect(try await Self.post(server, t[1], room: room, "before the block") == 201)
            #expect(try Self.contents(until: "before the block", on: sockets[0]) == ["before the block"])
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/mark_read/", token: t[0]).status == 200)

            #expect(try await server.request("POST", "/api/chat/users/\(IDs.userID(forSubject: "bob"))/block/", token: t[0]).status == 200)
            try sockets[1].send(json: ["type": "message", "content": "hidden words"])
            #expect(try await Self.post(server, t[1], room: room, "hidden rest") == 201)
            // The room list's last message is none of Bob's, for Alice.
            #expect(try await Self.room(server, t[0], room: room)?["last_message"] is NSNull)
            #expect((try await Self.room(server, t[2], room: room)?["last_message"] as? [String: Any])?["content"] as? String == "hidden rest")
            #expect(try await Self.post(server, t[2], room: room, "carol after") == 201)
            // Per-room order: had either been delivered to Alice, it would come before Carol's.
            #expect(try Self.contents(until: "carol after", on: sockets[0]) == ["carol after"])
            #expect(try Self.contents(until: "carol after", on: sockets[1]) == ["before the block", "hidden words", "hidden rest", "carol after"])
            #expect(try Self.contents(until: "carol after", on: sockets[2]) == ["before the block", "hidden words", "hidden rest", "carol after"])

            // History and message get.
            #expect(try await Steps.contents(server, token: t[0], room: room) == ["carol after"])
            #expect(try await Steps.contents(server, token: t[2], room: room) == ["before the block", "hidden words", "hidden rest", "carol after"])
            let page = try await server.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=2", token: t[1])
            let hiddenID = try #require((page.object["results"] as? [[String: Any]])?.last?["id"] as? String)
            #expect(try await server.request("GET", "/api/chat/rooms/\(room)/messages/\(hiddenID)/", token: t[0]).status == 404)
            #expect(try await server.request("GET", "/api/chat/rooms/\(room)/messages/\(hiddenID)/", token: t[2]).status == 200)

            // Unread: Carol's message only, for Alice; Bob's three, for Carol.
            #expect(try await Self.unread(server, t[0], room: room) == 1)
            #expect(try await Self.unread(server, t[2], room: room) == 3)
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/mark_read/", token: t[0]).status == 200)
            #expect(try await Self.unread(server, t[0], room: room) == 0)
            // Bob is told nothing: Alice is not among the readers of his hidden message.
            let hidden = try await server.request("GET", "/api/chat/rooms/\(room)/messages/\(hiddenID)/", token: t[1])
            #expect((hidden.object["read_by"] as? [[String: Any]])?.isEmpty == true, "\(hidden.text)")

            // Search.
            try await server.waitUntil(timeout: 15, "indexing") { try await Search.search(server, t[2], "hidden").count == 2 }
            #expect(try await Search.search(server, t[0], "hidden") == [])
            #expect(try await Search.search(server, t[1], "hidden").count == 2)

            // Unblocked: Bob's new messages reach Alice again.
            #expect(try await server.request("DELETE", "/api/chat/users/\(IDs.userID(forSubject: "bob"))/block/", token: t[0]).status == 204)
            #expect(try await Self.post(server, t[1], room: room, "visible again") == 201)
            #expect(try Self.contents(until: "visible again", on: sockets[0]) == ["visible again"])
            #expect(try await Self.unread(server, t[0], room: room) == 1)
        }

        /// A direct room refuses new messages both ways (REST and socket),
        /// and `direct_message` is refused both ways, while a block holds.
        @Test func aBlockClosesTheDirectRoom() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob")
            let (aliceID, bobID) = (IDs.userID(forSubject: "alice"), IDs.userID(forSubject: "bob"))
            let aliceSocket = try server.webSocket("/ws/direct/\(bobID)/", token: t[0])
            let bobSocket = try server.webSocket("/ws/direct/\(aliceID)/", token: t[1])
            try bobSocket.send(json: ["type": "message", "content": "hello"])
            let room = try #require(try aliceSocket.receiveMessage(content: "hello")?["room"] as? String)

            #expect(try await server.request("POST", "/api/chat/users/\(bobID)/block/", token: t[0]).status == 200)
            #expect(try await Self.post(server, t[1], room: room, "refused") == 403)
            #expect(try await Self.post(server, t[0], room: room, "refused too") == 403)
            try bobSocket.send(json: ["type": "message", "content": "refused on the socket"])
            let error = try #require(try bobSocket.receive(type: "error"))
            #expect("\(error)".contains("cannot send"), "\(error)")
            // Bob's typing reaches Alice's direct socket, with no message before it.
            try bobSocket.send(json: ["type": "typing", "is_typing": true])
            var before: [String] = []
            while let event = try aliceSocket.receiveJSON(timeout: 10), event["type"] as? String != "typing" {
                before.append(event["type"] as? String ?? "")
            }
            #expect(!before.contains("message"), "\(before)")
            for (token, other) in [(t[0], bobID), (t[1], aliceID)] {
                let direct = try await server.request("POST", "/api/chat/rooms/direct_message/", token: token, json: ["user_id": other])
                #expect(direct.status == 403, "\(direct.text)")
                do {
                    _ = try server.webSocket("/ws/direct/\(other)/", token: token)
                    Issue.record("a direct socket opened across a block")
                } catch let refused as WebSocketClient.Refused { #expect(refused.status == 403) }
            }
            #expect(try await Steps.contents(server, token: t[1], room: room) == ["hello"])

            #expect(try await server.request("DELETE", "/api/chat/users/\(bobID)/block/", token: t[0]).status == 204)
            #expect(try await server.request("POST", "/api/chat/rooms/direct_message/", token: t[1], json: ["user_id": aliceID]).status == 200)
            #expect(try await Self.post(server, t[1], room: room, "again") == 201)
            #expect(try aliceSocket.receiveMessage(content: "again") != nil)
        }
    }
}
