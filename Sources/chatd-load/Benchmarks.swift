import ChatCore
import ChatTesting
import Foundation

/// Every server a load run starts: quiet, and without rate limits, which
/// would measure the limiter instead of the server.
let loadEnvironment = ["CHAT_LOG_LEVEL": "warning", "CHAT_RATE_LIMITS": "off"]

/// One client socket: sends its share with at most `window` of its own
/// messages unconfirmed, and counts every message event of its room.
final class Member: @unchecked Sendable {
    let socket: WebSocketClient
    let toSend: Int
    let expected: Int
    let window: Int
    let tag: String
    /// The text after the tag and number; fixed filler unless set.
    var text: ((Int) -> String)?
    var received = 0
    var distinct = Set<String>()
    var duplicates = 0
    var failure: String?

    init(socket: WebSocketClient, toSend: Int, expected: Int, window: Int, tag: String, text: ((Int) -> String)? = nil) {
        self.socket = socket
        self.toSend = toSend
        self.expected = expected
        self.window = window
        self.tag = tag
        self.text = text
    }

    func run() {
        var sent = 0
        var confirmed = 0
        let payload = String(repeating: "x", count: 120)
        do {
            while received < expected {
                while sent < toSend && sent - confirmed < window {
                    try socket.send(text: #"{"type":"message","content":"\#(tag) \#(sent) \#(text?(sent) ?? payload)"}"#)
                    sent += 1
                }
                guard let frame = try socket.receive(timeout: 30) else {
                    failure = "\(tag): timed out with \(received)/\(expected) received"
                    return
                }
                guard frame.opcode == .text else { continue }
                let text = frame.text
                guard text.hasPrefix(#"{"type":"message""#) else {
                    if text.contains(#""type":"error""#) { failure = "\(tag): \(text)"; return }
                    continue
                }
                received += 1
                if let range = text.range(of: #""id":""#) {
                    let id = text[range.upperBound...].prefix(36)
                    if !distinct.insert(String(id)).inserted { duplicates += 1 }
                }
                if text.contains(#""content":"\#(tag) "#) { confirmed += 1 }
            }
        } catch {
            failure = "\(tag): \(error)"
        }
    }
}

/// Runs every member on a thread of its own until all are done.
func runAllIgnoringFailures(_ members: [Member]) {
    let group = DispatchGroup()
    for member in members {
        group.enter()
        Thread { member.run(); group.leave() }.start()
    }
    group.wait()
}

/// Runs every member; the first failure, if any, is thrown.
func runAll(_ members: [Member]) throws {
    runAllIgnoringFailures(members)
    if let failure = members.compactMap(\.failure).first { throw TestServerError(description: failure) }
}

/// CPU seconds (user + system) a process has used so far.
func cpuSeconds(_ pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
    // Fields 14 and 15 of proc(5), counted from the state field (3).
    let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
    return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// The processes whose CPU time we report, by role.
func processes(_ server: TestServer) -> [(String, Int32)] {
    var list: [(String, Int32)] = [("supervisor+broker", server.process.processIdentifier)]
    list += server.childPIDs(matching: "frontend").map { ("frontend", $0) }
    list += server.childPIDs(matching: "worker --role store").map { ("store worker", $0) }
    list += server.childPIDs(matching: "worker --role search").map { ("search worker (nice 10)", $0) }
    list += server.childPIDs(matching: "worker --role receipts").map { ("receipts worker", $0) }
    list.append(("load client", getpid()))
    return list
}

func measure(_ options: Options) async throws -> (seconds: Double, messages: Int, deliveries: Int, stored: Int, cpu: [(String, Double)]) {
    let server = try await TestServer.start(storeWorkers: options.storeWorkers, environment: loadEnvironment)
    defer { server.stop() }
    var members: [Member] = []
    var roomIDs: [String] = []
    var tokens: [String] = []
    for s in 0..<options.senders {
        let token = try await server.token(sub: "load-\(s)")
        _ = try await server.request("GET", "/api/chat/rooms/", token: token)
        tokens.append(token)
    }
    let others = (1..<options.senders).map { IDs.userID(forSubject: "load-\($0)") }
    for r in 0..<options.rooms {
        let created = try await server.request("POST", "/api/chat/rooms/", token: tokens[0], json: ["name": "load \(r)", "participant_ids": others])
        guard let room = created.object["id"] as? String else { throw TestServerError(description: "room: \(created.text)") }
        roomIDs.append(room)
        for s in 0..<options.senders {
            let socket = try server.webSocket("/ws/chat/\(room)/", token: tokens[s])
            members.append(Member(socket: socket, toSend: options.messages, expected: options.messages * options.senders, window: options.window, tag: "r\(r)s\(s)"))
        }
    }
    let watched = processes(server)
    let cpuBefore = watched.map { cpuSeconds($0.1) }
    let start = Date()
    if let words = options.duringRun {
        Thread {
            usleep(1_000_000)
            let began = Date()
            let answer = (try? server.ctl(words)) ?? "failed"
            print(String(format: "  chatd ctl %@ took %.2f s: %@", words.joined(separator: " "), Date().timeIntervalSince(began), answer.trimmingCharacters(in: .whitespacesAndNewlines)))
        }.start()
    }
    runAllIgnoringFailures(members)
    let seconds = Date().timeIntervalSince(start)
    let cpu = zip(watched, cpuBefore).map { ($0.0.0, cpuSeconds($0.0.1) - $0.1) }
    if let failure = members.compactMap(\.failure).first { throw TestServerError(description: failure) }
    var stored = 0
    for room in roomIDs {
        let page = try await server.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=1", token: tokens[0])
        stored += page.object["count"] as? Int ?? 0
    }
    let messages = options.rooms * options.senders * options.messages
    // Exactly once: a member that got a message twice finished early and
    // hides one it never got.
    let duplicates = members.reduce(0) { $0 + $1.duplicates }
    if duplicates > 0 { throw TestServerError(description: "\(duplicates) duplicate deliveries") }
    if stored != messages {
        // Keep the evidence: what the server logged beyond info.
        let notable = server.log.split(separator: "\n").filter { !$0.contains(" info ") }
        print("server log (\(notable.count) lines beyond info):\n" + notable.suffix(30).joined(separator: "\n"))
    }
    return (seconds, messages, members.reduce(0) { $0 + $1.received }, stored, cpu)
}

/// The REST benchmark's data: a user in 100 rooms (one message each) and a
/// room of 100,000 messages; then the server runs until this process is told to stop.
func restFixture(path: String) async throws {
    let server = try await TestServer.start(storeWorkers: 1, environment: loadEnvironment)
    defer { server.stop() }
    let token = try await server.token(sub: "bench", name: "Bench", expiresIn: 86_400)
    let writers = try await (0..<4).asyncMap { try await server.token(sub: "writer-\($0)", expiresIn: 86_400) }
    for writer in writers { _ = try await server.request("GET", "/api/chat/rooms/", token: writer) }
    for r in 0..<100 {
        let room = try await server.request("POST", "/api/chat/rooms/", token: token, json: ["name": "room \(r)"])
        let id = room.object["id"] as! String
        _ = try await server.request("POST", "/api/chat/rooms/\(id)/messages/", token: token, json: ["content": "hello \(r)"])
    }
    let big = try await server.request("POST", "/api/chat/rooms/", token: token, json: [
        "name": "big", "participant_ids": (0..<4).map { IDs.userID(forSubject: "writer-\($0)") },
    ])
    let bigID = big.object["id"] as! String
    let members = try writers.enumerated().map { index, writer in
        Member(socket: try server.webSocket("/ws/chat/\(bigID)/", token: writer), toSend: 25_000, expected: 100_000, window: 200, tag: "w\(index)")
    }
    try runAll(members)
    // The cursor: the message in the middle of the room.
    let middle = try await server.request("GET", "/api/chat/rooms/\(bigID)/messages/?page_size=1&page=50000", token: token)
    let cursor = ((middle.object["results"] as? [[String: Any]])?.first?["id"] as? String) ?? ""
    let base = "http://127.0.0.1:\(server.port)"
    let fixture: [String: Any] = [
        "token": token,
        "rooms": "\(base)/api/chat/rooms/",
        "messages": "\(base)/api/chat/rooms/\(bigID)/messages/",
        "cursor": "\(base)/api/chat/rooms/\(bigID)/messages/?before=\(cursor)",
    ]
    try JSONSerialization.data(withJSONObject: fixture).write(to: URL(fileURLWithPath: path))
    print("fixture ready: \(path)")
    let stop = DispatchSemaphore(value: 0)
    var sources: [any DispatchSourceSignal] = []
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler { stop.signal() }
        source.resume()
        sources.append(source)
    }
    await withCheckedContinuation { continuation in
        Thread { stop.wait(); continuation.resume() }.start()
    }
    _ = sources
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}

/// Monotonic nanoseconds.
func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Fan-out of one public room with `members` sockets (each its own user),
/// read by one poll loop. Phase 1: latency, one message every 20 ms, time from
/// send to the last member's delivery. Phase 2: throughput, a window of
/// messages in flight, each retired when every member has it.
func fanout(members count: Int, messages: Int, window: Int) async throws {
    // The members and the owner: past the default limit of 1,000 (issue 10) at §3's size.
    let limit = ["CHAT_MAX_PARTICIPANTS": String(max(1_000, count + 1))]
    let server = try await TestServer.start(storeWorkers: 1, environment: loadEnvironment.merging(limit) { $1 })
    defer { server.stop() }
    let owner = try await server.token(sub: "owner")
    let created = try await server.request("POST", "/api/chat/rooms/", token: owner, json: ["name": "fan-out", "room_type": "public"])
    guard let room = created.object["id"] as? String else { throw TestServerError(description: created.text) }
    var clients: [WebSocketClient] = []
    for i in 0..<count {
        clients.append(try server.webSocket("/ws/chat/\(room)/", token: try await server.token(sub: "member-\(i)")))
    }
    let sender = try server.webSocket("/ws/chat/\(room)/", token: owner)
    var fds = clients.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }

    /// Reads whatever has arrived on every member socket; calls `onMessage`
    /// with each message event's text.
    func pump(timeoutMilliseconds: Int32, _ onMessage: (String) -> Void) throws {
        guard poll(&fds, nfds_t(fds.count), timeoutMilliseconds) > 0 else { return }
        for index in fds.indices where fds[index].revents != 0 {
            while let frame = try clients[index].receive(timeout: 0) {
                if frame.opcode == .text { onMessage(frame.text) }
            }
        }
    }
    // Wait for the joins to settle: the last member's user_joined reached member 0.
    let lastJoin = IDs.userID(forSubject: "member-\(count - 1)")
    var settled = false
    let settleDeadline = Date().addingTimeInterval(60)
    while !settled && Date() < settleDeadline {
        try pump(timeoutMilliseconds: 100) { text in if text.contains(lastJoin) { settled = true } }
    }
    // Drain the rest of the join storm.
    try pump(timeoutMilliseconds: 500) { _ in }

    func tag(_ text: String) -> Int? {
        guard let range = text.range(of: "\"content\":\"t"), let end = text[range.upperBound...].firstIndex(of: " ") else { return nil }
        return Int(text[range.upperBound..<end])
    }

    // Phase 1: latency.
    let probes = 200
    var sentAt = [UInt64](repeating: 0, count: probes)
    var lastAt = [UInt64](repeating: 0, count: probes)
    var received = [Int](repeating: 0, count: probes)
    for n in 0..<probes {
        sentAt[n] = now()
        try sender.send(text: #"{"type":"message","content":"t\#(n) probe"}"#)
        let until = now() + 20_000_000
        while now() < until || received[n] < count {
            try pump(timeoutMilliseconds: 5) { text in
                if let k = tag(text), k < probes { received[k] += 1; lastAt[k] = now() }
            }
            if now() > until + 5_000_000_000 { throw TestServerError(description: "probe \(n): \(received[n])/\(count) delivered") }
        }
    }
    let latencies = (0..<probes).map { Double(lastAt[$0] - sentAt[$0]) / 1e6 }.sorted()
    func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
    print(String(format: "fan-out to %d members: send → last delivery p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d messages, one per 20 ms)",
                 count, percentile(0.5), percentile(0.99), latencies.last ?? 0, probes))

    // Phase 2: sustained rate.
    var deliveredTo = [Int](repeating: 0, count: messages)
    var sent = 0, done = 0
    let watched = processes(server)
    let cpuBefore = watched.map { cpuSeconds($0.1) }
    let start = now()
    while done < messages {
        while sent < messages && sent - done < window {
            try sender.send(text: #"{"type":"message","content":"t\#(probes + sent) load"}"#)
            sent += 1
        }
        try pump(timeoutMilliseconds: 100) { text in
            if let k = tag(text), k >= probes {
                deliveredTo[k - probes] += 1
                if deliveredTo[k - probes] == count { done += 1 }
            }
        }
        // The sender reads its own echoes so it is not cut off as a slow client.
        while (try? sender.receive(timeout: 0)) != nil {}
        if Double(now() - start) / 1e9 > 120 { throw TestServerError(description: "sustained phase stalled at \(done)/\(messages)") }
    }
    let seconds = Double(now() - start) / 1e9
    print(String(format: "sustained: %d messages to %d members in %.2f s = %.0f messages/s, %.0f deliveries/s (window %d)",
                 messages, count, seconds, Double(messages) / seconds, Double(messages * count) / seconds, window))
    let deliveries = Double(messages * count)
    let breakdown = zip(watched, cpuBefore).map { process, before in
        String(format: "%@ %.2f µs/delivery (%.0f%%)", process.0, (cpuSeconds(process.1) - before) / deliveries * 1e6, (cpuSeconds(process.1) - before) / seconds * 100)
    }
    print("  cpu: " + breakdown.joined(separator: ", "))
}

/// Synthetic words ("kavo", "tirumen", ...) from a fixed seed, so message text
/// is varied like language and searches are selective like real ones.
struct Words {
    var state: UInt64
    let vocabulary: [String]

    init(seed: UInt64, size: Int = 5000) {
        state = seed
        var words: [String] = []
        let syllables = ["ka", "vo", "ti", "ru", "men", "sa", "lo", "pe", "dri", "an", "shu", "ker", "mi", "to", "bel", "ar", "zo", "ni", "que", "fa"]
        var x: UInt64 = seed | 1
        for _ in 0..<size {
            var word = ""
            x = x &* 6364136223846793005 &+ 1442695040888963407
            for k in 0..<(2 + Int(x >> 60) % 3) { word += syllables[Int((x >> (8 * UInt64(k))) & 0xFF) % syllables.count] }
            words.append(word)
        }
        vocabulary = words
    }

    mutating func next() -> String {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return vocabulary[Int(state >> 33) % vocabulary.count]
    }

    mutating func sentence(_ count: Int) -> String { (0..<count).map { _ in next() }.joined(separator: " ") }
}

/// Search over `total` messages: seed them (8 rooms × 4 senders over
/// WebSockets), wait until indexed, time searches, then delete the index and
/// time its rebuild from zero.
func searchBench(total: Int) async throws {
    let server = try await TestServer.start(storeWorkers: 1, environment: loadEnvironment)
    defer { server.stop() }
    let tokens = try await (0..<4).asyncMap { try await server.token(sub: "s-\($0)", expiresIn: 86_400) }
    for token in tokens { _ = try await server.request("GET", "/api/chat/rooms/", token: token) }
    let others = (1..<4).map { IDs.userID(forSubject: "s-\($0)") }
    var members: [Member] = []
    let perSender = total / 32
    for r in 0..<8 {
        let created = try await server.request("POST", "/api/chat/rooms/", token: tokens[0], json: ["name": "search \(r)", "participant_ids": others])
        let room = created.object["id"] as! String
        for s in 0..<4 {
            var words = Words(seed: UInt64(r * 4 + s + 1))
            let member = Member(socket: try server.webSocket("/ws/chat/\(room)/", token: tokens[s]), toSend: perSender, expected: perSender * 4, window: 200, tag: "r\(r)s\(s)")
            member.text = { _ in words.sentence(12) }
            members.append(member)
        }
    }
    let seedStart = now()
    try runAll(members)
    print(String(format: "seeded %d messages in %.1f s", perSender * 32, Double(now() - seedStart) / 1e9))

    // The newest message's tag is unique: once it is found, everything is indexed.
    let lastTag = "r7s3 \(perSender - 1) "
    func found(_ query: String) async throws -> Int {
        let q = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
        return (try await server.request("GET", "/api/chat/search/messages/?q=\(q)", token: tokens[0]).json as? [Any])?.count ?? 0
    }
    let indexStart = now()
    while try await found(lastTag) == 0 { try await Task.sleep(for: .milliseconds(100)) }
    print(String(format: "live indexing finished %.1f s after the last send", Double(now() - indexStart) / 1e9))

    var words = Words(seed: 99)
    var latencies: [Double] = []
    var hits = 0
    for i in 0..<300 {
        // Whole words, and 3- and 4-character substrings of words.
        let word = words.next()
        let query = i % 3 == 0 ? word : String(word.prefix(3 + i % 2))
        let start = now()
        hits += try await found(query)
        latencies.append(Double(now() - start) / 1e6)
    }
    latencies.sort()
    print(String(format: "search over %d messages: p50 %.2f ms, p99 %.2f ms, max %.2f ms (300 queries, %.1f results on average, 50 at most)",
                 perSender * 32, latencies[150], latencies[296], latencies[299], Double(hits) / 300))

    // Catch-up from zero: the index deleted, the worker woken, the newest message searched for.
    unlink(server.dataDir + "/search.sqlite")
    let rebuildStart = now()
    _ = try await server.request("POST", "/api/chat/rooms/\((try await server.request("GET", "/api/chat/rooms/?page_size=1", token: tokens[0]).object["results"] as? [[String: Any]])?.first?["id"] as? String ?? "")/messages/", token: tokens[0], json: ["content": "wake"])
    while try await found(lastTag) == 0 { try await Task.sleep(for: .milliseconds(100)) }
    let seconds = Double(now() - rebuildStart) / 1e9
    print(String(format: "catch-up from zero: %d messages in %.1f s = %.0f messages/s", perSender * 32, seconds, Double(perSender * 32) / seconds))
}

/// Runs one of the modes; any failure is a message and exit status 1, not a crash.
func orExit<T>(_ body: () async throws -> T) async -> T {
    do {
        return try await body()
    } catch {
        FileHandle.standardError.write(Data("chatd-load: \(error)\n".utf8))
        exit(1)
    }
}

/// SIGKILL of a store worker, `count` times: how long until a replacement
/// says READY=1 (from `chatd ctl status`), and until a message sent at the
/// moment of the kill is delivered (the frontend resends it after 750 ms).
func recoveryBench(count: Int) async throws {
    let server = try await TestServer.start(storeWorkers: 1, environment: loadEnvironment)
    defer { server.stop() }
    let token = try await server.token(sub: "recovery")
    let created = try await server.request("POST", "/api/chat/rooms/", token: token, json: ["name": "recovery"])
    let room = created.object["id"] as! String
    let socket = try server.webSocket("/ws/chat/\(room)/", token: token)
    var ready: [Double] = []
    var delivered: [Double] = []
    for round in 0..<count {
        guard let victim = server.childPIDs(matching: "worker --role store").first else { throw TestServerError(description: "no store worker") }
        // Let the previous replacement live past the supervisor's quick-exit window.
        try await Task.sleep(for: .milliseconds(5500))
        let killed = now()
        kill(victim, SIGKILL)
        try socket.send(json: ["type": "message", "content": "k\(round)"])
        var readyAt: UInt64?
        var deliveredAt: UInt64?
        while readyAt == nil || deliveredAt == nil {
            // 1 ms steps, and the status from the control socket rather than
            // a `chatd ctl` process (tens of ms each): the figures are ms.
            if deliveredAt == nil, let frame = try socket.receive(timeout: 0.001), frame.text.contains("\"content\":\"k\(round)\"") { deliveredAt = now() }
            if readyAt == nil {
                let status = (try? server.status()) ?? [:]
                let store = (status["children"] as? [[String: Any]])?.first { $0["child"] as? String == "store.0" }
                if let pid = store?["pid"] as? Int, Int32(pid) != victim, store?["ready"] as? Bool == true { readyAt = now() }
            }
            if Double(now() - killed) / 1e9 > 30 { throw TestServerError(description: "no recovery in 30 s") }
        }
        ready.append(Double(readyAt! - killed) / 1e6)
        delivered.append(Double(deliveredAt! - killed) / 1e6)
        print(String(format: "kill %d: replacement ready after %.0f ms, message sent at the kill delivered after %.0f ms", round + 1, ready.last!, delivered.last!))
    }
    print(String(format: "median over %d kills: ready %.0f ms, delivered %.0f ms", count, ready.sorted()[count / 2], delivered.sorted()[count / 2]))
}
