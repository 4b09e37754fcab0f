import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 12: a warm standby per worker role. A SIGKILLed worker's place is
    /// taken by its role's standby (the same process, already connected), a
    /// new standby starts behind it, and under load in several rooms nothing
    /// is lost, duplicated or reordered.
    @Suite struct Standby {
        /// Serving children's and standbys' pids and readiness, from `ctl status`.
        struct Processes {
            var children: [String: (pid: Int32, ready: Bool)] = [:]
            var standbys: [String: (pid: Int32, ready: Bool)] = [:]

            init(_ server: TestServer) throws {
                let status = try server.status()
                for (key, rows) in [("children", \Processes.children), ("standbys", \Processes.standbys)] {
                    for row in status[key] as? [[String: Any]] ?? [] {
                        guard let name = row["child"] as? String, let pid = row["pid"] as? Int else { continue }
                        self[keyPath: rows][name] = (Int32(pid), row["ready"] as? Bool == true)
                    }
                }
            }
        }

        /// One room's clients: every member has a socket; the first `senders` send.
        struct Room {
            var id: String
            var tokens: [String]
            var sockets: [WebSocketClient]
            var senders: [String]
        }

        static func waitForStandbys(_ server: TestServer, _ names: [String]) async throws {
            try await server.waitUntil(timeout: 20, "standbys \(names) ready") {
                let standbys = try Processes(server).standbys
                return names.allSatisfy { standbys[$0]?.ready == true }
            }
        }

        /// SIGKILLs the worker `name` and checks that its role's standby took
        /// its place (same pid) and that a new standby is started and ready.
        static func killAndExpectTakeover(_ server: TestServer, _ name: String, standby: String) async throws {
            let before = try Processes(server)
            let victim = try #require(before.children[name]?.pid)
            let spare = try #require(before.standbys[standby], "no \(standby)")
            #expect(spare.ready)
            #expect(kill(victim, SIGKILL) == 0)
            try await server.waitUntil(timeout: 10, "\(name) served by its standby") {
                let now = try Processes(server).children[name]
                return now?.pid != victim && now?.ready == true
            }
            #expect(try Processes(server).children[name]?.pid == spare.pid, "\(name) was not replaced by \(standby) (pid \(spare.pid))")
            try await server.waitUntil(timeout: 20, "a new \(standby)") {
                let next = try Processes(server).standbys[standby]
                return next.map { $0.pid != spare.pid && $0.ready } ?? false
            }
        }

        @Test func killedWorkersAreTakenOverByTheirStandbysAndEveryRoomKeepsItsOrder() async throws {
            let server = try await TestServer.start(storeWorkers: 2, environment: Steps.noRateLimits)
            defer { server.stop() }
            let roles = ["store", "receipts", "search", "files"]
            try await Self.waitForStandbys(server, roles.map { "standby.\($0)" })
            #expect(server.childPIDs(matching: "chatd worker").count == 6, "waiting standbys are no one's worker (2 store, receipts, search, files, webhooks)")

            // 4 rooms of 3 members, 2 of whom send; rooms hash onto both shards.
            var rooms: [Room] = []
            for r in 0..<4 {
                let (id, subs, tokens) = try await server.room(of: 3, prefix: "sb\(r)", name: "standby \(r)")
                let sockets = try tokens.map { try server.webSocket("/ws/chat/\(id)/", token: $0) }
                rooms.append(Room(id: id, tokens: tokens, sockets: sockets, senders: Array(subs.prefix(2))))
            }
            // ~3 s of sending at ~400 messages/s in all, while three workers are killed.
            let perSender = 150
            let group = DispatchGroup()
            for room in rooms {
                for (index, sender) in room.senders.enumerated() {
                    let socket = room.sockets[index]
                    group.enter()
                    Thread {
                        for i in 0..<perSender {
                            try? socket.send(json: ["type": "message", "content": "\(sender)#\(i)", "client_msg_id": "\(sender)-\(i)"])
                            usleep(20_000)
                        }
                        group.leave()
                    }.start()
                }
            }
            try await Task.sleep(for: .milliseconds(300))
            try await Self.killAndExpectTakeover(server, "store.0", standby: "standby.store")
            try await Self.killAndExpectTakeover(server, "receipts.0", standby: "standby.receipts")
            try await Self.killAndExpectTakeover(server, "search.0", standby: "standby.search")
            group.wait()

            let expected = perSender * 2
            for room in rooms {
                var orders: [[String]] = []
                for socket in room.sockets {
                    var order: [String] = []
                    while order.count < expected, let event = try socket.receive(type: "message", timeout: 20) {
                        order.append(((event["message"] as? [String: Any])?["content"] as? String) ?? "")
                    }
                    // A duplicate would come right behind: a moment more for one.
                    while let event = try socket.receive(type: "message", timeout: 0.3) {
                        order.append(((event["message"] as? [String: Any])?["content"] as? String) ?? "")
                    }
                    #expect(order.count == expected && Set(order).count == expected, "room \(room.id): \(order.count) events, \(Set(order).count) distinct")
                    #expect(!socket.isClosed)
                    orders.append(order)
                }
                // Every member saw the room in one order: the stored one (by seq).
                let history = try await Steps.contents(server, token: room.tokens[0], room: room.id)
                #expect(history.count == expected)
                for order in orders { #expect(order == history, "room \(room.id): a member's order differs from the history") }
                // And each sender's messages were stored in the order sent.
                for sender in room.senders {
                    let mine = history.filter { $0.hasPrefix("\(sender)#") }
                    #expect(mine == (0..<perSender).map { "\(sender)#\($0)" })
                }
            }

            // The promoted workers serve their roles: search finds the
            // newest message (the promoted search worker opened the index),
            // receipts are stored.
            let room = rooms[0]
            let last = "\(room.senders[1])#\(perSender - 1)"
            try await server.waitUntil(timeout: 20, "the promoted search worker indexes") {
                let found = try await server.request("GET", "/api/chat/search/messages/?q=\(last.replacingOccurrences(of: "#", with: "%23"))", token: room.tokens[0])
                return (found.json as? [Any])?.isEmpty == false
            }
            let reader = room.sockets[2]
            let newest = try await server.request("GET", "/api/chat/rooms/\(room.id)/messages/?page_size=1", token: room.tokens[0])
            let newestID = try #require((newest.object["results"] as? [[String: Any]])?.first?["id"] as? String)
            try reader.send(json: ["type": "read_receipt", "message_id": newestID])
            try await server.waitUntil(timeout: 10, "the receipt stored") {
                let listed = try await server.request("GET", "/api/chat/rooms/\(room.id)/messages/?page_size=1", token: room.tokens[0])
                let readBy = (listed.object["results"] as? [[String: Any]])?.first?["read_by"] as? [[String: Any]] ?? []
                return readBy.contains { $0["id"] as? String == IDs.userID(forSubject: "sb0-2") }
            }
            #expect(server.log.contains("standby promoted"))
        }

        @Test func aRollingRestartPromotesNoStandbyStartedBeforeIt() async throws {
            let server = try await TestServer.start(storeWorkers: 2)
            defer { server.stop() }
            try await Self.waitForStandbys(server, ["standby.store"])
            let before = try Processes(server)
            let standby = try #require(before.standbys["standby.store"]?.pid)
            let answer = try server.ctl(["restart", "store"])
            #expect(answer.contains(#""restarted":["store.0","store.1"]"#), "\(answer)")
            let after = try Processes(server)
            for name in ["store.0", "store.1"] {
                #expect(after.children[name]?.ready == true)
                #expect(after.children[name]?.pid != before.children[name]?.pid)
                #expect(after.children[name]?.pid != standby, "\(name) is the standby started before the restart")
            }
            try await server.waitUntil(timeout: 20, "a new standby") {
                let next = try Processes(server).standbys["standby.store"]
                return next.map { $0.pid != standby && $0.ready } ?? false
            }
            // The old standby is gone, not left waiting.
            try await server.waitUntil(timeout: 10, "the old standby exits") { kill(standby, 0) != 0 }
        }

        /// A standby read the configuration when it started: a reload that
        /// changes what workers read restarts every standby, and a worker
        /// the reload adds (a receipts scale-up) is not the standby that
        /// read the old configuration.
        @Test func aReloadRestartsTheStandbysBeforeItAddsWorkers() async throws {
            let configFile = NSTemporaryDirectory() + "chatd-standby-reload-\(UUID().uuidString).yaml"
            try "chat:\n  receiptsWorkers: 1\n".write(toFile: configFile, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: configFile) }
            let server = try await TestServer.start(configFile: configFile)
            defer { server.stop() }
            let roles = ["store", "receipts", "search", "files"].map { "standby.\($0)" }
            try await Self.waitForStandbys(server, roles)
            let before = try Processes(server).standbys
            try "chat:\n  receiptsWorkers: 2\n  typingWindowSeconds: 20\n".write(toFile: configFile, atomically: true, encoding: .utf8)
            #expect(kill(server.process.processIdentifier, SIGHUP) == 0)
            try await server.waitUntil(timeout: 20, "receipts.1 serving") { try Processes(server).children["receipts.1"]?.ready == true }
            let added = try #require(try Processes(server).children["receipts.1"]?.pid)
            #expect(added != before["standby.receipts"]?.pid, "receipts.1 is the standby that read the old configuration")
            try await server.waitUntil(timeout: 20, "every standby restarted and ready") {
                let now = try Processes(server).standbys
                return roles.allSatisfy { name in now[name].map { $0.ready && $0.pid != before[name]?.pid } ?? false }
            }
            for (name, old) in before { try await server.waitUntil(timeout: 10, "the old \(name) exits") { kill(old.pid, 0) != 0 } }
        }

        @Test func withStandbysOffAWorkerStartsCold() async throws {
            let server = try await TestServer.start(storeWorkers: 1, environment: ["CHAT_STANDBYS": "false"])
            defer { server.stop() }
            let before = try Processes(server)
            #expect(before.standbys.isEmpty)
            let victim = try #require(before.children["store.0"]?.pid)
            #expect(kill(victim, SIGKILL) == 0)
            try await server.waitUntil(timeout: 10, "store.0 back") {
                let now = try Processes(server).children["store.0"]
                return now?.pid != victim && now?.ready == true
            }
            let tokens = try await Steps.users(server, "alice")
            let room = try await Steps.room(server, token: tokens[0], members: [])
            let posted = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "cold"])
            #expect(posted.status == 201)
            #expect(!server.log.contains("standby promoted"))
        }
    }
}
