import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Two `run: workers` hosts sharing one PostgreSQL (docs/protocol.md,
    /// "Several workers hosts"): each runs `store.0` and `store.1`, and only
    /// the holder of a shard's lock reads its queue. Without PostgreSQL
    /// (several workers hosts need it) the suite is skipped.
    @Suite(.enabled(if: PostgresServer.isInstalled)) struct ShardOwner {
        static func log(_ dir: String) -> String {
            String(decoding: FileManager.default.contents(atPath: dir + "/chatd.log") ?? Data(), as: UTF8.self)
        }

        static func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

        @Test func oneHostServesEachShardAndTheOtherTakesItWhenThatHostDies() async throws {
            let server = try PostgresServer.start()
            let url = try server.createDatabase()
            defer { server.dropDatabase(url: url) }
            // Two shards: the broker's 12 ports.
            let bus = "tcp://127.0.0.1:\(try TestServer.freePorts(12))"
            let secret = TestServer.randomSecret()
            let dirs = [try TestServer.temporaryDirectory(), try TestServer.temporaryDirectory()]
            func workersHost(_ index: Int) throws -> Process {
                try SeveralHosts.startWorkersHost(dir: dirs[index], peers: bus, secret: secret, environment: [
                    "CHAT_DATABASE_URL": url, "CHAT_HOST": "workers-\(index)",
                ])
            }
            let first = try workersHost(0)
            var hosts = [first]
            defer {
                for host in hosts where host.isRunning { kill(host.processIdentifier, SIGTERM) }
                for host in hosts { host.waitUntilExit() }
                if ProcessInfo.processInfo.environment["CHATD_KEEP_TEST_DATA"] == nil {
                    for dir in dirs {
                        PostgresServer.dropDatabase(forDataDir: dir)
                        try? FileManager.default.removeItem(atPath: dir)
                    }
                }
            }
            let frontend = try await TestServer.start(storeWorkers: 2, environment: [
                "CHAT_RUN": "frontend", "CHAT_BUS": bus, "CHAT_PEERS": bus, "CHAT_HOST": "fe", "CHAT_RATE_LIMITS": "off",
            ], jwtSecret: secret)
            defer { frontend.stop() }
            // The first host holds both shards before the second starts.
            try await frontend.waitUntil(timeout: 30, "the first host holds both shards") {
                Self.count("holds the shard's lock; serving", in: Self.log(dirs[0])) == 2
            }
            hosts.append(try workersHost(1))
            try await frontend.waitUntil(timeout: 30, "the second host's store workers wait") {
                Self.count("holds the shard's lock; waiting", in: Self.log(dirs[1])) == 2
            }

            let tokens = try await Steps.users(frontend, "alice", "bob")
            let room = try await Steps.room(frontend, token: tokens[0], members: ["bob"], name: "ordered")
            let sockets = [
                try frontend.webSocket("/ws/chat/\(room)/", token: tokens[0]), try frontend.webSocket("/ws/chat/\(room)/", token: tokens[1]),
            ]
            // Both send at once: every socket sees every message once, in the store's order.
            let senders = [
                FailoverSender(servers: [frontend], room: room, token: tokens[0], name: "alice", limit: 20, pace: 0.005),
                FailoverSender(servers: [frontend], room: room, token: tokens[1], name: "bob", limit: 20, pace: 0.005),
            ]
            for group in senders.map({ $0.start() }) { group.wait() }
            var seen = [[String]](repeating: [], count: sockets.count)
            func receive(_ count: Int) throws {
                for (index, socket) in sockets.enumerated() {
                    let target = seen[index].count + count
                    while seen[index].count < target, let event = try socket.receive(type: "message", timeout: 20) {
                        if let id = (event["message"] as? [String: Any])?["id"] as? String { seen[index].append(id) }
                    }
                }
            }
            try receive(40)
            var stored = try await SeveralHosts.stored(frontend, token: tokens[0], room: room)
            #expect(stored.count == 40)
            for index in sockets.indices { #expect(seen[index] == stored, "socket \(index): in the store's order, each once") }

            // The first host dies whole; messages sent meanwhile are resent
            // (`client_msg_id`) until the second host's workers serve.
            let pids = Array(EndToEnd.Supervision.children(of: first.processIdentifier).keys) + [first.processIdentifier]
            for pid in pids { kill(pid, SIGKILL) }
            first.waitUntilExit()
            let after = [
                FailoverSender(servers: [frontend], room: room, token: tokens[0], name: "alice-after", limit: 10, pace: 0.05),
                FailoverSender(servers: [frontend], room: room, token: tokens[1], name: "bob-after", limit: 10, pace: 0.05),
            ]
            for group in after.map({ $0.start() }) { group.wait() }
            for sender in after { #expect(sender.failures.isEmpty, "\(sender.failures)") }
            try await frontend.waitUntil(timeout: 20, "the second host holds both shards") {
                Self.count("holds the shard's lock; serving", in: Self.log(dirs[1])) == 2
            }
            try receive(20)
            stored = try await SeveralHosts.stored(frontend, token: tokens[0], room: room)
            #expect(stored.count == 60, "every message stored once")
            for index in sockets.indices { #expect(seen[index] == stored, "socket \(index) after the takeover") }
        }
    }
}
