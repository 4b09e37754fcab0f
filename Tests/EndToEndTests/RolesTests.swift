import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 16: roles, members, ownership, announcement rooms and pins,
    /// through a real `chatd serve`: each refusal, and each change's event
    /// on every member's socket.
    @Suite struct Roles {
        static func id(_ sub: String) -> String { IDs.userID(forSubject: sub) }

        /// The next event of `type` on each socket, checked by `check`.
        static func expectEvent(_ type: String, on sockets: [WebSocketClient], _ check: ([String: Any]) -> Bool) throws {
            for (i, socket) in sockets.enumerated() {
                let event = try socket.receive(type: type, timeout: 10)
                #expect(event.map(check) == true, "socket \(i): \(String(describing: event))")
            }
        }

        static func userID(_ value: Any?) -> String? { (value as? [String: Any])?["id"] as? String }

        @Test func rolesAndRemovalReachEveryMembersSockets() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob", "carol", "dave")
            let room = try await Steps.room(server, token: t[0], members: ["bob", "carol"])
            let roomJSON = try await server.request("GET", "/api/chat/rooms/\(room)/", token: t[1])
            #expect(roomJSON.object["my_role"] as? String == "member" && roomJSON.object["post_permission"] as? String == "members")
            let sockets = try t.prefix(3).map { try server.webSocket("/ws/chat/\(room)/", token: $0) }

            // A member may not promote, nor add, nor remove.
            let path = "/api/chat/rooms/\(room)/members/"
            #expect(try await server.request("PATCH", path + "\(Self.id("carol"))/", token: t[1], json: ["role": "admin"]).status == 403)
            #expect(try await server.request("POST", path, token: t[1], json: ["user_ids": [Self.id("dave")]]).status == 403)
            #expect(try await server.request("DELETE", path + "\(Self.id("carol"))/", token: t[1]).status == 403)
            #expect(try await server.request("GET", path, token: t[3]).status == 403)
            // The owner makes bob admin: every socket hears it.
            let promoted = try await server.request("PATCH", path + "\(Self.id("bob"))/", token: t[0], json: ["role": "admin"])
            #expect(promoted.status == 200 && promoted.object["role"] as? String == "admin", "\(promoted.text)")
            #expect(try await server.request("PATCH", path + "\(Self.id("bob"))/", token: t[0], json: ["role": "owner"]).status == 400)
            try Self.expectEvent("role_changed", on: sockets) {
                Self.userID($0["user"]) == Self.id("bob") && $0["role"] as? String == "admin" && Self.userID($0["by"]) == Self.id("alice")
            }
            // bob, admin, adds dave, then removes carol; he cannot remove alice.
            #expect(try await server.request("POST", path, token: t[1], json: ["user_ids": [Self.id("dave")]]).status == 200)
            #expect(try await server.request("DELETE", path + "\(Self.id("alice"))/", token: t[1]).status == 403)
            let members = try await server.request("GET", path, token: t[3])
            let listed = (members.object["results"] as? [[String: Any]] ?? []).map { (Self.userID($0["user"]) ?? "", $0["role"] as? String ?? "") }
            #expect(listed.map(\.0) == ["alice", "bob", "carol", "dave"].map(Self.id) && listed.map(\.1) == ["owner", "admin", "member", "member"])
            #expect(try await server.request("DELETE", path + "\(Self.id("carol"))/", token: t[1]).status == 204)
            // Everyone hears carol leave, carol included, whose socket then closes with 4403.
            try Self.expectEvent("user_left", on: sockets) { $0["user_id"] as? String == Self.id("carol") }
            #expect(sockets[2].waitForClose(timeout: 10))
            #expect(sockets[2].closeCode == 4403)
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: t[2], json: ["content": "still here?"]).status == 403)
            #expect(try await server.request("DELETE", path + "\(Self.id("carol"))/", token: t[0]).status == 404)
        }

        @Test func ownershipTransferAndAnOwnerWhoLeaves() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob", "carol")
            let room = try await Steps.room(server, token: t[0], members: ["bob", "carol"])
            let sockets = try t.map { try server.webSocket("/ws/chat/\(room)/", token: $0) }
            let transfer = "/api/chat/rooms/\(room)/transfer_ownership/"
            #expect(try await server.request("POST", transfer, token: t[1], json: ["user_id": Self.id("bob")]).status == 403)
            let moved = try await server.request("POST", transfer, token: t[0], json: ["user_id": Self.id("bob")])
            #expect(moved.status == 200 && moved.object["my_role"] as? String == "admin", "\(moved.text)")
            try Self.expectEvent("role_changed", on: sockets) { Self.userID($0["user"]) == Self.id("bob") && $0["role"] as? String == "owner" }
            try Self.expectEvent("role_changed", on: sockets) { Self.userID($0["user"]) == Self.id("alice") && $0["role"] as? String == "admin" }
            // alice, now admin, cannot delete the room; bob leaves and alice, the longest-standing admin, owns it.
            #expect(try await server.request("DELETE", "/api/chat/rooms/\(room)/", token: t[0]).status == 403)
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/leave/", token: t[1]).status == 200)
            try Self.expectEvent("role_changed", on: [sockets[0], sockets[2]]) {
                Self.userID($0["user"]) == Self.id("alice") && $0["role"] as? String == "owner" && Self.userID($0["by"]) == Self.id("bob")
            }
            #expect(try await server.request("GET", "/api/chat/rooms/\(room)/", token: t[0]).object["my_role"] as? String == "owner")
            #expect(try await server.request("DELETE", "/api/chat/rooms/\(room)/", token: t[0]).status == 204)
        }

        @Test func announcementRoomsRefuseMembersOnRESTAndWebSocket() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: t[1])
            #expect(try await server.request("PATCH", "/api/chat/rooms/\(room)/", token: t[1], json: ["post_permission": "admins"]).status == 403)
            #expect(try await server.request("PATCH", "/api/chat/rooms/\(room)/", token: t[0], json: ["post_permission": "all"]).status == 400)
            let changed = try await server.request("PATCH", "/api/chat/rooms/\(room)/", token: t[0], json: ["post_permission": "admins"])
            #expect(changed.object["post_permission"] as? String == "admins", "\(changed.text)")
            let refused = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: t[1], json: ["content": "may I?"])
            #expect(refused.status == 403 && refused.object["detail"] as? String == "Only the room owner and admins can post in this room")
            try bob.send(json: ["type": "message", "content": "over the socket?"])
            let error = try bob.receive(type: "error", timeout: 10)
            #expect(error?["error"] as? String == "Only the room owner and admins can post in this room")
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: t[0], json: ["content": "news"]).status == 201)
            #expect(try bob.receiveMessage(content: "news") != nil)
            #expect(try await Steps.contents(server, token: t[1], room: room) == ["news"])
        }

        @Test func pinsAndTheirEventsInGroupAndDirectRooms() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            let sockets = try t.map { try server.webSocket("/ws/chat/\(room)/", token: $0) }
            let sent = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: t[1], json: ["content": "pin me"])
            let message = try #require(sent.object["id"] as? String)
            #expect(sent.object["is_pinned"] as? Bool == false && sent.object["pinned_by"] is NSNull)
            let pin = "/api/chat/rooms/\(room)/messages/\(message)/pin/"
            #expect(try await server.request("POST", pin, token: t[1]).status == 403)
            let pinned = try await server.request("POST", pin, token: t[0])
            #expect(pinned.status == 200 && pinned.object["is_pinned"] as? Bool == true && Self.userID(pinned.object["pinned_by"]) == Self.id("alice"))
            try Self.expectEvent("message_pinned", on: sockets) {
                ($0["message"] as? [String: Any])?["id"] as? String == message && Self.userID($0["pinned_by"]) == Self.id("alice")
            }
            // Again: 200, unchanged, and no second event (the next event is the message sent after it).
            let again = try await server.request("POST", pin, token: t[0])
            #expect(again.status == 200 && again.object["pinned_at"] as? String == pinned.object["pinned_at"] as? String)
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: t[0], json: ["content": "after"]).status == 201)
            // Presence comes from the receipts worker, in no order with the store's events: skipped.
            var next = try sockets[1].receiveJSON(timeout: 10)
            while let type = next?["type"] as? String, ["user_joined", "user_left"].contains(type) { next = try sockets[1].receiveJSON(timeout: 10) }
            #expect(next?["type"] as? String == "message", "\(String(describing: next))")
            let pins = try await server.request("GET", "/api/chat/rooms/\(room)/pins/", token: t[1])
            #expect((pins.object["results"] as? [[String: Any]])?.map { $0["id"] as? String } == [message])
            #expect(try await server.request("DELETE", pin, token: t[0]).status == 204)
            try Self.expectEvent("message_unpinned", on: sockets) { $0["message_id"] as? String == message && Self.userID($0["by"]) == Self.id("alice") }
            // A deleted message is unpinned, and cannot be pinned again.
            #expect(try await server.request("POST", pin, token: t[0]).status == 200)
            #expect(try await server.request("DELETE", "/api/chat/rooms/\(room)/messages/\(message)/", token: t[0]).status == 204)
            #expect((try await server.request("GET", "/api/chat/rooms/\(room)/pins/", token: t[1]).object["count"] as? Int) == 0)
            #expect(try await server.request("POST", pin, token: t[0]).status == 400)

            // A direct room: both members pin, and their /ws/direct/ sockets hear it.
            let direct = try await server.request("POST", "/api/chat/rooms/direct_message/", token: t[0], json: ["user_id": Self.id("bob")])
            let directRoom = try #require(direct.object["id"] as? String)
            let directSockets = [try server.webSocket("/ws/direct/\(Self.id("bob"))/", token: t[0]), try server.webSocket("/ws/direct/\(Self.id("alice"))/", token: t[1])]
            let hello = try await server.request("POST", "/api/chat/rooms/\(directRoom)/messages/", token: t[0], json: ["content": "hello"])
            let helloID = try #require(hello.object["id"] as? String)
            #expect(try await server.request("POST", "/api/chat/rooms/\(directRoom)/messages/\(helloID)/pin/", token: t[1]).status == 200)
            try Self.expectEvent("message_pinned", on: directSockets) { Self.userID($0["pinned_by"]) == Self.id("bob") }
        }
    }
}
