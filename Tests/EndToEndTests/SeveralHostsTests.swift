import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Several frontend hosts (docs/protocol.md, "Several frontend hosts"),
    /// on loopback: two `run: frontend` supervisors, each with its own
    /// broker, data and runtime directories, and one `run: workers`
    /// supervisor whose workers link to both brokers (`peers`).
    @Suite struct SeveralHosts {
        /// A client: its host, its token, and what its socket of each room delivered.
        final class Client {
            let name: String
            var server: TestServer
            let token: String
            var sockets: [String: WebSocketClient] = [:]
            /// Message ids as it has them, per room: live, or fetched with `after`.
            var seen: [String: [String]] = [:]
            var liveDuplicates: [String] = []

            init(_ name: String, _ server: TestServer, _ token: String) {
                (self.name, self.server, self.token) = (name, server, token)
            }

            func open(_ rooms: [String]) throws {
                for room in rooms { sockets[room] = try server.webSocket("/ws/chat/\(room)/", token: token) }
            }

            /// Reads `room`'s socket until `count` new messages came.
            func receive(_ count: Int, in room: String) throws {
                var got = 0
                while got < count, let event = try sockets[room]?.receive(type: "message", timeout: 15) {
                    guard let id = (event["message"] as? [String: Any])?["id"] as? String else { continue }
                    if seen[room, default: []].contains(id) {
                        liveDuplicates.append(id)
                    } else {
                        seen[room, default: []].append(id)
                        got += 1
                    }
                }
            }
        }

        /// The workers host: `chatd serve` with `run: workers`.
        static func startWorkersHost(dir: String, peers: String, secret: String, environment: [String: String] = [:]) throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try TestServer.binary())
            process.arguments = ["serve", "--die-with-parent"]
            process.environment = ProcessInfo.processInfo.environment.merging([
                "CHAT_RUN": "workers", "CHAT_PEERS": peers, "CHAT_HOST": "workers", "CHAT_DATA_DIR": dir,
                "CHAT_STORE_WORKERS": "2", "CHAT_JWT_SECRET": secret, "CHAT_LOG_LEVEL": "info",
            ].merging(try PostgresServer.environment(forDataDir: dir)) { $1 }.merging(environment) { $1 }) { $1 }
            _ = FileManager.default.createFile(atPath: dir + "/chatd.log", contents: nil)
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/chatd.log"))
            process.standardOutput = log
            process.standardError = log
            try process.run()
            return process
        }

        /// A host's `ctl status` `hosts`, by name.
        static func hosts(_ controlSocket: String) -> [String: [String: Any]] {
            guard let answer = try? TestServer.control(controlSocket, "status"),
                let status = try? JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any],
                let hosts = status["hosts"] as? [[String: Any]] else { return [:] }
            return Dictionary(hosts.compactMap { row in (row["host"] as? String).map { ($0, row) } }) { first, _ in first }
        }

        /// Every room's messages by id, oldest first, from the store (through `server`).
        static func stored(_ server: TestServer, token: String, room: String) async throws -> [String] {
            let response = try await server.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=100", token: token)
            #expect(response.status == 200)
            return (response.object["results"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }.reversed()
        }

        @Test func clientsOnTwoFrontendHostsShareRoomsAndSurviveOneHostsDeath() async throws {
            // Two shards: a broker's 12 ports (events in and out, an in and an out per queue).
            let base = try TestServer.freePorts(24)
            let (busA, busB) = ("tcp://127.0.0.1:\(base)", "tcp://127.0.0.1:\(base + 12)")
            let peers = "\(busA),\(busB)"
            let secret = TestServer.randomSecret()
            let workersDir = try TestServer.temporaryDirectory()
            let workers = try Self.startWorkersHost(dir: workersDir, peers: peers, secret: secret)
            defer {
                if workers.isRunning { kill(workers.processIdentifier, SIGTERM) }
                workers.waitUntilExit()
                if ProcessInfo.processInfo.environment["CHATD_KEEP_TEST_DATA"] == nil {
                    PostgresServer.dropDatabase(forDataDir: workersDir)
                    try? FileManager.default.removeItem(atPath: workersDir)
                }
            }
            func frontendHost(_ name: String, bus: String) async throws -> TestServer {
                try await TestServer.start(storeWorkers: 2, environment: [
                    "CHAT_RUN": "frontend", "CHAT_BUS": bus, "CHAT_PEERS": peers, "CHAT_HOST": name, "CHAT_RATE_LIMITS": "off",
                ], jwtSecret: secret)
            }
            let hostA = try await frontendHost("fe-a", bus: busA)
            defer { hostA.stop() }
            let hostB = try await frontendHost("fe-b", bus: busB)
            defer { hostB.stop() }

            let tokensA = try await Steps.users(hostA, "alice", "dave")
            let tokensB = try await Steps.users(hostB, "bob", "carol")
            let rooms = [
                try await Steps.room(hostA, token: tokensA[0], members: ["dave", "bob", "carol"], name: "one"),
                try await Steps.room(hostB, token: tokensB[0], members: ["alice", "dave", "carol"], name: "two"),
            ]
            let clients = [
                Client("alice", hostA, tokensA[0]), Client("dave", hostA, tokensA[1]),
                Client("bob", hostB, tokensB[0]), Client("carol", hostB, tokensB[1]),
            ]
            for client in clients { try client.open(rooms) }

            // Everyone sends; every socket of a room, on either host, sees every
            // message once, in the order the store gave them.
            let perClient = 5
            for i in 0..<perClient {
                for client in clients {
                    for room in rooms { try client.sockets[room]?.send(json: ["type": "message", "content": "\(client.name)-\(i)"]) }
                }
            }
            for client in clients { for room in rooms { try client.receive(clients.count * perClient, in: room) } }
            for room in rooms {
                let stored = try await Self.stored(hostB, token: tokensB[0], room: room)
                #expect(stored.count == clients.count * perClient)
                for client in clients { #expect(client.seen[room] == stored, "\(client.name) in \(room)") }
            }

            // Every host has heard from the first before it dies.
            for socket in [hostB.dataDir + "/run/control.sock", workersDir + "/run/control.sock"] {
                try await hostB.waitUntil(timeout: 20, "fe-a heard of in \(socket)") { Self.hosts(socket)["fe-a"]?["reachable"] as? Bool == true }
            }

            // The first frontend host dies whole: its supervisor (and broker) and every child.
            let supervisorA = hostA.process.processIdentifier
            let treeA = Set(hostA.childPIDs(matching: "") + EndToEnd.Supervision.children(of: supervisorA).keys + [supervisorA])
            for pid in treeA { kill(pid, SIGKILL) }
            hostA.process.waitUntilExit()

            // The second host's clients go on: the workers serve its broker
            // without waiting for the lost one.
            let (survivors, moved) = (Array(clients[2...]), Array(clients[..<2]))
            for i in 0..<perClient {
                for client in survivors {
                    for room in rooms { try client.sockets[room]?.send(json: ["type": "message", "content": "\(client.name)-after-\(i)"]) }
                }
            }
            for client in survivors { for room in rooms { try client.receive(survivors.count * perClient, in: room) } }

            // The first host's clients reconnect to the second and resume with `after`.
            for client in moved {
                client.server = hostB
                try client.open(rooms)
                for room in rooms {
                    let after = try #require(client.seen[room]?.last)
                    let page = try await hostB.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=100&after=\(after)", token: client.token)
                    #expect(page.status == 200)
                    let missed = (page.object["results"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }.reversed()
                    #expect(missed.count == survivors.count * perClient)
                    client.seen[room, default: []] += missed
                }
            }
            // And get what is sent from now on live, on their new host.
            for room in rooms { try clients[3].sockets[room]?.send(json: ["type": "message", "content": "carol-last"]) }
            for client in clients { for room in rooms { try client.receive(1, in: room) } }
            for room in rooms {
                let stored = try await Self.stored(hostB, token: tokensB[0], room: room)
                #expect(stored.count == clients.count * perClient + survivors.count * perClient + 1)
                for client in clients { #expect(client.seen[room] == stored, "\(client.name) in \(room): nothing lost, nothing twice") }
            }
            for client in clients { #expect(client.liveDuplicates.isEmpty, "\(client.name) got \(client.liveDuplicates) twice") }
            let workersLog = String(decoding: FileManager.default.contents(atPath: workersDir + "/chatd.log") ?? Data(), as: UTF8.self)
            #expect(workersLog.contains("lost the broker"))
            #expect(!workersLog.contains("another store shard count"))

            // `ctl status` on the second frontend host and on the workers host
            // lists all three hosts, the dead one unreachable.
            for socket in [hostB.dataDir + "/run/control.sock", workersDir + "/run/control.sock"] {
                try await hostB.waitUntil(timeout: 20, "three hosts, fe-a unreachable, in \(socket)") {
                    let hosts = Self.hosts(socket)
                    return Set(hosts.keys) == ["fe-a", "fe-b", "workers"] && hosts["fe-a"]?["reachable"] as? Bool == false
                        && hosts["fe-b"]?["reachable"] as? Bool == true && hosts["workers"]?["reachable"] as? Bool == true
                }
                let hosts = Self.hosts(socket)
                let workerChildren = (hosts["workers"]?["children"] as? [[String: Any]] ?? []).compactMap { $0["child"] as? String }
                #expect(workerChildren.contains("store.1") && workerChildren.contains("receipts.0"))
                #expect((hosts["fe-b"]?["children"] as? [[String: Any]])?.first?["child"] as? String == "frontend.0")
            }

            // The first host comes back on its bus: the workers serve it again
            // (its healthz needs every role), and its clients' messages reach
            // everyone on the second host.
            let again = try await frontendHost("fe-a", bus: busA)
            defer { again.stop() }
            let alice = try again.webSocket("/ws/chat/\(rooms[0])/", token: tokensA[0])
            try alice.send(json: ["type": "message", "content": "alice-back"])
            for client in clients { try client.receive(1, in: rooms[0]) }
            let stored = try await Self.stored(again, token: tokensA[0], room: rooms[0])
            for client in clients { #expect(client.seen[rooms[0]] == stored, "\(client.name) after the first host came back") }
            try await hostB.waitUntil(timeout: 20, "fe-a reachable again") {
                Self.hosts(workersDir + "/run/control.sock")["fe-a"]?["reachable"] as? Bool == true
            }
        }

        /// Every frontend host has a `frontend.0` and all share one database:
        /// a host's restart closes the sessions its previous processes left
        /// open, and none of another host's (sessions are named by host and slot).
        @Test func aFrontendHostsRestartLeavesTheOtherHostsSessionsActive() async throws {
            let base = try TestServer.freePorts(24)
            let (busA, busB) = ("tcp://127.0.0.1:\(base)", "tcp://127.0.0.1:\(base + 12)")
            let secret = TestServer.randomSecret()
            let workersDir = try TestServer.temporaryDirectory()
            let workers = try Self.startWorkersHost(dir: workersDir, peers: "\(busA),\(busB)", secret: secret)
            defer {
                if workers.isRunning { kill(workers.processIdentifier, SIGTERM) }
                workers.waitUntilExit()
                if ProcessInfo.processInfo.environment["CHATD_KEEP_TEST_DATA"] == nil { try? FileManager.default.removeItem(atPath: workersDir) }
            }
            func frontendHost(_ name: String, bus: String) async throws -> TestServer {
                try await TestServer.start(storeWorkers: 2, environment: [
                    "CHAT_RUN": "frontend", "CHAT_BUS": bus, "CHAT_PEERS": "\(busA),\(busB)", "CHAT_HOST": name,
                ], jwtSecret: secret)
            }
            let hostA = try await frontendHost("fe-a", bus: busA)
            let hostB = try await frontendHost("fe-b", bus: busB)
            defer { hostB.stop() }
            let alice = try await Steps.users(hostA, "alice")[0]
            let bob = try await Steps.users(hostB, "bob")[0]
            let room = try await Steps.room(hostA, token: alice, members: ["bob"], name: "restart")
            let sockets = [try hostA.webSocket("/ws/chat/\(room)/", token: alice), try hostB.webSocket("/ws/chat/\(room)/", token: bob)]
            func active(_ server: TestServer, _ token: String) async throws -> Int {
                (try await server.request("GET", "/api/chat/sessions/active_sessions/", token: token).json as? [Any])?.count ?? -1
            }
            try await hostB.waitUntil(timeout: 10, "both sessions open") {
                let (a, b) = (try await active(hostB, alice), try await active(hostB, bob))
                return a == 1 && b == 1
            }

            // Host A dies without closing its sessions and starts again: its
            // reset closes alice's session, and only hers.
            let supervisorA = hostA.process.processIdentifier
            let treeA = Set(hostA.childPIDs(matching: "") + EndToEnd.Supervision.children(of: supervisorA).keys + [supervisorA])
            for pid in treeA { kill(pid, SIGKILL) }
            hostA.process.waitUntilExit()
            // Every process of the dead host gone before its successor binds the
            // same bus: a straggler (gone within its parent watch's 0.5 s) would
            // reach the new broker and close its own sessions before the reset.
            try await hostB.waitUntil(timeout: 10, "host A's processes gone") { treeA.allSatisfy(EndToEnd.Supervision.gone) }
            let again = try await frontendHost("fe-a", bus: busA)
            defer { again.stop() }
            try await hostB.waitUntil(timeout: 20, "host A's reset done") {
                let log = String(decoding: FileManager.default.contents(atPath: workersDir + "/chatd.log") ?? Data(), as: UTF8.self)
                let closed = try await active(hostB, alice) == 0
                return log.contains("closed sessions a previous frontend left open") && closed
            }
            #expect(try await active(hostB, bob) == 1, "host A's restart closed host B's session")
            let workersLog = String(decoding: FileManager.default.contents(atPath: workersDir + "/chatd.log") ?? Data(), as: UTF8.self)
            #expect(workersLog.contains("frontend=fe-a/frontend.0"))
            #expect(!workersLog.contains("frontend=fe-b/"), "host B's sessions were closed")
            _ = sockets
        }

        /// A frontend host that routes rooms over another store shard count
        /// than the workers host runs is logged there as an error, by broker.
        @Test func aBrokerWithAnotherShardCountIsLoggedByTheWorkersHost() async throws {
            let bus = "tcp://127.0.0.1:\(try TestServer.freePorts(12))"
            let secret = TestServer.randomSecret()
            let workersDir = try TestServer.temporaryDirectory()
            let workers = try Self.startWorkersHost(dir: workersDir, peers: bus, secret: secret)
            defer {
                if workers.isRunning { kill(workers.processIdentifier, SIGTERM) }
                workers.waitUntilExit()
                if ProcessInfo.processInfo.environment["CHATD_KEEP_TEST_DATA"] == nil {
                    PostgresServer.dropDatabase(forDataDir: workersDir)
                    try? FileManager.default.removeItem(atPath: workersDir)
                }
            }
            let frontend = try await TestServer.start(
                storeWorkers: 1, environment: ["CHAT_RUN": "frontend", "CHAT_BUS": bus, "CHAT_PEERS": bus, "CHAT_HOST": "fe-1"], jwtSecret: secret)
            defer { frontend.stop() }
            try await frontend.waitUntil(timeout: 10, "the workers host's error") {
                let log = String(decoding: FileManager.default.contents(atPath: workersDir + "/chatd.log") ?? Data(), as: UTF8.self)
                return log.contains("another store shard count") && log.contains("announced=1") && log.contains("this.host=2")
            }
        }

        /// Issue 15's two parts together: every host has a CURVE key pair from
        /// `chatd keygen` and one peers file lists all three, both brokers by
        /// address. Each of the workers' links (and each supervisor's status
        /// socket) must use its own broker's key: messages flow through both
        /// frontend hosts, and every host sees the others in `ctl status`.
        @Test func hostsWithCurveKeysShareRooms() async throws {
            let base = try TestServer.freePorts(24)
            let (busA, busB) = ("tcp://127.0.0.1:\(base)", "tcp://127.0.0.1:\(base + 12)")
            let peers = "\(busA),\(busB)"
            let (secret, keys) = (TestServer.randomSecret(), try TestServer.temporaryDirectory())
            let lines = [
                try AuthenticatedBus.keygen(keys + "/fe-a.key", host: "fe-a", environment: ["CHAT_RUN": "frontend", "CHAT_BUS": busA]),
                try AuthenticatedBus.keygen(keys + "/fe-b.key", host: "fe-b", environment: ["CHAT_RUN": "frontend", "CHAT_BUS": busB]),
                try AuthenticatedBus.keygen(keys + "/workers.key", host: "workers"),
            ]
            try (lines.joined(separator: "\n") + "\n").write(toFile: keys + "/peers", atomically: true, encoding: .utf8)
            func keyed(_ host: String) -> [String: String] { ["CHAT_BUS_KEY": keys + "/\(host).key", "CHAT_BUS_PEER_KEYS": keys + "/peers"] }
            let workersDir = try TestServer.temporaryDirectory()
            let workers = try Self.startWorkersHost(dir: workersDir, peers: peers, secret: secret, environment: keyed("workers"))
            defer {
                if workers.isRunning { kill(workers.processIdentifier, SIGTERM) }
                workers.waitUntilExit()
                if ProcessInfo.processInfo.environment["CHATD_KEEP_TEST_DATA"] == nil {
                    PostgresServer.dropDatabase(forDataDir: workersDir)
                    for dir in [workersDir, keys] { try? FileManager.default.removeItem(atPath: dir) }
                }
            }
            func frontendHost(_ name: String, bus: String) async throws -> TestServer {
                try await TestServer.start(storeWorkers: 2, environment: [
                    "CHAT_RUN": "frontend", "CHAT_BUS": bus, "CHAT_PEERS": peers, "CHAT_HOST": name, "CHAT_RATE_LIMITS": "off",
                ].merging(keyed(name)) { $1 }, jwtSecret: secret)
            }
            let hostA = try await frontendHost("fe-a", bus: busA)
            defer { hostA.stop() }
            let hostB = try await frontendHost("fe-b", bus: busB)
            defer { hostB.stop() }

            let tokenA = try await Steps.users(hostA, "alice")[0]
            let tokenB = try await Steps.users(hostB, "bob")[0]
            let room = try await Steps.room(hostA, token: tokenA, members: ["bob"], name: "keyed")
            let clients = [Client("alice", hostA, tokenA), Client("bob", hostB, tokenB)]
            for client in clients { try client.open([room]) }
            for client in clients { try client.sockets[room]?.send(json: ["type": "message", "content": "from \(client.name)"]) }
            for client in clients { try client.receive(2, in: room) }
            let stored = try await Self.stored(hostB, token: tokenB, room: room)
            #expect(stored.count == 2)
            for client in clients { #expect(client.seen[room] == stored, "\(client.name) on its own host") }

            for socket in [hostA.dataDir + "/run/control.sock", workersDir + "/run/control.sock"] {
                try await hostA.waitUntil(timeout: 20, "every host reachable in \(socket)") {
                    let hosts = Self.hosts(socket)
                    return Set(hosts.keys) == ["fe-a", "fe-b", "workers"] && hosts.values.allSatisfy { $0["reachable"] as? Bool == true }
                }
            }
            for log in [hostA.log, hostB.log] { #expect(!log.contains("bus connection refused"), "a listed key was refused") }
        }
    }
}
