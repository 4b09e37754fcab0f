import ChatTesting
import Foundation
import Testing

extension EndToEnd.SeveralHosts {
    /// Review finding (issue 15): a workers host's link to one broker drops
    /// while that frontend host stays up (a network blip between the two).
    /// The room events published meanwhile never reach that broker, and its
    /// clients were told nothing: a silent gap. The workers' heartbeats come
    /// back with another link generation, and that host's frontend closes
    /// the rooms' sockets with 1012; their clients resume with `after`.
    ///
    /// The drop is real: the workers host reaches the second broker through
    /// a relay in this process (`TCPRelay`), which the test cuts; that
    /// host's own frontend reaches its broker directly and stays connected.
    @Test func aLinkThatDropsWhileItsFrontendHostLivesClosesItsRoomsSocketsWith1012() async throws {
        let base = try TestServer.freePorts(36)
        let (busA, busB, relayed) = ("tcp://127.0.0.1:\(base)", "tcp://127.0.0.1:\(base + 12)", "tcp://127.0.0.1:\(base + 24)")
        let relay = try TCPRelay(listen: base + 24, target: base + 12, count: 12)
        defer { relay.stop() }
        let secret = TestServer.randomSecret()
        let workersDir = try TestServer.temporaryDirectory()
        let workers = try Self.startWorkersHost(dir: workersDir, peers: "\(busA),\(relayed)", secret: secret)
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
                "CHAT_RUN": "frontend", "CHAT_BUS": bus, "CHAT_PEERS": "\(busA),\(busB)", "CHAT_HOST": name, "CHAT_RATE_LIMITS": "off",
            ], jwtSecret: secret)
        }
        let hostA = try await frontendHost("fe-a", bus: busA)
        defer { hostA.stop() }
        let hostB = try await frontendHost("fe-b", bus: busB)
        defer { hostB.stop() }
        /// The workers host's log lines about the relayed broker saying `what`, by store worker.
        func relayedLines(_ what: String, _ worker: String) -> Int {
            let log = String(decoding: FileManager.default.contents(atPath: workersDir + "/chatd.log") ?? Data(), as: UTF8.self)
            return log.split(separator: "\n").filter { $0.contains(what) && $0.contains(relayed) && $0.contains(worker) }.count
        }

        let aliceToken = try await Steps.users(hostA, "alice")[0]
        let bobToken = try await Steps.users(hostB, "bob")[0]
        let room = try await Steps.room(hostA, token: aliceToken, members: ["bob"], name: "gap")
        let (alice, bob) = (Client("alice", hostA, aliceToken), Client("bob", hostB, bobToken))
        for client in [alice, bob] { try client.open([room]) }
        try alice.sockets[room]?.send(json: ["type": "message", "content": "before"])
        for client in [alice, bob] { try client.receive(1, in: room) }
        #expect(bob.seen[room] == alice.seen[room])

        // The link to B drops; B's frontend host lives on.
        let served = (relayedLines("broker echoed", "store.0"), relayedLines("broker echoed", "store.1"))
        relay.cut()
        try await hostA.waitUntil(timeout: 20, "both store workers lost broker B") {
            relayedLines("lost the broker", "store.0") > 0 && relayedLines("lost the broker", "store.1") > 0
        }
        try alice.sockets[room]?.send(json: ["type": "message", "content": "during"])
        try alice.receive(1, in: room)

        // Back: once the workers serve B again, its sockets of the room were
        // told they missed something (without the fix they would go on with
        // the next message live, "during" never seen).
        relay.restore()
        try await hostA.waitUntil(timeout: 20, "both store workers serve broker B again") {
            relayedLines("broker echoed", "store.0") > served.0 && relayedLines("broker echoed", "store.1") > served.1
        }
        try alice.sockets[room]?.send(json: ["type": "message", "content": "after"])
        try alice.receive(1, in: room)
        let old = try #require(bob.sockets[room])
        var live: [String] = []
        while let frame = try old.receive(timeout: 15), frame.opcode != .close {
            if let event = try? JSONSerialization.jsonObject(with: Data(frame.payload)) as? [String: Any],
                let id = (event["message"] as? [String: Any])?["id"] as? String { live.append(id) }
        }
        #expect(old.closeCode == 1012, "bob's socket on B got \(live) live and was not told of the gap")
        let told = hostB.log.contains("a worker's link to this broker was down")
        #expect(told, "host B's frontend logged the gap")

        // Bob resumes on B with `after`: nothing lost, nothing twice.
        bob.seen[room, default: []] += live
        let last = try #require(bob.seen[room]?.last)
        let page = try await hostB.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=100&after=\(last)", token: bobToken)
        #expect(page.status == 200)
        bob.seen[room, default: []] += (page.object["results"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }.reversed()
        try bob.open([room])
        try alice.sockets[room]?.send(json: ["type": "message", "content": "resumed"])
        for client in [alice, bob] { try client.receive(1, in: room) }
        let stored = try await Self.stored(hostB, token: bobToken, room: room)
        #expect(stored.count == 4)
        #expect(bob.seen[room] == stored && alice.seen[room] == stored)
        #expect(bob.liveDuplicates.isEmpty)
    }
}

extension EndToEnd.SeveralHosts {
    /// Two frontend hosts configured with one `host:` hid each other in
    /// `ctl status` and share session names: each supervisor logs an error
    /// when it hears its own name from another (the status document's `instance`).
    @Test func twoHostsWithOneNameAreLoggedAsAnError() async throws {
        let base = try TestServer.freePorts(24)
        let (busA, busB) = ("tcp://127.0.0.1:\(base)", "tcp://127.0.0.1:\(base + 12)")
        let secret = TestServer.randomSecret()
        func frontendHost(bus: String) async throws -> TestServer {
            // No workers host: `/healthz` is not waited for.
            try await TestServer.start(storeWorkers: 2, environment: [
                "CHAT_RUN": "frontend", "CHAT_BUS": bus, "CHAT_PEERS": "\(busA),\(busB)", "CHAT_HOST": "same",
            ], jwtSecret: secret, healthy: false)
        }
        let hostA = try await frontendHost(bus: busA)
        defer { hostA.stop() }
        let hostB = try await frontendHost(bus: busB)
        defer { hostB.stop() }
        for host in [hostA, hostB] {
            try await host.waitUntil(timeout: 20, "the clash logged") { host.log.contains("another host publishes its status under this host's name") }
        }
        // Once, not every second.
        try await Task.sleep(for: .seconds(2))
        for host in [hostA, hostB] { #expect(host.log.components(separatedBy: "under this host's name").count == 2) }
    }
}

extension EndToEnd.SeveralHosts {
    /// A workers host refused by one of two brokers (its key missing from
    /// that host's peers file) used to exit, interrupting its link to the
    /// broker that accepts it, again at every backoff restart. Now only the
    /// refused link is lost (tried again every 10 s), and the supervisor's
    /// status socket there is logged and remade the same way.
    @Test func aWorkerRefusedByOneBrokerKeepsServingTheOther() async throws {
        let base = try TestServer.freePorts(24)
        let (busA, busB) = ("tcp://127.0.0.1:\(base)", "tcp://127.0.0.1:\(base + 12)")
        let peers = "\(busA),\(busB)"
        let (secret, keys) = (TestServer.randomSecret(), try TestServer.temporaryDirectory())
        let lines = [
            try EndToEnd.AuthenticatedBus.keygen(keys + "/fe-a.key", host: "fe-a", environment: ["CHAT_RUN": "frontend", "CHAT_BUS": busA]),
            try EndToEnd.AuthenticatedBus.keygen(keys + "/fe-b.key", host: "fe-b", environment: ["CHAT_RUN": "frontend", "CHAT_BUS": busB]),
            try EndToEnd.AuthenticatedBus.keygen(keys + "/workers.key", host: "workers"),
        ]
        try (lines.joined(separator: "\n") + "\n").write(toFile: keys + "/peers", atomically: true, encoding: .utf8)
        // Host B does not list the workers host.
        try (lines[0...1].joined(separator: "\n") + "\n").write(toFile: keys + "/peers-b", atomically: true, encoding: .utf8)
        let workersDir = try TestServer.temporaryDirectory()
        let workers = try Self.startWorkersHost(
            dir: workersDir, peers: peers, secret: secret,
            environment: ["CHAT_BUS_KEY": keys + "/workers.key", "CHAT_BUS_PEER_KEYS": keys + "/peers", "CHAT_STANDBYS": "false"])
        defer {
            if workers.isRunning { kill(workers.processIdentifier, SIGTERM) }
            workers.waitUntilExit()
            if ProcessInfo.processInfo.environment["CHATD_KEEP_TEST_DATA"] == nil {
                PostgresServer.dropDatabase(forDataDir: workersDir)
                for dir in [workersDir, keys] { try? FileManager.default.removeItem(atPath: dir) }
            }
        }
        func frontendHost(_ name: String, bus: String, peerKeys: String, healthy: Bool) async throws -> TestServer {
            try await TestServer.start(storeWorkers: 2, environment: [
                "CHAT_RUN": "frontend", "CHAT_BUS": bus, "CHAT_PEERS": peers, "CHAT_HOST": name,
                "CHAT_BUS_KEY": keys + "/\(name).key", "CHAT_BUS_PEER_KEYS": keys + "/" + peerKeys,
            ], jwtSecret: secret, healthy: healthy)
        }
        let hostB = try await frontendHost("fe-b", bus: busB, peerKeys: "peers-b", healthy: false)
        defer { hostB.stop() }
        let hostA = try await frontendHost("fe-a", bus: busA, peerKeys: "peers", healthy: true)
        defer { hostA.stop() }
        func workersLog() -> [Substring] {
            String(decoding: FileManager.default.contents(atPath: workersDir + "/chatd.log") ?? Data(), as: UTF8.self).split(separator: "\n")
        }
        try await hostA.waitUntil(timeout: 30, "the refused link and status socket tried again") {
            let log = workersLog()
            return log.contains { $0.contains("trying the broker that refused this host again") }
                && log.contains { $0.contains("bus handshake with the broker failed") && $0.contains("host status") }
        }
        // Host A is served throughout: a message goes through its workers' links.
        let alice = try await Steps.users(hostA, "alice")[0]
        let room = try await Steps.room(hostA, token: alice, members: [], name: "refused-elsewhere")
        let socket = try hostA.webSocket("/ws/chat/\(room)/", token: alice)
        try socket.send(json: ["type": "message", "content": "still served"])
        #expect(try socket.receive(type: "message", timeout: 15) != nil)
        let exits = workersLog().filter { $0.contains("child exited") }
        #expect(exits.isEmpty, "a refused worker exited: \(exits)")
    }
}
