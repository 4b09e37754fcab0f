import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 15: chatd across hosts. Each host is a network namespace with its
    /// own address on a bridge, its own directory as its disk and its own
    /// process tree (`NetworkNamespaces`, docs/multihost-test.md); the test
    /// is a client on the bridge. Namespaces need root: CI runs as root.
    @Suite(.enabled(if: NetworkNamespaces.unavailableReason == nil, "needs root and iproute2's ip: the hosts are network namespaces"))
    struct MultiHost {
        /// Messages sent per room under load; the worker host dies a third of the way in.
        static let perRoom = 300
        static let rooms = 2

        /// The harness itself: what a crashed run left (a namespace and a
        /// link named for a pid that is gone) is removed at the next start;
        /// a cut host cannot be reached and a restored one can; teardown
        /// leaves the machine's routes as they were.
        @Test func theHarnessCleansUpCutsAndRestores() async throws {
            let routes = try NetworkNamespaces.machineRoutes()
            let gone = Process()
            gone.executableURL = URL(fileURLWithPath: "/bin/true")
            try gone.run()
            gone.waitUntilExit()
            let stale = "cns\(gone.processIdentifier)"
            try NetworkNamespaces.ip("netns", "add", stale + "-switch")
            try NetworkNamespaces.ip("link", "add", stale, "type", "veth", "peer", "name", "uplink", "netns", stale + "-switch")
            let net = try NetworkNamespaces(directory: try TestServer.temporaryDirectory())
            defer {
                net.tearDown()
                #expect((try? NetworkNamespaces.machineRoutes()) == routes, "the machine's routes are not as they were")
                #expect((try? NetworkNamespaces.ip("netns", "list"))?.contains(net.prefix) == false)
            }
            #expect(try NetworkNamespaces.ip("netns", "list").contains(stale) == false, "a dead run's namespace is left")
            #expect(!NetworkNamespaces.linkExists(stale), "a dead run's link is left")

            let host = try net.addHost("one", index: 1)
            let secret = NetworkNamespaces.secret()
            let process = try net.startChatd(on: host, environment: net.chatdEnvironment(on: host, run: "all", bus: host, secret: secret, [:]))
            let server = try await net.server(on: host, process: process, secret: secret)
            try net.cut(host)
            await #expect(throws: (any Error).self, "a cut host answered") { try await server.request("GET", "/healthz", timeout: 1) }
            try net.restore(host)
            #expect(try await server.request("GET", "/healthz", timeout: 10).status == 200)
        }

        /// A frontend host (`run: frontend`, the broker) and a worker host
        /// (`run: workers`, the SQLite database on its own disk) on a TCP bus
        /// between their addresses. Clients talk in rooms through the
        /// frontend host; the worker host's whole process tree is SIGKILLed
        /// while senders are mid-burst, and started again: every message is
        /// stored exactly once in the order sent, and every socket saw each
        /// one exactly once (or fetched what it missed with `after`).
        @Test func theWorkerHostKilledUnderLoadLosesNothing() async throws {
            let routes = try NetworkNamespaces.machineRoutes()
            let net = try NetworkNamespaces(directory: try TestServer.temporaryDirectory())
            defer {
                net.tearDown()
                #expect((try? NetworkNamespaces.machineRoutes()) == routes, "the machine's routes are not as they were")
            }
            let frontendHost = try net.addHost("frontend1", index: 1)
            let workerHost = try net.addHost("workers", index: 2)
            // Every host its key pair, every broker only the deployment's keys (CURVE).
            try net.giveKeys(to: [frontendHost, workerHost], brokers: [frontendHost])
            let secret = NetworkNamespaces.secret()
            let workersEnvironment = net.chatdEnvironment(on: workerHost, run: "workers", bus: frontendHost, secret: secret, [:])
            let workers = try net.startChatd(on: workerHost, environment: workersEnvironment)
            // Commands wait in the broker while the worker host is away: the
            // deadline is long enough that none fails while it starts again
            // on two busy cores (a failure would be a client's to resend).
            let frontendSettings = Steps.noRateLimits.merging(["CHAT_REQUEST_TIMEOUT_MILLISECONDS": "60000"]) { $1 }
            let frontend = try net.startChatd(
                on: frontendHost, environment: net.chatdEnvironment(on: frontendHost, run: "frontend", bus: frontendHost, secret: secret, frontendSettings)
            )
            let server = try await net.server(on: frontendHost, process: frontend, secret: secret)
            // Each host used its own disk: the database is on the worker host only.
            #expect(FileManager.default.fileExists(atPath: workerHost.directory + "/data/chat.sqlite"))
            #expect(!FileManager.default.fileExists(atPath: frontendHost.directory + "/data/chat.sqlite"))

            let rooms = try await (0..<Self.rooms).asyncMap { try await RoomLoad(server: server, index: $0, count: Self.perRoom) }
            let sending = rooms.map { $0.startSending(pace: 0.004) }
            // The first listener reads as the load goes; at a third, the worker host dies.
            try rooms[0].listeners[0].read(until: Self.perRoom / 3, timeout: 30)
            let killed = NetworkNamespaces.killTree(workers)
            try await server.waitUntil(timeout: 10, "the worker host's processes gone") { killed.allSatisfy(NetworkNamespaces.hasEnded) }
            let restarted = try net.startChatd(on: workerHost, environment: workersEnvironment)
            for group in sending { group.wait() }

            for room in rooms {
                try await server.waitUntil(timeout: 90, "room \(room.index) stored") {
                    try await Steps.contents(server, token: room.tokens[0], room: room.id).count >= Self.perRoom
                }
                try await room.check(server: server)
            }
            #expect(restarted.isRunning, "the worker host's new supervisor: \(net.log(of: workerHost).suffix(2000))")
        }
    }
}

extension EndToEnd.MultiHost {
    /// Two frontend hosts, each its own broker, and a worker host linked to
    /// both (`peers`). Members on both hosts read the same room while a
    /// sender on each posts; the first frontend host is cut off (its link
    /// down): its members notice the silence, move to the other host and
    /// resume with `after`, its sender resends there with the same
    /// `client_msg_id`. Nothing is lost or stored twice, the other host's
    /// members never notice, and `ctl status` on any host shows every host.
    @Test
    func aFrontendHostCutOffLosesOnlyItsClients() async throws {
        let routes = try NetworkNamespaces.machineRoutes()
        let net = try NetworkNamespaces(directory: try TestServer.temporaryDirectory())
        defer {
            net.tearDown()
            #expect((try? NetworkNamespaces.machineRoutes()) == routes, "the machine's routes are not as they were")
        }
        let (first, workerHost, second) = (try net.addHost("frontend1", index: 1), try net.addHost("workers", index: 2), try net.addHost("frontend2", index: 3))
        try net.giveKeys(to: [first, workerHost, second], brokers: [first, second])
        let secret = NetworkNamespaces.secret()
        let peers = [first, second].map(NetworkNamespaces.busAddress(of:))
        _ = try net.startChatd(on: workerHost, environment: net.chatdEnvironment(on: workerHost, run: "workers", bus: nil, secret: secret, [
            "CHAT_PEERS": peers.joined(separator: ","),
        ]))
        var servers: [TestServer] = []
        for (host, other) in [(first, second), (second, first)] {
            let settings = Steps.noRateLimits.merging(["CHAT_PEERS": NetworkNamespaces.busAddress(of: other)]) { $1 }
            let process = try net.startChatd(on: host, environment: net.chatdEnvironment(on: host, run: "frontend", bus: host, secret: secret, settings))
            servers.append(try await net.server(on: host, process: process, secret: secret))
        }
        try await servers[0].waitUntil(timeout: 30, "every host in ctl status") {
            Set(((try? net.status(of: second)["hosts"]) as? [[String: Any]] ?? []).compactMap { $0["host"] as? String }) == ["frontend1", "frontend2", "workers"]
        }

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
        for group in sending { group.wait() }

        for sender in senders { #expect(sender.failures.isEmpty, "\(sender.name): \(sender.failures.prefix(3))") }
        let stored = try await Steps.contents(servers[1], token: tokens[0], room: room)
        #expect(stored.count == 180 && Set(stored).count == 180, "every message stored once: \(stored.count), \(Set(stored).count) distinct")
        for sender in senders {
            #expect(stored.filter { $0.hasPrefix(sender.name + "-") } == sender.confirmed, "\(sender.name)'s messages stored in the order sent")
        }
        try await servers[1].waitUntil(timeout: 30, "every member has every message") { members.allSatisfy { $0.contents.count >= stored.count } }
        for member in members { member.stop() }
        for (index, member) in members.enumerated() {
            #expect(member.contents == stored, "\(member.name): \(member.summary)")
            #expect(member.liveDuplicates.isEmpty, "\(member.name): \(member.summary)")
            #expect(member.movedTo == (index < 2 ? [second.address] : []), "\(member.name): \(member.summary)")
        }
        // The cut host is shown, as not heard from, on the others.
        try await servers[1].waitUntil(timeout: 30, "frontend1 unreachable in ctl status") {
            let hosts = (try? net.status(of: workerHost)["hosts"]) as? [[String: Any]] ?? []
            return hosts.contains { $0["host"] as? String == "frontend1" && $0["reachable"] as? Bool == false }
                && hosts.contains { $0["host"] as? String == "frontend2" && $0["reachable"] as? Bool == true }
        }
        try net.restore(first)
    }
}

extension EndToEnd.MultiHost {
    /// Every host has its key pair and the deployment's peers file. A host
    /// whose key is not in it (it knows the broker's public key, as anyone
    /// may) connects and is refused: the broker logs its key and address,
    /// its workers never serve, no command reaches them. A listed worker
    /// host then serves the same frontend host.
    @Test func aHostWithAnUnlistedKeyCannotSendACommand() async throws {
        let routes = try NetworkNamespaces.machineRoutes()
        let net = try NetworkNamespaces(directory: try TestServer.temporaryDirectory())
        defer {
            net.tearDown()
            #expect((try? NetworkNamespaces.machineRoutes()) == routes, "the machine's routes are not as they were")
        }
        let (frontendHost, workerHost, stranger) = (try net.addHost("frontend1", index: 1), try net.addHost("workers", index: 2), try net.addHost("stranger", index: 9))
        let lines = try net.giveKeys(to: [frontendHost, workerHost], brokers: [frontendHost])
        let strangerLine = try #require(try net.giveKeys(to: [stranger], brokers: [])["stranger"])
        try net.writePeers("\(lines["frontend1"] ?? "")\n\(strangerLine)\n", on: stranger)
        let secret = NetworkNamespaces.secret()
        // A command nobody takes fails in 2 s, not 10.
        let settings = ["CHAT_REQUEST_TIMEOUT_MILLISECONDS": "2000"]
        let frontend = try net.startChatd(on: frontendHost, environment: net.chatdEnvironment(on: frontendHost, run: "frontend", bus: frontendHost, secret: secret, settings))
        let server = try await net.server(on: frontendHost, process: frontend, secret: secret, healthy: false)
        _ = try net.startChatd(on: stranger, environment: net.chatdEnvironment(on: stranger, run: "workers", bus: frontendHost, secret: secret, [:]))

        let strangerKey = String(strangerLine.prefix(40))
        try await server.waitUntil(timeout: 30, "the broker logged the refusal") {
            net.log(of: frontendHost).split(separator: "\n").contains {
                $0.contains("bus connection refused") && $0.contains(strangerKey) && $0.contains(stranger.address)
            }
        }
        let alice = try await server.token(sub: "alice", name: "Alice")
        let refused = try await server.request("POST", "/api/chat/rooms/", token: alice, json: ["name": "never", "participant_ids": [String]()])
        #expect(refused.status == 503, "a command reached a worker of the unlisted host: \(refused.status) \(refused.text)")
        #expect(try await server.request("GET", "/healthz").status == 503)
        let children = try net.status(of: stranger)["children"] as? [[String: Any]] ?? []
        #expect(!children.isEmpty && children.allSatisfy { $0["ready"] as? Bool != true }, "the stranger's workers serve: \(children)")

        _ = try net.startChatd(on: workerHost, environment: net.chatdEnvironment(on: workerHost, run: "workers", bus: frontendHost, secret: secret, [:]))
        try await server.waitUntil(timeout: 60, "healthz 200 with the listed worker host") { (try? await server.request("GET", "/healthz").status) == 200 }
        let created = try await server.request("POST", "/api/chat/rooms/", token: alice, json: ["name": "listed", "participant_ids": [String]()])
        #expect(created.status == 201, "\(created.text)")
    }
}

/// A room of one sender and two listeners, each on its own WebSocket; the
/// sender sends `count` messages (content and `client_msg_id` `r<i>-<n>`).
final class RoomLoad: @unchecked Sendable {
    let index: Int
    let id: String
    let tokens: [String]
    let count: Int
    let sender: SocketLog
    let listeners: [SocketLog]
    private let lock = NSLock()
    private var failures: [String] = []

    init(server: TestServer, index: Int, count: Int) async throws {
        (self.index, self.count) = (index, count)
        let room = try await server.room(of: 3, prefix: "room\(index)", name: "room \(index)")
        (id, tokens) = (room.id, room.tokens)
        sender = SocketLog(try server.webSocket("/ws/chat/\(room.id)/", token: room.tokens[0]))
        listeners = try room.tokens.dropFirst().map { SocketLog(try server.webSocket("/ws/chat/\(room.id)/", token: $0)) }
    }

    /// What the server should hold, in order: every message, then the sentinel.
    var expected: [String] { (0..<count).map { "r\(index)-\($0)" } + ["r\(index)-end"] }

    /// Sends on a thread of its own, `pace` seconds apart; the group is left when all are sent.
    func startSending(pace: Double) -> DispatchGroup {
        let group = DispatchGroup()
        group.enter()
        Thread {
            for n in 0..<self.count {
                do {
                    try self.sender.socket.send(json: ["type": "message", "content": "r\(self.index)-\(n)", "client_msg_id": "r\(self.index)-\(n)"])
                } catch {
                    self.lock.withLock { self.failures.append("\(n): \(error)") }
                }
                usleep(UInt32(pace * 1_000_000))
            }
            group.leave()
        }.start()
        return group
    }

    /// Once everything is stored: a sentinel, published after any resend
    /// of an earlier message, bounds each socket's wait for a duplicate.
    /// Then every socket's messages, with what it missed fetched by `after`,
    /// are the history, and the history is what was sent, in order.
    func check(server: TestServer) async throws {
        #expect(lock.withLock { failures }.isEmpty, "room \(index) sends failed: \(lock.withLock { failures.prefix(3) })")
        let stored = try await Steps.contents(server, token: tokens[0], room: id)
        try sender.socket.send(json: ["type": "message", "content": "r\(index)-end", "client_msg_id": "r\(index)-end"])
        try await server.waitUntil(timeout: 30, "room \(index)'s sentinel stored") {
            try await Steps.contents(server, token: tokens[0], room: id).last == "r\(index)-end"
        }
        #expect(stored == Array(expected.dropLast()), "room \(index) stored out of order or not once: \(Self.firstDifference(stored, expected))")
        for (name, socket) in [("sender", sender)] + listeners.enumerated().map({ ("listener \($0.offset)", $0.element) }) {
            try socket.read(untilContent: "r\(index)-end", timeout: 30)
            #expect(socket.duplicates.isEmpty, "room \(index) \(name) got twice: \(socket.duplicates.prefix(3))")
            #expect(socket.errors.isEmpty, "room \(index) \(name) got errors: \(socket.errors.prefix(3))")
            #expect(!socket.socket.isClosed, "room \(index) \(name)'s socket closed")
            let seen = socket.contents
            let gap = Self.commonPrefix(seen, expected)
            var whole = Array(seen[..<gap])
            if whole.count < expected.count {
                let after = gap > 0 ? socket.ids[gap - 1] : nil
                whole += try await Self.messages(server, token: tokens[0], room: id, after: after)
            }
            #expect(whole == expected, "room \(index) \(name) saw and fetched: \(Self.firstDifference(whole, expected))")
        }
    }

    /// Contents of a room's messages after `after` (all of them when nil), oldest first.
    static func messages(_ server: TestServer, token: String, room: String, after: String?) async throws -> [String] {
        var contents: [String] = []
        var page = 1
        while true {
            let cursor = after.map { "&after=\($0)" } ?? ""
            let response = try await server.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=100&page=\(page)\(cursor)", token: token)
            #expect(response.status == 200)
            contents += (response.object["results"] as? [[String: Any]] ?? []).compactMap { $0["content"] as? String }
            if response.object["next"] is NSNull || response.object["next"] == nil { break }
            page += 1
        }
        return contents.reversed()
    }

    /// How many leading elements two lists share.
    static func commonPrefix(_ a: [String], _ b: [String]) -> Int {
        (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
    }

    /// Where two lists part: the index and what each has there.
    static func firstDifference(_ got: [String], _ wanted: [String]) -> String {
        let at = commonPrefix(got, wanted)
        return "at \(at) of \(got.count) (want \(wanted.count)): \(got.dropFirst(at).prefix(3)) for \(wanted.dropFirst(at).prefix(3))"
    }
}

/// One client socket and the `message` events it received, in order.
final class SocketLog: @unchecked Sendable {
    let socket: WebSocketClient
    private(set) var ids: [String] = []
    private(set) var contents: [String] = []
    private(set) var duplicates: [String] = []
    private(set) var errors: [String] = []
    private var known = Set<String>()

    init(_ socket: WebSocketClient) { self.socket = socket }

    /// Reads until `count` messages have come (or `timeout`: an error).
    func read(until count: Int, timeout: Double) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while contents.count < count {
            guard deadline.timeIntervalSinceNow > 0, let event = try socket.receiveJSON(timeout: deadline.timeIntervalSinceNow) else {
                throw TestServerError(description: "\(contents.count) of \(count) messages in \(timeout) s")
            }
            take(event)
        }
    }

    /// Reads until a message with `content` has come (or `timeout`: an error).
    func read(untilContent content: String, timeout: Double) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while contents.last != content {
            guard deadline.timeIntervalSinceNow > 0, let event = try socket.receiveJSON(timeout: deadline.timeIntervalSinceNow) else {
                throw TestServerError(description: "no \(content) in \(timeout) s after \(contents.count) messages")
            }
            take(event)
        }
    }

    private func take(_ event: [String: Any]) {
        if event["type"] as? String == "error" { errors.append("\(event)") }
        guard event["type"] as? String == "message", let message = event["message"] as? [String: Any],
            let id = message["id"] as? String, let content = message["content"] as? String else { return }
        guard known.insert(id).inserted else {
            duplicates.append(content)
            return
        }
        ids.append(id)
        contents.append(content)
    }
}

extension Sequence {
    /// `map` with an async transform, one element after another.
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
