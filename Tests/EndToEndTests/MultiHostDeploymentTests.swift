import ChatCore
import ChatTesting
import ChatWire
import Foundation
import GRDB
import Testing
import ZeroMQ

extension EndToEnd.MultiHost {
    /// Issue 15's deployment in one run: two frontend hosts (each its own
    /// broker, `peers`), one workers host linked to both, one PostgreSQL host
    /// holding every chatd host's data (`CHAT_DATABASE_URL` at its address),
    /// every bus link CURVE. Without PostgreSQL installed, or with
    /// `CHATD_MULTIHOST_SQLITE=1`, the data is in SQLite on the workers host
    /// instead (and there is no PostgreSQL host to cut off). The stages run
    /// one after another on it: a host with an unlisted key is refused; a
    /// client with an unlisted key, or a listed key without its secret half,
    /// cannot get a command in; the workers host is killed under load and
    /// restarted; the first frontend host is cut off and its clients resume
    /// on the second; the PostgreSQL host is cut off for a few seconds.
    /// After each, nothing is lost or stored twice.
    @Test func aDeploymentOfFourHostsLosesNothing() async throws {
        let routes = try NetworkNamespaces.machineRoutes()
        let net = try NetworkNamespaces(directory: try TestServer.temporaryDirectory())
        defer {
            net.tearDown()
            #expect((try? NetworkNamespaces.machineRoutes()) == routes, "the machine's routes are not as they were")
            #expect((try? NetworkNamespaces.ip("netns", "list"))?.contains(net.prefix) == false, "a namespace is left")
            if ProcessInfo.processInfo.environment["CHATD_KEEP_TEST_DATA"] == nil {
                #expect(!FileManager.default.fileExists(atPath: net.directory), "the hosts' directories are left")
            }
        }
        let deployment = try await Deployment(net: net)
        try await deployment.refusesAnUnlistedHost()
        try await deployment.startWorkers()
        try await deployment.strangersCannotSendACommand()
        try await deployment.workerHostKilledUnderLoad()
        try await deployment.frontendHostCutOff()
        if deployment.postgres != nil { try await deployment.databaseCutOff() }
        try deployment.everythingIsStored()
    }

    /// Whether `aDeploymentOfFourHostsLosesNothing` keeps its data on a
    /// PostgreSQL host (CI: it installs PostgreSQL) or in SQLite on the workers host.
    static var onPostgreSQL: Bool {
        PostgresServer.isInstalled && ProcessInfo.processInfo.environment["CHATD_MULTIHOST_SQLITE"] != "1"
    }
}

/// The hosts of `aDeploymentOfFourHostsLosesNothing` and its stages.
final class Deployment: @unchecked Sendable {
    let net: NetworkNamespaces
    let first: NetworkNamespaces.Host
    let workerHost: NetworkNamespaces.Host
    let second: NetworkNamespaces.Host
    /// The PostgreSQL host, its server and the hosts' database URL; nil: SQLite on the workers host.
    let postgresHost: NetworkNamespaces.Host?
    let postgres: PostgresServer?
    let database: String?
    let secret = NetworkNamespaces.secret()
    let keys: [String: String]
    /// The frontend hosts' servers: first, second.
    var servers: [TestServer] = []
    var workers: Process?
    /// Messages stored by the stages, each in one room: checked in the database at the end.
    var stored = 0

    init(net: NetworkNamespaces) async throws {
        self.net = net
        (first, workerHost, second) = (try net.addHost("frontend1", index: 1), try net.addHost("workers", index: 2), try net.addHost("frontend2", index: 3))
        if EndToEnd.MultiHost.onPostgreSQL {
            let host = try net.addHost("postgres", index: 4)
            let server = try net.startPostgres(on: host)
            (postgresHost, postgres, database) = (host, server, try server.createDatabase())
        } else {
            (postgresHost, postgres, database) = (nil, nil, nil)
        }
        keys = try net.giveKeys(to: [first, workerHost, second], brokers: [first, second])
        for (host, other) in [(first, second), (second, first)] {
            var settings = Steps.noRateLimits.merging(["CHAT_PEERS": NetworkNamespaces.busAddress(of: other)]) { $1 }
            if host.name == "frontend1" {
                // Commands wait in its broker while the workers host is away:
                // long enough that none fails while it starts again on two
                // busy cores (the load of the kill stage goes through here).
                settings["CHAT_REQUEST_TIMEOUT_MILLISECONDS"] = "60000"
            } else {
                // A command nobody takes (the unlisted host's stage) fails in 3 s, not 10.
                settings["CHAT_REQUEST_TIMEOUT_MILLISECONDS"] = "3000"
            }
            let process = try net.startChatd(on: host, environment: environment(host, run: "frontend", bus: host, settings))
            servers.append(try await net.server(on: host, process: process, secret: secret, healthy: false))
        }
    }

    /// A chatd host's environment: its data in the PostgreSQL host's database
    /// (or, without one, SQLite in its own directory: only workers hosts store).
    func environment(_ host: NetworkNamespaces.Host, run: String, bus: NetworkNamespaces.Host?, _ extra: [String: String]) -> [String: String] {
        let data = database.map { ["CHAT_DATABASE_URL": $0] } ?? [:]
        return net.chatdEnvironment(on: host, run: run, bus: bus, secret: secret, extra.merging(data) { $1 })
    }

    /// The one number `sql` selects, read from the database itself: the
    /// PostgreSQL host's, or the workers host's SQLite file.
    func count(_ sql: String) throws -> Int {
        if let postgres, let database {
            let name = String(database.split(separator: "/").last ?? "")
            return Int(try postgres.psql(sql, database: name).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }
        return try DatabaseQueue(path: workerHost.directory + "/data/chat.sqlite", configuration: .readOnly).read {
            try Int.fetchOne($0, sql: sql) ?? -1
        }
    }

    /// A workers host whose key is not in the peers file (it knows the
    /// second broker's public key, as anyone may, and even the database's
    /// address) connects and is refused: the broker logs its key and
    /// address, its workers never serve, a command gets 503.
    func refusesAnUnlistedHost() async throws {
        let stranger = try net.addHost("stranger", index: 9)
        let strangerLine = try #require(try net.giveKeys(to: [stranger], brokers: [])["stranger"])
        try net.writePeers("\(keys["frontend2"] ?? "")\n\(strangerLine)\n", on: stranger)
        let process = try net.startChatd(on: stranger, environment: environment(stranger, run: "workers", bus: second, [:]))
        let strangerKey = String(strangerLine.prefix(40))
        try await servers[1].waitUntil(timeout: 30, "the broker logged the refusal") {
            net.log(of: second).split(separator: "\n").contains {
                $0.contains("bus connection refused") && $0.contains(strangerKey) && $0.contains(stranger.address)
            }
        }
        let alice = try await servers[1].token(sub: "alice", name: "Alice")
        let refused = try await servers[1].request("POST", "/api/chat/rooms/", token: alice, json: ["name": "never", "participant_ids": [String]()])
        #expect(refused.status == 503, "a command reached a worker of the unlisted host: \(refused.status) \(refused.text)")
        #expect(try await servers[1].request("GET", "/healthz").status == 503)
        let children = try net.status(of: stranger)["children"] as? [[String: Any]] ?? []
        #expect(!children.isEmpty && children.allSatisfy { $0["ready"] as? Bool != true }, "the stranger's workers serve: \(children)")
        NetworkNamespaces.killTree(process)
    }

    /// The listed workers host, linked to both brokers; both frontend hosts then serve.
    func startWorkers() async throws {
        let peers = [first, second].map(NetworkNamespaces.busAddress(of:)).joined(separator: ",")
        workers = try net.startChatd(on: workerHost, environment: environment(workerHost, run: "workers", bus: nil, ["CHAT_PEERS": peers]))
        for server in servers {
            try await server.waitUntil(timeout: 60, "healthz 200 on \(server.host)") { (try? await server.request("GET", "/healthz").status) == 200 }
        }
        try await servers[0].waitUntil(timeout: 30, "every host in ctl status") {
            Set(((try? self.net.status(of: self.second)["hosts"]) as? [[String: Any]] ?? []).compactMap { $0["host"] as? String })
                == ["frontend1", "frontend2", "workers"]
        }
    }

    /// A bus client that is not a listed host pushes a well-formed command
    /// (alice creates a room "intruder", in the frontend's wire format) into
    /// the second broker's store queue: once with a key pair nobody listed,
    /// once with the workers host's listed public key but a secret key that
    /// is not its other half. The first is refused by the broker's allow-list
    /// (logged with its key and address); the second fails the CURVE
    /// handshake before the allow-list is asked. Neither room is stored,
    /// while a room created through the frontend right after is.
    ///
    /// The client is the test process, on the machine's side of the bridge
    /// (10.231.N.254): the same TCP path to the broker's port as from a
    /// host's namespace, so nothing but its address differs from a stranger host.
    func strangersCannotSendACommand() async throws {
        let alice = Identity(sub: "alice", email: "alice@example.com", name: "Alice", picture: nil)
        let body = Requests.RoomCreate(id: IDs.uuid7(), name: "intruder", roomType: "group", participantIDs: [])
        let command = Command(kind: .roomCreate, requestID: "intruder-1", origin: "intruder",
                              user: Array(try JSONEncoder().encode(alice)), body: Array(try JSONEncoder().encode(body)))
        let brokerKey = String(try #require(keys["frontend2"]).prefix(40))
        let unlisted = try Curve.keyPair()
        let second = self.second
        // Off the cooperative pool: the push waits for its handshake's outcome.
        let refused = try await Task.detached {
            try Self.push(command, to: second, brokerKey: brokerKey, publicKey: unlisted.publicKey, secretKey: unlisted.secretKey)
        }.value
        #expect(refused == MonitorEvent.handshakeFailedAuth, "the unlisted key's handshake: event \(refused.map(String.init) ?? "none")")
        try await servers[1].waitUntil(timeout: 10, "the broker logged the unlisted client") {
            net.log(of: second).split(separator: "\n").contains {
                $0.contains("bus connection refused") && $0.contains(unlisted.publicKey) && $0.contains(net.testAddress)
            }
        }
        let listedKey = String(try #require(keys["workers"]).prefix(40))
        let otherSecret = try Curve.keyPair().secretKey
        let forged = try await Task.detached {
            try Self.push(command, to: second, brokerKey: brokerKey, publicKey: listedKey, secretKey: otherSecret)
        }.value
        #expect(forged != nil && forged != MonitorEvent.handshakeSucceeded, "the forged key's handshake: event \(forged.map(String.init) ?? "none")")
        print("strangers' handshakes: unlisted key event \(refused.map(String.init) ?? "none"), listed key with another secret event \(forged.map(String.init) ?? "none")")
        // The store queue still carries commands: a room through the frontend is stored.
        let token = try await servers[1].token(sub: "alice", name: "Alice")
        let after = try await servers[1].request("POST", "/api/chat/rooms/", token: token, json: ["name": "after-intruder", "participant_ids": [String]()])
        #expect(after.status == 201, "\(after.status) \(after.text)")
        #expect(try count("SELECT count(*) FROM rooms WHERE name = 'after-intruder'") == 1)
        #expect(try count("SELECT count(*) FROM rooms WHERE name = 'intruder'") == 0, "a stranger's command was stored")
    }

    /// Connects a PUSH socket to the store queue of the broker on `host` as
    /// a CURVE client with `publicKey`/`secretKey`, queues `command` on it,
    /// and returns the first handshake event its monitor reports within 10 s
    /// (nil: none). The socket is closed with nothing delivered left behind (linger 0).
    static func push(_ command: Command, to host: NetworkNamespaces.Host, brokerKey: String, publicKey: String, secretKey: String) throws -> Int32? {
        let context = try Context()
        let endpoint = BusAddress.tcp(host: host.address, basePort: NetworkNamespaces.busPort).queueIn(Endpoints.queue(.store))
        let push = try Socket(context: context, type: .push)
        defer { push.close() }
        try push.setCurveClient(serverKey: brokerKey, publicKey: publicKey, secretKey: secretKey)
        let events = try push.monitor(name: "intruder-\(UInt64.random(in: 0...UInt64.max))", events: MonitorEvent.handshakeSucceeded | MonitorEvent.handshakeFailed)
        defer { events.close() }
        try push.connect(endpoint)
        _ = try push.send(command.encode(), dontWait: true)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let frames = try events.receive(dontWait: true), let event = MonitorEvent(frames: frames) { return event.event }
            usleep(20_000)
        }
        return nil
    }

    /// Two rooms, each a sender on the first frontend host and a listener
    /// on each; when a third is sent, the workers host's whole tree is
    /// SIGKILLed and started again: every message stored once in the order
    /// sent, every socket saw each once (or fetched what it missed).
    func workerHostKilledUnderLoad() async throws {
        let server = servers[0]
        let perRoom = EndToEnd.MultiHost.perRoom
        let rooms = try await (0..<EndToEnd.MultiHost.rooms).asyncMap { try await RoomLoad(server: server, index: $0, count: perRoom, listenOn: self.servers) }
        let sending = rooms.map { $0.startSending(pace: 0.004) }
        try rooms[0].listeners[0].read(until: perRoom / 3, timeout: 30)
        let workers = try #require(self.workers)
        let killed = NetworkNamespaces.killTree(workers)
        try await server.waitUntil(timeout: 10, "the workers host's processes gone") { killed.allSatisfy(NetworkNamespaces.hasEnded) }
        // Work was outstanding at the kill: not every message was stored yet.
        let storedAtKill = try count("SELECT count(*) FROM messages")
        #expect(storedAtKill < rooms.count * (perRoom + 1), "everything was stored before the kill: \(storedAtKill)")
        let peers = [first, second].map(NetworkNamespaces.busAddress(of:)).joined(separator: ",")
        self.workers = try net.startChatd(on: workerHost, environment: environment(workerHost, run: "workers", bus: nil, ["CHAT_PEERS": peers]))
        for group in sending { try #require(group.wait(timeout: .now() + 120) == .success, "the senders did not finish") }
        for room in rooms {
            try await server.waitUntil(timeout: 90, "room \(room.index) stored") {
                try await Steps.contents(server, token: room.tokens[0], room: room.id).count >= perRoom
            }
            try await room.check(server: server)
        }
        stored += rooms.count * (perRoom + 1)
        #expect(self.workers?.isRunning == true, "the workers host's new supervisor: \(net.log(of: workerHost).suffix(2000))")
    }

    /// Members of one room on both frontend hosts, a REST sender on each;
    /// the first host's bridge port goes down. Its members notice the
    /// silence, move to the second host and resume with `after`; its sender
    /// resends there with the same `client_msg_id`. Every message is stored
    /// once, every member has the history in order with no live duplicate,
    /// the second host's members never move, `ctl status` shows the cut host.
    func frontendHostCutOff() async throws {
        let (room, subs, tokens) = try await servers[0].room(of: 6, prefix: "across", name: "across")
        // Members 0-1 and the first sender on the first host; 2-3 and the second sender on the second.
        let members = try (0..<4).map { index in
            try FailoverMember(servers: index < 2 ? servers : servers.reversed(), room: room, token: tokens[index], name: subs[index])
        }
        for member in members { member.start() }
        let senders = (0..<2).map { index in
            FailoverSender(servers: index == 0 ? servers : servers.reversed(), room: room, token: tokens[4 + index], name: "h\(index + 1)", limit: 90, pace: 0.03)
        }
        let sending = senders.map { $0.start() }
        try await servers[1].waitUntil(timeout: 30, "a third sent from each host") { senders.allSatisfy { $0.sent >= 30 } }
        try net.cut(first)
        for group in sending { try #require(group.wait(timeout: .now() + 120) == .success, "the senders did not finish") }

        for sender in senders { #expect(sender.failures.isEmpty, "\(sender.name): \(sender.failures.prefix(3))") }
        let history = try await Steps.contents(servers[1], token: tokens[0], room: room)
        #expect(history.count == 180 && Set(history).count == 180, "every message stored once: \(history.count), \(Set(history).count) distinct")
        for sender in senders {
            #expect(history.filter { $0.hasPrefix(sender.name + "-") } == sender.confirmed, "\(sender.name)'s messages stored in the order sent")
        }
        try await servers[1].waitUntil(timeout: 30, "every member has every message") { members.allSatisfy { $0.contents.count >= history.count } }
        for member in members { member.stop() }
        for (index, member) in members.enumerated() {
            #expect(member.contents == history, "\(member.name): \(member.summary)")
            #expect(member.liveDuplicates.isEmpty, "\(member.name): \(member.summary)")
            #expect(member.movedTo == (index < 2 ? [second.address] : []), "\(member.name): \(member.summary)")
        }
        try await servers[1].waitUntil(timeout: 30, "frontend1 unreachable in ctl status") {
            let hosts = (try? self.net.status(of: self.workerHost)["hosts"]) as? [[String: Any]] ?? []
            return hosts.contains { $0["host"] as? String == "frontend1" && $0["reachable"] as? Bool == false }
                && hosts.contains { $0["host"] as? String == "frontend2" && $0["reachable"] as? Bool == true }
        }
        stored += history.count
        try net.restore(first)
    }

    /// The PostgreSQL host's link is down for a few seconds while a member
    /// sends on the second frontend host: commands fail (503) or wait, and
    /// the sender resends each with its `client_msg_id`. Once it is back,
    /// the workers serve again with no restart, and every message is stored
    /// once, in order.
    func databaseCutOff() async throws {
        let server = servers[1]
        let (room, _, tokens) = try await server.room(of: 2, prefix: "dbcut", name: "dbcut")
        let supervisor = try #require(workers).processIdentifier
        let (postgres, postgresHost) = (try #require(self.postgres), try #require(self.postgresHost))
        let sender = FailoverSender(servers: [server], room: room, token: tokens[0], name: "db", limit: 60, pace: 0.05)
        let sending = sender.start()
        try await server.waitUntil(timeout: 30, "a third sent") { sender.sent >= 20 }
        // The outage's length is what is under test, not a wait for a condition:
        // a few seconds, under the supervisor's 10 s hung-worker limit.
        let outage = 5.0
        let cutAt = Date()
        try net.cut(postgresHost)
        // The cut is real: the database cannot be reached from the test's side either.
        #expect(throws: (any Error).self, "PostgreSQL answered while cut off") { try postgres.psql("SELECT 1", connectTimeout: 1) }
        try await Task.sleep(for: .seconds(max(0, outage - Date().timeIntervalSince(cutAt))))
        try net.restore(postgresHost)
        let restoredAt = Date()
        try #require(sending.wait(timeout: .now() + 120) == .success, "the sender did not finish")
        #expect(sender.failures.isEmpty, "\(sender.failures.prefix(3))")
        // A message waited for the database: its first try began during the
        // outage, at least 0.5 s before the restore (no message takes that long
        // unhindered), and it was confirmed only after the restore. (Not "began
        // by the cut + 0.5 s": under load the answer to the message in flight
        // at the cut, already written, can take longer than that to come back,
        // and the sender starts the next one only then; a CI run failed so.)
        let waited = sender.timings.filter {
            $0.began >= cutAt && $0.began < restoredAt.addingTimeInterval(-0.5) && $0.confirmed > restoredAt
        }
        #expect(!waited.isEmpty, "no message waited for the database; slowest \(sender.slowest) s, refusals \(sender.refusals)")
        print("database cut off for \(outage) s: the slowest message took \(sender.slowest) s; refused tries by status (0: no answer in 3 s): \(sender.refusals)")
        let history = try await Steps.contents(server, token: tokens[0], room: room)
        #expect(history == sender.confirmed && history.count == 60, "stored: \(RoomLoad.firstDifference(history, sender.confirmed))")
        #expect(workers?.processIdentifier == supervisor && workers?.isRunning == true, "the workers host's supervisor was restarted")
        stored += history.count
    }

    /// Every message of the stages is in the database (the PostgreSQL
    /// host's, or the workers host's SQLite file), and with PostgreSQL no
    /// chatd host has a SQLite file.
    func everythingIsStored() throws {
        let count = try count("SELECT count(*) FROM messages")
        #expect(count == stored, "messages in the database: \(count), stored by the stages: \(stored)")
        guard postgres != nil else { return }
        for host in [first, workerHost, second] {
            #expect(!FileManager.default.fileExists(atPath: host.directory + "/data/chat.sqlite"), "\(host.name) has a SQLite database")
        }
    }
}
