import ChatCore
import Foundation
import Testing

/// Issue 3: the room endpoints, their shapes, permissions and errors.
@Suite struct RoomEndpoints {
    static func checkUser(_ value: Any?) {
        guard let user = value as? [String: Any] else { Issue.record("not a user object: \(String(describing: value))"); return }
        #expect(Set(user.keys) == ["id", "email", "display_name", "profile_picture", "clerk_profile_image_url"])
        #expect(user["id"] is String && user["email"] is String && user["display_name"] is String)
    }

    static func checkRoom(_ room: [String: Any]) {
        #expect(Set(room.keys) == ["id", "name", "room_type", "participants", "created_by", "created_at", "updated_at", "is_active", "last_message", "unread_count", "other_user",
                                  "my_role", "post_permission", "muted", "notification_level", "unread_mentions", "encrypted"])
        #expect(room["muted"] is Bool && room["notification_level"] is String && room["unread_mentions"] is Int && room["encrypted"] is Bool)
        #expect(room["id"] is String && room["room_type"] is String && room["is_active"] is Bool && room["unread_count"] is Int)
        #expect(room["created_at"] is String && room["updated_at"] is String)
        for participant in room["participants"] as? [Any] ?? [] { checkUser(participant) }
    }

    @Test func createGetUpdateDelete() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice", "bob", "carol")
            let created = try await server.request("POST", "/api/chat/rooms/", token: t[0], json: ["name": "Alpha", "room_type": "project", "participant_ids": [IDs.userID(forSubject: "bob")]])
            #expect(created.status == 201)
            Self.checkRoom(created.object)
            #expect(created.object["room_type"] as? String == "project")
            #expect((created.object["participants"] as? [Any])?.count == 2)
            Self.checkUser(created.object["created_by"])
            #expect(created.object["last_message"] is NSNull && created.object["other_user"] is NSNull)
            let room = try #require(created.object["id"] as? String)

            let fetched = try await server.request("GET", "/api/chat/rooms/\(room)/", token: t[1])
            #expect(fetched.status == 200)
            #expect(fetched.object["name"] as? String == "Alpha")

            // Only the creator may change or delete it.
            let notCreator = try await server.request("PATCH", "/api/chat/rooms/\(room)/", token: t[1], json: ["name": "Mine"])
            #expect(notCreator.status == 403)
            #expect(try await server.request("DELETE", "/api/chat/rooms/\(room)/", token: t[1]).status == 403)
            let renamed = try await server.request("PATCH", "/api/chat/rooms/\(room)/", token: t[0], json: ["name": "Beta", "participant_ids": [IDs.userID(forSubject: "carol")]])
            #expect(renamed.status == 200)
            #expect(renamed.object["name"] as? String == "Beta")
            #expect((renamed.object["participants"] as? [Any])?.count == 3)
            #expect(try await server.request("GET", "/api/chat/rooms/\(room)/", token: t[2]).status == 200)
            let unknownMember = try await server.request("PATCH", "/api/chat/rooms/\(room)/", token: t[0], json: ["participant_ids": [IDs.uuid7()]])
            #expect(unknownMember.status == 400)

            // Deleting deactivates: gone from lists, refuses messages, history kept.
            _ = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: t[1], json: ["content": "kept"])
            let deleted = try await server.request("DELETE", "/api/chat/rooms/\(room)/", token: t[0])
            #expect(deleted.status == 204)
            #expect(deleted.body.isEmpty)
            let list = try await server.request("GET", "/api/chat/rooms/", token: t[0])
            #expect(list.object["count"] as? Int == 0)
            let refused = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: t[1], json: ["content": "more"])
            #expect(refused.status == 400)
            #expect(refused.object["error"] as? String == "This room is no longer active")
            #expect(try await Steps.contents(server, token: t[1], room: room) == ["kept"])
        }
    }

    @Test func directMessages() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice", "bob")
            let bobID = IDs.userID(forSubject: "bob")
            let first = try await server.request("POST", "/api/chat/rooms/direct_message/", token: t[0], json: ["user_id": bobID])
            #expect(first.status == 201)
            Self.checkRoom(first.object)
            #expect(first.object["room_type"] as? String == "direct")
            #expect((first.object["other_user"] as? [String: Any])?["id"] as? String == bobID)
            let again = try await server.request("POST", "/api/chat/rooms/direct_message/", token: t[0], json: ["user_id": bobID])
            #expect(again.status == 200)
            #expect(again.object["id"] as? String == first.object["id"] as? String)
            // Symmetric: bob gets the same room, with alice as the other user.
            let fromBob = try await server.request("POST", "/api/chat/rooms/direct_message/", token: t[1], json: ["user_id": IDs.userID(forSubject: "alice")])
            #expect(fromBob.status == 200)
            #expect(fromBob.object["id"] as? String == first.object["id"] as? String)
            #expect((fromBob.object["other_user"] as? [String: Any])?["id"] as? String == IDs.userID(forSubject: "alice"))

            let yourself = try await server.request("POST", "/api/chat/rooms/direct_message/", token: t[0], json: ["user_id": IDs.userID(forSubject: "alice")])
            #expect(yourself.status == 400)
            let unknown = try await server.request("POST", "/api/chat/rooms/direct_message/", token: t[0], json: ["user_id": IDs.uuid7()])
            #expect(unknown.status == 404)
            #expect(unknown.object["detail"] as? String == "User not found")
            let missing = try await server.request("POST", "/api/chat/rooms/direct_message/", token: t[0], json: [String: Any]())
            #expect(missing.status == 400)

            let room = try #require(first.object["id"] as? String)
            let leave = try await server.request("POST", "/api/chat/rooms/\(room)/leave/", token: t[0])
            #expect(leave.status == 400)
            #expect(leave.object["error"] as? String == "Cannot leave direct message rooms")
            let creating = try await server.request("POST", "/api/chat/rooms/", token: t[0], json: ["room_type": "direct"])
            #expect(creating.status == 400)
        }
    }

    /// Issue 10: a direct room keeps exactly its two members and no name;
    /// its creator could add a third, who then read the whole history.
    @Test func aDirectRoomStaysBetweenItsTwoMembers() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice", "bob", "eve")
            let direct = try await server.request("POST", "/api/chat/rooms/direct_message/", token: t[0], json: ["user_id": IDs.userID(forSubject: "bob")])
            let room = try #require(direct.object["id"] as? String)
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: t[1], json: ["content": "just us"]).status == 201)
            let eve = IDs.userID(forSubject: "eve")
            for body: [String: Any] in [["participant_ids": [eve], "name": "now a group"], ["participant_ids": [eve]], ["name": "renamed"]] {
                let response = try await server.request("PATCH", "/api/chat/rooms/\(room)/", token: t[0], json: body)
                #expect(response.status == 400, "\(body): \(response.text)")
                for field in body.keys { #expect(response.object[field] is [String], "\(body): \(response.text)") }
            }
            // Nothing changed: eve is still out, the room still unnamed and direct.
            #expect(try await server.request("GET", "/api/chat/rooms/\(room)/messages/", token: t[2]).status == 403)
            let now = try await server.request("GET", "/api/chat/rooms/\(room)/", token: t[0])
            #expect(now.object["room_type"] as? String == "direct")
            #expect(now.object["name"] is NSNull)
            #expect((now.object["participants"] as? [Any])?.count == 2)
            // A PATCH that changes nothing is still fine.
            #expect(try await server.request("PATCH", "/api/chat/rooms/\(room)/", token: t[0], json: ["name": NSNull()]).status == 200)
        }
    }

    /// Issue 10: room names are at most 255 characters (code points).
    @Test func roomNamesAreBounded() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice")
            let longest = String(repeating: "é", count: 255)
            let created = try await server.request("POST", "/api/chat/rooms/", token: t[0], json: ["name": longest])
            #expect(created.status == 201)
            #expect(created.object["name"] as? String == longest)
            let room = try #require(created.object["id"] as? String)
            for name in [longest + "x", String(repeating: "n", count: 500_000)] {  // under the 1 MiB body limit
                let create = try await server.request("POST", "/api/chat/rooms/", token: t[0], json: ["name": name])
                #expect(create.status == 400)
                #expect(create.object["name"] is [String])
                let rename = try await server.request("PATCH", "/api/chat/rooms/\(room)/", token: t[0], json: ["name": name])
                #expect(rename.status == 400)
                #expect(rename.object["name"] is [String])
            }
            let list = try await server.request("GET", "/api/chat/rooms/", token: t[0])
            #expect(list.object["count"] as? Int == 1)
            #expect(try await server.request("GET", "/api/chat/rooms/\(room)/", token: t[0]).object["name"] as? String == longest)
        }
    }

    /// Issue 10, decided in docs/api.md "Identities": a UUID `sub` in any
    /// letter case is one user (UUIDs are case-insensitive); the newest
    /// token's claims are that user's profile, as for any user.
    @Test func uuidSubjectsInAnyCaseAreOneUser() async throws {
        try await InProcessServer.run { server in
            let lower = "5ba46122-bc53-562c-89ae-0be876b7b9af"
            let upperToken = try await server.token(sub: lower.uppercased(), email: "first@example.com", name: "First")
            let created = try await server.request("POST", "/api/chat/rooms/", token: upperToken, json: ["name": "mine"])
            #expect(created.status == 201)
            #expect((created.object["created_by"] as? [String: Any])?["id"] as? String == lower)
            let room = try #require(created.object["id"] as? String)
            let lowerToken = try await server.token(sub: lower, email: "second@example.com", name: "Second")
            let seen = try await server.request("GET", "/api/chat/rooms/\(room)/", token: lowerToken)
            #expect(seen.status == 200)
            let creator = seen.object["created_by"] as? [String: Any]
            #expect(creator?["id"] as? String == lower)
            #expect(creator?["email"] as? String == "second@example.com")
            #expect(creator?["display_name"] as? String == "Second")
            #expect((seen.object["participants"] as? [Any])?.count == 1)
        }
    }

    @Test func publicRoomsJoinLeaveDiscover() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice", "bob")
            let pub = try await server.request("POST", "/api/chat/rooms/", token: t[0], json: ["name": "Lobby", "room_type": "public"])
            let group = try await server.request("POST", "/api/chat/rooms/", token: t[0], json: ["name": "Secret"])
            let publicRoom = try #require(pub.object["id"] as? String)
            let groupRoom = try #require(group.object["id"] as? String)

            let discover = try await server.request("GET", "/api/chat/rooms/?room_type=public&discover=true", token: t[1])
            #expect(discover.status == 200)
            #expect((discover.object["results"] as? [[String: Any]])?.map { $0["id"] as? String } == [publicRoom])
            // Anyone may read a public room; only participants a group room.
            #expect(try await server.request("GET", "/api/chat/rooms/\(publicRoom)/", token: t[1]).status == 200)
            #expect(try await server.request("GET", "/api/chat/rooms/\(publicRoom)/messages/", token: t[1]).status == 200)
            #expect(try await server.request("POST", "/api/chat/rooms/\(publicRoom)/messages/", token: t[1], json: ["content": "hi"]).status == 403)

            let joined = try await server.request("POST", "/api/chat/rooms/\(publicRoom)/join/", token: t[1])
            #expect(joined.status == 200)
            #expect(joined.object["status"] as? String == "joined room")
            #expect(try await server.request("POST", "/api/chat/rooms/\(publicRoom)/messages/", token: t[1], json: ["content": "hi"]).status == 201)
            let afterJoin = try await server.request("GET", "/api/chat/rooms/?room_type=public&discover=true", token: t[1])
            #expect(afterJoin.object["count"] as? Int == 0)
            #expect(try await server.request("POST", "/api/chat/rooms/\(groupRoom)/join/", token: t[1]).status == 403)

            let left = try await server.request("POST", "/api/chat/rooms/\(publicRoom)/leave/", token: t[1])
            #expect(left.status == 200)
            #expect(left.object["status"] as? String == "left room")
            #expect(try await server.request("POST", "/api/chat/rooms/\(publicRoom)/messages/", token: t[1], json: ["content": "x"]).status == 403)
        }
    }

    @Test func everyEndpointRefusesStrangers() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice", "mallory")
            let room = try await Steps.room(server, token: t[0], members: [])
            let posted = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: t[0], json: ["content": "m"])
            let message = try #require(posted.object["id"] as? String)
            let endpoints: [(String, String, Any?)] = [
                ("GET", "/api/chat/rooms/\(room)/", nil),
                ("PATCH", "/api/chat/rooms/\(room)/", ["name": "x"]),
                ("DELETE", "/api/chat/rooms/\(room)/", nil),
                ("POST", "/api/chat/rooms/\(room)/mark_read/", nil),
                ("GET", "/api/chat/rooms/\(room)/typing_users/", nil),
                ("POST", "/api/chat/rooms/\(room)/leave/", nil),
                ("GET", "/api/chat/rooms/\(room)/messages/", nil),
                ("POST", "/api/chat/rooms/\(room)/messages/", ["content": "x"]),
                ("GET", "/api/chat/rooms/\(room)/messages/\(message)/", nil),
                ("PATCH", "/api/chat/rooms/\(room)/messages/\(message)/", ["content": "x"]),
                ("DELETE", "/api/chat/rooms/\(room)/messages/\(message)/", nil),
                ("POST", "/api/chat/rooms/\(room)/messages/\(message)/react/", ["emoji": "👍"]),
                ("POST", "/api/chat/rooms/\(room)/messages/\(message)/mark_read/", nil),
            ]
            for (method, path, body) in endpoints {
                let anonymous = try await server.request(method, path, json: body)
                #expect(anonymous.status == 401, "\(method) \(path) without a token: \(anonymous.status)")
                let stranger = try await server.request(method, path, token: t[1], json: body)
                #expect(stranger.status == 403, "\(method) \(path) by a stranger: \(stranger.status)")
                #expect(stranger.object["detail"] as? String == "You don't have access to this room")
                let unknown = path.replacingOccurrences(of: room, with: IDs.uuid7())
                let missing = try await server.request(method, unknown, token: t[0], json: body)
                #expect(missing.status == 404, "\(method) \(unknown): \(missing.status)")
            }
            for (method, path) in [("GET", "/api/chat/sessions/active_sessions/"), ("POST", "/api/chat/sessions/cleanup_old_sessions/"),
                                   ("GET", "/api/chat/rooms/"), ("POST", "/api/chat/rooms/direct_message/")] {
                #expect(try await server.request(method, path).status == 401, "\(method) \(path)")
            }
            // Nothing the stranger did changed the room.
            #expect(try await Steps.contents(server, token: t[0], room: room) == ["m"])
        }
    }
}
