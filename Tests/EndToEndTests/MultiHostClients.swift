import ChatTesting
import Foundation

/// Clients of several frontend hosts, as a browser or app would be: each
/// talks to its own host and moves to the next when that one goes silent.

/// One request from a plain thread (the clients below run on threads, with
/// blocking sockets): nil when no answer came within `timeout`.
func blockingRequest(
    _ server: TestServer, _ method: String, _ path: String, token: String, json: [String: Any]? = nil, timeout: Double
) -> TestServer.HTTPResult? {
    let answer = Answer()
    let done = DispatchSemaphore(value: 0)
    // `json` is a property list made by the caller and read once here.
    nonisolated(unsafe) let body = json
    Task {
        answer.set(try? await server.request(method, path, token: token, json: body, timeout: timeout))
        done.signal()
    }
    done.wait()
    return answer.value
}

/// What `blockingRequest`'s task hands back to its thread.
private final class Answer: @unchecked Sendable {
    private let lock = NSLock()
    private var result: TestServer.HTTPResult?
    func set(_ result: TestServer.HTTPResult?) { lock.withLock { self.result = result } }
    var value: TestServer.HTTPResult? { lock.withLock { result } }
}

/// A room member reading on its own thread from the first of `servers`; a
/// socket silent for `silence` seconds (no event, no pong to its own pings)
/// is dropped, and the member reconnects to the next host and fetches what
/// it missed with `after` (its last message), as a client does.
final class FailoverMember: @unchecked Sendable {
    let servers: [TestServer]
    let room: String
    let token: String
    let name: String
    static let silence = 3.0
    private let lock = NSLock()
    private var socket: WebSocketClient
    private var current = 0
    private var ids: [String] = []
    private var texts: [String] = []
    private var known = Set<String>()
    private var liveHere = Set<String>()
    private var duplicates: [String] = []
    private var moves: [String] = []
    private var stopped = false
    private let finished = DispatchGroup()

    init(servers: [TestServer], room: String, token: String, name: String) throws {
        (self.servers, self.room, self.token, self.name) = (servers, room, token, name)
        socket = try servers[0].webSocket("/ws/chat/\(room)/", token: token)
    }

    var contents: [String] { lock.withLock { texts } }
    var liveDuplicates: [String] { lock.withLock { duplicates } }
    /// The hosts it moved to, in order.
    var movedTo: [String] { lock.withLock { moves } }
    var summary: String { lock.withLock { "\(texts.count) messages, moved to \(moves), duplicates \(duplicates.prefix(3))" } }

    func start() {
        finished.enter()
        Thread {
            self.run()
            self.finished.leave()
        }.start()
    }

    func stop() {
        lock.withLock { stopped = true }
        finished.wait()
    }

    private func run() {
        let deadline = Date().addingTimeInterval(180)
        var heard = Date()
        var pinged = Date()
        while !lock.withLock({ stopped }) && Date() < deadline {
            let frame = try? socket.receive(timeout: 0.2)
            if let frame {
                heard = Date()
                if frame.opcode == .text, let event = try? JSONSerialization.jsonObject(with: Data(frame.payload)) as? [String: Any],
                    event["type"] as? String == "message", let message = event["message"] as? [String: Any] {
                    take(message, live: true)
                }
            }
            if frame?.opcode == .close || socket.isClosed || Date().timeIntervalSince(heard) > Self.silence {
                moveOn(deadline: deadline)
                heard = Date()
            } else if Date().timeIntervalSince(pinged) > 1 {
                try? socket.send(json: ["type": "ping"])
                pinged = Date()
            }
        }
    }

    private func take(_ message: [String: Any], live: Bool) {
        guard let id = message["id"] as? String, let content = message["content"] as? String else { return }
        lock.withLock {
            if live && !liveHere.insert(id).inserted { duplicates.append(content) }
            guard known.insert(id).inserted else { return }
            ids.append(id)
            texts.append(content)
        }
    }

    /// A socket on the next host first (live events from then on), then
    /// what was missed before it from the REST history, oldest first.
    private func moveOn(deadline: Date) {
        socket.abort()
        while Date() < deadline {
            let next = (lock.withLock { current } + 1) % servers.count
            guard let fresh = try? servers[next].webSocket("/ws/chat/\(room)/", token: token) else {
                lock.withLock { current = next }
                continue
            }
            lock.withLock {
                (socket, current, liveHere) = (fresh, next, [])
                moves.append(servers[next].host)
            }
            if let missed = missed(on: servers[next]) {
                for message in missed { take(message, live: false) }
                return
            }
        }
    }

    /// Messages after the last one this member has, oldest first: pages of
    /// 100 walked down with `before` so that new messages do not shift them.
    private func missed(on server: TestServer) -> [[String: Any]]? {
        let after = lock.withLock { ids.last }
        var found: [[String: Any]] = []
        var before: String?
        while true {
            let query = "page_size=100" + (after.map { "&after=\($0)" } ?? "") + (before.map { "&before=\($0)" } ?? "")
            guard let page = blockingRequest(server, "GET", "/api/chat/rooms/\(room)/messages/?\(query)", token: token, timeout: 10),
                page.status == 200, let results = page.object["results"] as? [[String: Any]] else { return nil }
            found += results
            guard results.count == 100, let oldest = results.last?["id"] as? String else { break }
            before = oldest
        }
        return found.reversed()
    }
}

/// A member sending `limit` messages over REST from its own thread, each
/// with its `client_msg_id`; one without an answer within `patience` is
/// sent again to the next host, and stored once (`200` for a repeat).
final class FailoverSender: @unchecked Sendable {
    let servers: [TestServer]
    let room: String
    let token: String
    let name: String
    let limit: Int
    let pace: Double
    static let patience = 3.0
    private let lock = NSLock()
    private var done: [String] = []
    private var failed: [String] = []
    private var current = 0
    private var longest = 0.0
    private var answers: [Int: Int] = [:]
    private var spans: [(began: Date, confirmed: Date)] = []

    init(servers: [TestServer], room: String, token: String, name: String, limit: Int, pace: Double) {
        (self.servers, self.room, self.token, self.name, self.limit, self.pace) = (servers, room, token, name, limit, pace)
    }

    var sent: Int { lock.withLock { done.count } }
    /// Contents the server confirmed, in order.
    var confirmed: [String] { lock.withLock { done } }
    var failures: [String] { lock.withLock { failed } }
    /// The longest a message took, from its first try until it was stored (seconds).
    var slowest: Double { lock.withLock { longest } }
    /// How many tries got each status other than 200/201 (0: no answer in `patience`).
    var refusals: [Int: Int] { lock.withLock { answers } }
    /// When each confirmed message's first try began and when it was confirmed, in order.
    var timings: [(began: Date, confirmed: Date)] { lock.withLock { spans } }

    /// Sends on a thread of its own; the group is left when it is done.
    func start() -> DispatchGroup {
        let group = DispatchGroup()
        group.enter()
        Thread {
            for i in 0..<self.limit {
                self.send("\(self.name)-\(i)")
                usleep(UInt32(self.pace * 1_000_000))
            }
            group.leave()
        }.start()
        return group
    }

    private func send(_ content: String) {
        var last = "no answer"
        let began = Date()
        for _ in 0..<20 {
            let server = servers[lock.withLock { current }]
            let answer = blockingRequest(
                server, "POST", "/api/chat/rooms/\(room)/messages/", token: token, json: ["content": content, "client_msg_id": content], timeout: Self.patience
            )
            if let answer, answer.status == 201 || answer.status == 200 {
                lock.withLock {
                    done.append(content)
                    let now = Date()
                    spans.append((began, now))
                    longest = max(longest, now.timeIntervalSince(began))
                }
                return
            }
            lock.withLock { answers[answer?.status ?? 0, default: 0] += 1 }
            last = answer.map { "\($0.status) \($0.text)" } ?? "no answer from \(server.host)"
            if answer == nil {
                lock.withLock { current = (current + 1) % servers.count }
            } else {
                usleep(100_000)
            }
        }
        lock.withLock { failed.append("\(content): \(last)") }
    }
}
