import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 16: every endpoint, old and new, called by the room's owner, an
    /// admin, a member and a non-member, against a real `chatd serve`, each
    /// call on a fresh room (so destructive rows do not disturb the next).
    /// The routes are the ones the server documents at /api/openapi.json,
    /// which OpenAPITests proves are exactly `ChatAPI.routes`: a route
    /// without a row here fails `everyRouteHasARow`.
    @Suite struct AuthorizationMatrix {
        /// The caller of a row: the room's owner (a direct room's creator),
        /// an admin, a member (a direct room's other member), a non-member.
        enum Caller: String, CaseIterable { case owner, admin, member, outsider }

        /// The room a row runs in.
        enum Kind: String { case group, `public`, direct, announcement }

        /// One endpoint for one kind of room: the expected status for each
        /// caller (nil: not asked, such as an admin of a direct room).
        /// Placeholders in the path and body: {room}, {owner}, {admin},
        /// {member}, {extra} (a user outside the room), {memberMessage},
        /// {ownerMessage}, {fileMessage}, {webhook}, {incoming} and
        /// {incomingToken} (an outgoing and an incoming webhook of the room),
        /// {call} (a ringing call the owner started), {newDevice} (a device id
        /// nobody published) and {ownerDevice} (one the owner did).
        struct Row: CustomStringConvertible {
            var method: String
            var path: String
            var kind: Kind
            var body: [String: Any]?
            var expected: [Caller: Int]

            init(_ method: String, _ path: String, _ kind: Kind = .group, body: [String: Any]? = nil,
                 owner: Int?, admin: Int?, member: Int?, outsider: Int?) {
                (self.method, self.path, self.kind, self.body) = (method, path, kind, body)
                var expected: [Caller: Int] = [:]
                for (caller, status) in [(Caller.owner, owner), (.admin, admin), (.member, member), (.outsider, outsider)] {
                    if let status { expected[caller] = status }
                }
                self.expected = expected
            }

            /// Open to anyone, token or not: the same status for every caller.
            static func open(_ path: String, _ status: Int = 200) -> Row {
                Row("GET", path, owner: status, admin: status, member: status, outsider: status)
            }

            var description: String { "\(method) \(path) (\(kind))" }
        }

        static let r = "/api/chat/rooms/{room}"
        // One line a row. Add yours where it belongs; the test says which routes have none.
        static var rows: [Row] {
            [
                .open("/healthz"), .open("/metrics"), .open("/api/openapi.json"), .open("/api/openapi.yaml"), .open("/"), .open("/app/api.js"),
                Row("GET", "/api/chat/rooms/", owner: 200, admin: 200, member: 200, outsider: 200),
                Row("POST", "/api/chat/rooms/", body: ["name": "new"], owner: 201, admin: 201, member: 201, outsider: 201),
                Row("POST", "/api/chat/rooms/direct_message/", body: ["user_id": "{extra}"], owner: 201, admin: 201, member: 201, outsider: 201),
                Row("GET", "\(r)/", owner: 200, admin: 200, member: 200, outsider: 403),
                Row("GET", "\(r)/", .public, owner: 200, admin: 200, member: 200, outsider: 200),
                Row("PATCH", "\(r)/", body: ["name": "renamed"], owner: 200, admin: 200, member: 403, outsider: 403),
                Row("PATCH", "\(r)/", body: ["post_permission": "admins"], owner: 200, admin: 200, member: 403, outsider: 403),
                Row("PATCH", "\(r)/", .direct, body: ["name": "renamed"], owner: 400, admin: nil, member: 403, outsider: 403),
                Row("PUT", "\(r)/", body: ["name": "renamed"], owner: 200, admin: 200, member: 403, outsider: 403),
                Row("DELETE", "\(r)/", owner: 204, admin: 403, member: 403, outsider: 403),
                Row("DELETE", "\(r)/", .direct, owner: 204, admin: nil, member: 403, outsider: 403),
                Row("POST", "\(r)/join/", owner: 403, admin: 403, member: 403, outsider: 403),
                Row("POST", "\(r)/join/", .public, owner: 200, admin: 200, member: 200, outsider: 200),
                Row("POST", "\(r)/leave/", owner: 200, admin: 200, member: 200, outsider: 403),
                Row("POST", "\(r)/leave/", .direct, owner: 400, admin: nil, member: 400, outsider: 403),
                Row("POST", "\(r)/mark_read/", owner: 200, admin: 200, member: 200, outsider: 403),
                Row("GET", "\(r)/typing_users/", owner: 200, admin: 200, member: 200, outsider: 403),
                Row("GET", "\(r)/messages/", owner: 200, admin: 200, member: 200, outsider: 403),
                Row("GET", "\(r)/messages/", .public, owner: 200, admin: 200, member: 200, outsider: 200),
                Row("POST", "\(r)/messages/", body: ["content": "hi"], owner: 201, admin: 201, member: 201, outsider: 403),
                Row("POST", "\(r)/messages/", .public, body: ["content": "hi"], owner: 201, admin: 201, member: 201, outsider: 403),
                Row("POST", "\(r)/messages/", .announcement, body: ["content": "hi"], owner: 201, admin: 201, member: 403, outsider: 403),
                Row("POST", "\(r)/messages/", .direct, body: ["content": "hi"], owner: 201, admin: nil, member: 201, outsider: 403),
                Row("GET", "\(r)/messages/{memberMessage}/", owner: 200, admin: 200, member: 200, outsider: 403),
                Row("PATCH", "\(r)/messages/{memberMessage}/", body: ["content": "edited"], owner: 403, admin: 403, member: 200, outsider: 403),
                Row("DELETE", "\(r)/messages/{memberMessage}/", owner: 204, admin: 204, member: 204, outsider: 403),
                Row("DELETE", "\(r)/messages/{ownerMessage}/", owner: 204, admin: 403, member: 403, outsider: 403),
                Row("DELETE", "\(r)/messages/{memberMessage}/", .direct, owner: 403, admin: nil, member: 204, outsider: 403),
                Row("POST", "\(r)/messages/{memberMessage}/react/", body: ["emoji": "👍"], owner: 200, admin: 200, member: 200, outsider: 403),
                Row("POST", "\(r)/messages/{ownerMessage}/mark_read/", owner: 200, admin: 200, member: 200, outsider: 403),
                Row("GET", "\(r)/messages/{fileMessage}/download/", owner: 200, admin: 200, member: 200, outsider: 403),
                Row("GET", "/api/chat/search/messages/?q=hi", owner: 200, admin: 200, member: 200, outsider: 200),
                Row("GET", "/api/chat/search/rooms/?q=team", owner: 200, admin: 200, member: 200, outsider: 200),
                Row("GET", "/api/chat/sessions/active_sessions/", owner: 200, admin: 200, member: 200, outsider: 200),
                Row("POST", "/api/chat/sessions/cleanup_old_sessions/", owner: 200, admin: 200, member: 200, outsider: 200),
                // Roles and pins.
                Row("GET", "\(r)/members/", owner: 200, admin: 200, member: 200, outsider: 403),
                Row("GET", "\(r)/members/", .public, owner: 200, admin: 200, member: 200, outsider: 200),
                Row("POST", "\(r)/members/", body: ["user_ids": ["{extra}"]], owner: 200, admin: 200, member: 403, outsider: 403),
                Row("POST", "\(r)/members/", .direct, body: ["user_ids": ["{extra}"]], owner: 403, admin: nil, member: 403, outsider: 403),
                Row("PATCH", "\(r)/members/{member}/", body: ["role": "admin"], owner: 200, admin: 403, member: 403, outsider: 403),
                Row("DELETE", "\(r)/members/{member}/", owner: 204, admin: 204, member: 403, outsider: 403),
                Row("DELETE", "\(r)/members/{admin}/", owner: 204, admin: 403, member: 403, outsider: 403),
                Row("DELETE", "\(r)/members/{owner}/", owner: 403, admin: 403, member: 403, outsider: 403),
                Row("POST", "\(r)/transfer_ownership/", body: ["user_id": "{member}"], owner: 200, admin: 403, member: 403, outsider: 403),
                Row("GET", "\(r)/pins/", owner: 200, admin: 200, member: 200, outsider: 403),
                Row("GET", "\(r)/pins/", .public, owner: 200, admin: 200, member: 200, outsider: 200),
                Row("POST", "\(r)/messages/{memberMessage}/pin/", owner: 200, admin: 200, member: 403, outsider: 403),
                Row("POST", "\(r)/messages/{memberMessage}/pin/", .direct, owner: 200, admin: nil, member: 200, outsider: 403),
                Row("DELETE", "\(r)/messages/{memberMessage}/pin/", owner: 204, admin: 204, member: 403, outsider: 403),
                // Mute, notification level, mentions: the caller's own settings, any member's.
                Row("POST", "\(r)/mute/", body: [:], owner: 200, admin: 200, member: 200, outsider: 403),
                Row("DELETE", "\(r)/mute/", owner: 204, admin: 204, member: 204, outsider: 403),
                Row("PUT", "\(r)/notifications/", body: ["level": "mentions"], owner: 200, admin: 200, member: 200, outsider: 403),
                Row("GET", "/api/chat/mentions/", owner: 200, admin: 200, member: 200, outsider: 200),
                // Users and blocks: the caller's own, no room involved.
                Row("GET", "/api/chat/users/me/", owner: 200, admin: 200, member: 200, outsider: 200),
                Row("GET", "/api/chat/users/?q=extra", owner: 200, admin: 200, member: 200, outsider: 200),
                Row("GET", "/api/chat/users/blocked/", owner: 200, admin: 200, member: 200, outsider: 200),
                Row("POST", "/api/chat/users/{extra}/block/", owner: 200, admin: 200, member: 200, outsider: 200),
                Row("DELETE", "/api/chat/users/{extra}/block/", owner: 204, admin: 204, member: 204, outsider: 204),
                // Webhooks: owner and admin (Permissions' manageWebhooks); none in direct rooms.
                Row("POST", "\(r)/webhooks/", body: ["url": "http://127.0.0.1:9/", "events": ["message_created"]],
                    owner: 201, admin: 201, member: 403, outsider: 403),
                Row("POST", "\(r)/webhooks/", .direct, body: ["url": "http://127.0.0.1:9/", "events": ["message_created"]],
                    owner: 403, admin: nil, member: 403, outsider: 403),
                Row("GET", "\(r)/webhooks/", owner: 200, admin: 200, member: 403, outsider: 403),
                Row("DELETE", "\(r)/webhooks/{webhook}/", owner: 204, admin: 204, member: 403, outsider: 403),
                Row("GET", "\(r)/webhooks/{webhook}/failures/", owner: 200, admin: 200, member: 403, outsider: 403),
                Row("POST", "\(r)/webhooks/incoming/", body: ["name": "bot"], owner: 201, admin: 201, member: 403, outsider: 403),
                // The secret URL is its own credential: the same for any caller, token or not.
                Row("POST", "\(r)/webhooks/incoming/{incoming}/{incomingToken}/", body: ["content": "from a bot"],
                    owner: 201, admin: 201, member: 201, outsider: 201),
                // Calls: members only, public rooms too. {call} rings, started by the owner,
                // so only the owner is in it: a leave or an end by anyone else is 400.
                Row("POST", "\(r)/calls/", body: ["media": "audio"], owner: 201, admin: 201, member: 201, outsider: 403),
                Row("POST", "\(r)/calls/", .public, body: ["media": "video"], owner: 201, admin: 201, member: 201, outsider: 403),
                Row("POST", "\(r)/calls/", .direct, body: ["media": "audio"], owner: 201, admin: nil, member: 201, outsider: 403),
                Row("GET", "\(r)/calls/", owner: 200, admin: 200, member: 200, outsider: 403),
                Row("GET", "\(r)/calls/", .public, owner: 200, admin: 200, member: 200, outsider: 403),
                Row("POST", "/api/chat/calls/{call}/join/", owner: 200, admin: 200, member: 200, outsider: 403),
                Row("POST", "/api/chat/calls/{call}/leave/", owner: 200, admin: 400, member: 400, outsider: 403),
                Row("POST", "/api/chat/calls/{call}/decline/", owner: 400, admin: 200, member: 200, outsider: 403),
                Row("POST", "/api/chat/calls/{call}/end/", owner: 200, admin: 400, member: 400, outsider: 403),
                Row("GET", "/api/chat/calls/ice_servers/", owner: 200, admin: 200, member: 200, outsider: 200),
                // Encrypted rooms: anyone may make one; the key directory is each user's own,
                // and a user's keys are for those who share a room with them.
                Row("POST", "/api/chat/rooms/", body: ["name": "secret", "encrypted": true], owner: 201, admin: 201, member: 201, outsider: 201),
                Row("PUT", "/api/chat/keys/devices/{newDevice}/", body: ["identity_key": "aWs=", "signed_prekey": "c3Br", "signature": "c2ln"],
                    owner: 200, admin: 200, member: 200, outsider: 200),
                Row("DELETE", "/api/chat/keys/devices/{ownerDevice}/", owner: 204, admin: 404, member: 404, outsider: 404),
                Row("GET", "/api/chat/keys/users/{owner}/", owner: 200, admin: 200, member: 200, outsider: 404),
            ]
        }

        /// `/rooms/{room}/…?q=` and `/rooms/{room_id}/…` as one shape: path parameters unnamed, no query.
        static func shape(_ method: String, _ path: String) -> String {
            let bare = path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? path
            let segments = bare.split(separator: "/", omittingEmptySubsequences: false).map { segment in
                segment.hasPrefix("{") && segment.hasSuffix("}") ? "{}" : String(segment)
            }
            // `/app/api.js` is `/app/{file}`.
            let shaped = segments.count == 3 && segments[1] == "app" ? "/app/{}" : segments.joined(separator: "/")
            return "\(method) \(shaped)"
        }

        /// A fresh room of `kind` with its callers and messages.
        struct Fixture {
            var values: [String: String] = [:]
            var tokens: [Caller: String] = [:]

            func fill(_ text: String) -> String {
                values.reduce(text) { $0.replacingOccurrences(of: "{\($1.key)}", with: $1.value) }
            }

            func fill(_ value: Any) -> Any {
                switch value {
                case let text as String: fill(text)
                case let list as [Any]: list.map(fill)
                case let object as [String: Any]: object.mapValues(fill)
                default: value
                }
            }
        }

        static func fixture(_ server: TestServer, _ kind: Kind, needsFile: Bool, needsWebhooks: Bool, needsCall: Bool, needsDevice: Bool = false, n: Int) async throws -> Fixture {
            var f = Fixture()
            let subs = Caller.allCases.map { "\($0.rawValue)-\(n)" } + ["extra-\(n)"]
            let tokens = try await subs.asyncMap { try await Steps.users(server, $0)[0] }
            for (caller, token) in zip(Caller.allCases, tokens) { f.tokens[caller] = token }
            for (caller, sub) in zip(Caller.allCases, subs) { f.values[caller.rawValue] = IDs.userID(forSubject: sub) }
            f.values["extra"] = IDs.userID(forSubject: subs[4])
            let owner = tokens[0]
            if kind == .direct {
                let room = try await server.request("POST", "/api/chat/rooms/direct_message/", token: owner, json: ["user_id": f.values["member"]!])
                f.values["room"] = try #require(room.object["id"] as? String)
            } else {
                let room = try await server.request("POST", "/api/chat/rooms/", token: owner, json: [
                    "name": "team", "room_type": kind == .public ? "public" : "group",
                    "participant_ids": [f.values["admin"]!, f.values["member"]!],
                ])
                f.values["room"] = try #require(room.object["id"] as? String, "\(room.text)")
                let promoted = try await server.request("PATCH", "/api/chat/rooms/\(f.values["room"]!)/members/\(f.values["admin"]!)/", token: owner, json: ["role": "admin"])
                #expect(promoted.status == 200, "\(promoted.text)")
            }
            let room = f.values["room"]!
            for (key, token) in [("memberMessage", tokens[2]), ("ownerMessage", owner)] {
                let sent = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: token, json: ["content": "hi from \(key)"])
                f.values[key] = try #require(sent.object["id"] as? String, "\(sent.text)")
            }
            if needsFile {
                let upload = try await EndToEnd.Files.upload(server, token: owner, room: room, fields: ["content": "a file"], fileName: "a.txt", file: Data("bytes".utf8))
                f.values["fileMessage"] = try #require(upload.object["id"] as? String, "\(upload.text)")
            }
            if needsWebhooks {
                let hook = try await server.request("POST", "/api/chat/rooms/\(room)/webhooks/", token: owner,
                                                    json: ["url": "http://127.0.0.1:9/", "events": ["message_created"]])
                f.values["webhook"] = try #require(hook.object["id"] as? String, "\(hook.text)")
                let incoming = try await server.request("POST", "/api/chat/rooms/\(room)/webhooks/incoming/", token: owner, json: ["name": "bot"])
                // Its secret URL ends .../incoming/{id}/{token}/.
                let url = try #require((incoming.object["url"] as? String).flatMap(URL.init(string:)), "\(incoming.text)")
                let parts = url.path.split(separator: "/")
                f.values["incoming"] = String(parts[parts.count - 2])
                f.values["incomingToken"] = String(parts[parts.count - 1])
            }
            f.values["newDevice"] = IDs.uuid7()
            if needsDevice {
                let device = IDs.uuid7()
                let published = try await server.request("PUT", "/api/chat/keys/devices/\(device)/", token: owner,
                                                         json: ["identity_key": "aWs=", "signed_prekey": "c3Br", "signature": "c2ln"])
                #expect(published.status == 200, "\(published.text)")
                f.values["ownerDevice"] = device
            }
            if needsCall {
                let call = try await server.request("POST", "/api/chat/rooms/\(room)/calls/", token: owner, json: ["media": "audio"])
                f.values["call"] = try #require(call.object["id"] as? String, "\(call.text)")
            }
            if kind == .announcement {
                #expect(try await server.request("PATCH", "/api/chat/rooms/\(room)/", token: owner, json: ["post_permission": "admins"]).status == 200)
            }
            return f
        }

        @Test func everyRouteHasARow() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            defer { server.stop() }
            let document = try await server.request("GET", "/api/openapi.json")
            let paths = try #require(document.object["paths"] as? [String: Any])
            let methods: Set<String> = ["get", "post", "put", "patch", "delete"]
            let routes = Set(paths.flatMap { path, item in
                ((item as? [String: Any]) ?? [:]).keys.filter(methods.contains).map { Self.shape($0.uppercased(), path) }
            })
            #expect(routes.count >= 37, "read \(routes.count) routes from /api/openapi.json")
            let covered = Set(Self.rows.map { Self.shape($0.method, $0.path) })
            #expect(routes.subtracting(covered).sorted() == [], "routes with no row in AuthorizationMatrix.rows")
            #expect(covered.subtracting(routes).sorted() == [], "rows for routes the server does not have")
        }

        @Test func everyCallerGetsItsStatusOnEveryRoute() async throws {
            // The webhook rows' receiver is on loopback (never called: port 9).
            let server = try await TestServer.start(environment: Steps.noRateLimits.merging(["CHAT_WEBHOOKS_ALLOW_PRIVATE": "1"]) { a, _ in a })
            defer { server.stop() }
            var n = 0
            var wrong: [String] = []
            for row in Self.rows {
                for caller in Caller.allCases {
                    guard let expected = row.expected[caller] else { continue }
                    n += 1
                    let f = try await Self.fixture(server, row.kind, needsFile: row.path.contains("{fileMessage}"),
                                                   needsWebhooks: row.path.contains("{webhook}") || row.path.contains("{incoming}"),
                                                   needsCall: row.path.contains("{call}"), needsDevice: row.path.contains("{ownerDevice}"), n: n)
                    let json = row.body.map { f.fill($0) }
                    let answer = try await server.request(row.method, f.fill(row.path), token: f.tokens[caller], json: json)
                    if answer.status != expected {
                        wrong.append("\(row) as \(caller): \(answer.status), expected \(expected): \(answer.text.prefix(160))")
                    }
                }
            }
            #expect(wrong.isEmpty, "\(wrong.count) of \(n) calls:\n\(wrong.joined(separator: "\n"))")
        }
    }
}
