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

        /// The harness itself: what a crashed run left (a namespace, a link
        /// and a directory named for a pid that is gone) is removed at the next start;
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
            // A PostgreSQL host's cluster the dead run left.
            try FileManager.default.createDirectory(atPath: "/tmp/\(stale)-postgres/data", withIntermediateDirectories: true)
            let net = try NetworkNamespaces(directory: try TestServer.temporaryDirectory())
            defer {
                net.tearDown()
                #expect((try? NetworkNamespaces.machineRoutes()) == routes, "the machine's routes are not as they were")
                #expect((try? NetworkNamespaces.ip("netns", "list"))?.contains(net.prefix) == false)
            }
            #expect(try NetworkNamespaces.ip("netns", "list").contains(stale) == false, "a dead run's namespace is left")
            #expect(!NetworkNamespaces.linkExists(stale), "a dead run's link is left")
            #expect(!FileManager.default.fileExists(atPath: "/tmp/\(stale)-postgres"), "a dead run's PostgreSQL directory is left")

            let host = try net.addHost("one", index: 1)
            let secret = NetworkNamespaces.secret()
            let process = try net.startChatd(on: host, environment: net.chatdEnvironment(on: host, run: "all", bus: host, secret: secret, [:]))
            let server = try await net.server(on: host, process: process, secret: secret)
            try net.cut(host)
            await #expect(throws: (any Error).self, "a cut host answered") { try await server.request("GET", "/healthz", timeout: 1) }
            try net.restore(host)
            #expect(try await server.request("GET", "/healthz", timeout: 10).status == 200)
        }
    }
}

/// A room of one sender and two listeners, each on its own WebSocket; the
/// sender sends `count` messages (content and `client_msg_id` `r<i>-<n>`).
/// The sender is on `server`, the listeners on `listenOn` in turn (default: `server`).
final class RoomLoad: @unchecked Sendable {
    let index: Int
    let id: String
    let tokens: [String]
    let count: Int
    let sender: SocketLog
    let listeners: [SocketLog]
    private let lock = NSLock()
    private var failures: [String] = []

    init(server: TestServer, index: Int, count: Int, listenOn: [TestServer] = []) async throws {
        (self.index, self.count) = (index, count)
        let room = try await server.room(of: 3, prefix: "room\(index)", name: "room \(index)")
        (id, tokens) = (room.id, room.tokens)
        sender = SocketLog(try server.webSocket("/ws/chat/\(room.id)/", token: room.tokens[0]))
        let hosts = listenOn.isEmpty ? [server] : listenOn
        listeners = try room.tokens.dropFirst().enumerated().map { listener, token in
            SocketLog(try hosts[listener % hosts.count].webSocket("/ws/chat/\(room.id)/", token: token))
        }
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
