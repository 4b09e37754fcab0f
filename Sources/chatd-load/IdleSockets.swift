import ChatCore
import ChatTesting
import Foundation

/// Row 5 of issue 12: `count` idle WebSockets, each its own user, in public
/// rooms of 10 (each connect is a join, and its `user_joined` goes to the
/// room). One process may hold 20,000 files (a hard limit here), so the
/// sockets are opened by `clients` child processes (this binary in
/// `--idle-client` mode), from `sources` loopback addresses (~28,000
/// ephemeral ports each towards one server port), to a server of
/// `frontends` frontends. Reports the frontends' RSS growth per socket and
/// the open rate, then holds the sockets `hold` seconds and counts them.
func idleBench(_ options: Options, count: Int) async throws {
    var environment = loadEnvironment
    let frontends = options.frontends ?? (count + 14_999) / 15_000
    // Harmless to a server with one frontend: it does not read the key.
    if frontends > 1 { environment["CHAT_FRONTENDS"] = String(frontends) }
    // The client processes never read their sockets, so they answer no
    // ping (a browser would): with the default 120 s, sockets opened early
    // in a 100,000-socket run were closed as silent before the count.
    environment["CHAT_IDLE_TIMEOUT_SECONDS"] = "3600"
    let server = try await TestServer.start(storeWorkers: options.storeWorkers, environment: environment, timeout: 60)
    defer { server.stop() }
    let rooms = try await publicRooms(server, count: (count + 9) / 10)
    let roomsFile = server.dataDir + "/idle-rooms.txt"
    try rooms.joined(separator: "\n").write(toFile: roomsFile, atomically: true, encoding: .utf8)
    let pids = frontendPIDs(server)
    let before = pids.map { Soak.rss($0) }.reduce(0, +)
    let clients = options.clients ?? (count + 14_999) / 15_000
    let sources = options.sources ?? (count + 24_999) / 25_000
    let meter = CPUMeter(server)
    let start = now()
    let children = try (0..<clients).map { index in
        let first = count * index / clients
        return try IdleClient.spawn(server, roomsFile: roomsFile, first: first, count: count * (index + 1) / clients - first, sources: sources,
                                    threads: options.connectThreads ?? max(8, 64 / clients))
    }
    var opened = 0
    var latencies: [(p50: Double, p99: Double)] = []
    for child in children {
        let answer = try child.readOpened()
        opened += answer.opened
        latencies.append((answer.p50, answer.p99))
    }
    let seconds = Double(now() - start) / 1e9
    // The clients are idle once they said `opened`: their CPU is all opening.
    let cpu = meter.used().filter { $0.name != "load client" }
        + [("idle clients", children.map { cpuSeconds($0.process.processIdentifier) }.reduce(0, +))]
    // A moment for the last joins' events to leave the frontends' buffers.
    try await Task.sleep(for: .seconds(1))
    let after = pids.map { Soak.rss($0) }.reduce(0, +)
    try await Task.sleep(for: .seconds(options.hold))
    var held = 0
    for child in children { held += try child.finish() }
    let perSocket = Double(after - before) / 1024 / Double(max(1, opened))
    print(String(format: "%d frontend%@ (pids %@): RSS %.1f → %.1f MB", pids.count, pids.count == 1 ? "" : "s",
                 pids.map(String.init).joined(separator: " "), Double(before) / 1e6, Double(after) / 1e6))
    print("  handshakes (connect to 101, per client process): " + latencies.map { String(format: "p50 %.1f ms p99 %.1f ms", $0.p50 * 1e3, $0.p99 * 1e3) }.joined(separator: "; "))
    print("  cpu: " + CPUMeter.breakdown(cpu, per: opened, unit: "socket", seconds: seconds))
    print(String(format: "  server CPU %.0f µs per socket opened", CPUMeter.serverMicroseconds(cpu.filter { $0.name != "idle clients" }, per: opened)))
    print(String(format: "summary: idle WebSockets: %d of %d opened by %d client processes from %d source addresses to %d frontend%@ at %.0f/s, %.2f KiB each on the server, %d still open after %d s",
                 opened, count, clients, sources, pids.count, pids.count == 1 ? "" : "s", Double(opened) / seconds, perSocket, held, options.hold))
    if opened < count || held < opened { exit(1) }
}

/// `count` public rooms of user `owner`, created 8 requests at a time.
func publicRooms(_ server: TestServer, count: Int) async throws -> [String] {
    let owner = try await server.token(sub: "owner", expiresIn: 86_400)
    // Provisioned once, before 8 first requests would race to do it.
    _ = try await server.request("GET", "/api/chat/rooms/", token: owner)
    return try await withThrowingTaskGroup(of: [String].self) { group in
        for lane in 0..<8 {
            group.addTask {
                var ids: [String] = []
                for r in stride(from: lane, to: count, by: 8) {
                    let created = try await server.request("POST", "/api/chat/rooms/", token: owner, json: ["name": "idle \(r)", "room_type": "public"])
                    guard let id = created.object["id"] as? String else { throw TestServerError(description: "room: \(created.text)") }
                    ids.append(id)
                }
                return ids
            }
        }
        var all: [String] = []
        for try await ids in group { all += ids }
        return all
    }
}

/// The parent's handle on one `--idle-client` child: it prints
/// `opened <n>` once its sockets are open, holds them until the parent
/// writes to its stdin, then prints `held <n>` (those still open) and exits.
struct IdleClient {
    let process: Process
    let output: FileHandle
    let input: FileHandle

    static func spawn(_ server: TestServer, roomsFile: String, first: Int, count: Int, sources: Int, threads: Int) throws -> IdleClient {
        let process = Process()
        let this = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        process.executableURL = URL(fileURLWithPath: this)
        process.arguments = ["--idle-client", roomsFile, "--port", String(server.port), "--first", String(first), "--count", String(count),
                             "--sources", String(sources), "--connect-threads", String(threads)]
        // The secret stays off command lines, which any user can read.
        process.environment = ProcessInfo.processInfo.environment.merging(["CHATD_LOAD_SECRET": server.secret]) { $1 }
        let stdout = Pipe(), stdin = Pipe()
        process.standardOutput = stdout
        process.standardInput = stdin
        try process.run()
        return IdleClient(process: process, output: stdout.fileHandleForReading, input: stdin.fileHandleForWriting)
    }

    /// Waits for `<word> <n> ...` and returns n and the numbers after it
    /// (the child's failure ends the wait).
    private func read(_ word: String) throws -> (Int, [Double]) {
        var line = Data()
        while true {
            let byte = try output.read(upToCount: 1) ?? Data()
            if byte.isEmpty || byte == Data("\n".utf8) { break }
            line += byte
        }
        let text = String(decoding: line, as: UTF8.self)
        let fields = text.split(separator: " ")
        guard fields.first == Substring(word), fields.count >= 2, let n = Int(fields[1]) else {
            throw TestServerError(description: "idle client \(process.processIdentifier): expected \(word), got \"\(text)\"")
        }
        return (n, fields.dropFirst(2).compactMap { Double($0) })
    }

    /// How many sockets opened, and the median and 99th percentile of their handshakes (s).
    func readOpened() throws -> (opened: Int, p50: Double, p99: Double) {
        let (n, rest) = try read("opened")
        return (n, rest.first ?? 0, rest.dropFirst().first ?? 0)
    }

    /// Tells the child to count its open sockets and exit; the count.
    func finish() throws -> Int {
        try input.write(contentsOf: Data("count\n".utf8))
        try input.close()
        let held = try read("held").0
        process.waitUntilExit()
        return held
    }
}

/// The `--idle-client` child: opens sockets `first ..< first + count` on
/// `threads` threads (socket i: user `idle-<i>`, room i / 10 of the rooms
/// file, source address 127.0.0.<2 + i mod sources>), says how many opened,
/// holds them until the parent writes, then says how many are still open.
func idleClient(roomsFile: String, port: Int, first: Int, count: Int, sources: Int, threads: Int) throws {
    guard let secret = ProcessInfo.processInfo.environment["CHATD_LOAD_SECRET"] else { throw TestServerError(description: "CHATD_LOAD_SECRET not set") }
    let rooms = try String(contentsOfFile: roomsFile, encoding: .utf8).split(separator: "\n").map(String.init)
    let tokens = IdleTokens(secret: secret)
    let lanes = (0..<max(1, threads)).map { _ in IdleLane() }
    let group = DispatchGroup()
    for (t, lane) in lanes.enumerated() {
        group.enter()
        Thread {
            for i in stride(from: first + t, to: first + count, by: lanes.count) {
                lane.open(index: i, room: rooms[i / 10 % rooms.count], port: port, tokens: tokens, source: "127.0.0.\(2 + i % max(1, sources))")
            }
            group.leave()
        }.start()
    }
    group.wait()
    if let failure = lanes.compactMap(\.firstFailure).first { FileHandle.standardError.write(Data("idle client: \(failure)\n".utf8)) }
    let took = lanes.flatMap(\.handshakes).sorted()
    FileHandle.standardOutput.write(Data("opened \(lanes.map(\.sockets.count).reduce(0, +)) \(percentile(took, 0.5)) \(percentile(took, 0.99))\n".utf8))
    waitForParent()
    let held = lanes.flatMap(\.sockets).filter { socket in
        // 0x2000: POLLRDHUP, the peer closed; join events still unread are fine.
        var fd = pollfd(fd: socket.fd, events: Int16(POLLIN) | 0x2000, revents: 0)
        return poll(&fd, 1, 0) >= 0 && fd.revents & (Int16(POLLHUP) | Int16(POLLERR) | 0x2000) == 0
    }.count
    FileHandle.standardOutput.write(Data("held \(held)\n".utf8))
}

/// Blocks until the parent writes to stdin (or closes it); exits if the
/// parent is gone. A sibling started later may hold our stdin's write end
/// too, so EOF alone would not be a safe signal.
func waitForParent() {
    let parent = getppid()
    var input = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
    while poll(&input, 1, 500) <= 0 {
        if getppid() != parent { exit(1) }
    }
}

/// The sockets one thread of an idle client opened.
final class IdleLane: @unchecked Sendable {
    var sockets: [WebSocketClient] = []
    /// Seconds from each connect to its handshake's answer.
    var handshakes: [Double] = []
    var firstFailure: String?

    func open(index: Int, room: String, port: Int, tokens: IdleTokens, source: String) {
        do {
            let token = tokens.token(index: index)
            let start = now()
            sockets.append(try WebSocketClient(port: port, path: "/ws/chat/\(room)/", headers: ["Authorization": "Bearer \(token)"], source: source))
            handshakes.append(Double(now() - start) / 1e9)
        } catch {
            if firstFailure == nil { firstFailure = "socket \(index) from \(source): \(error)" }
        }
    }
}

/// HS256 tokens for users `idle-<i>`, the same bytes `TestTokens.token` makes
/// with `TestTokens.claims` (sorted keys), minted without Foundation's JSON
/// and string replacing: with them, minting took half the client
/// processes' CPU (~200 µs a socket), which the open rate then measured.
struct IdleTokens: Sendable {
    let secret: Data
    /// `base64url({"alg":"HS256","typ":"JWT"}).`
    let header: String
    let expires: Int

    init(secret: String) {
        self.secret = Data(secret.utf8)
        header = Self.base64URL(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8)) + "."
        expires = Int(Date().timeIntervalSince1970 + 3600)
    }

    func token(index: Int) -> String {
        let sub = "idle-\(index)"
        // `sub.capitalized` of "idle-<digits>".
        let claims = #"{"email":"\#(sub)@example.com","exp":\#(expires),"name":"Idle-\#(index)","sub":"\#(sub)"}"#
        let input = header + Self.base64URL(Array(claims.utf8))
        return input + "." + Self.base64URL([UInt8](TestTokens.hmac(Data(input.utf8), secret: secret)))
    }

    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// RFC 4648 §5, without padding.
    static func base64URL(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let n = min(3, bytes.count - i)
            var chunk = UInt32(bytes[i]) << 16
            if n > 1 { chunk |= UInt32(bytes[i + 1]) << 8 }
            if n > 2 { chunk |= UInt32(bytes[i + 2]) }
            for k in 0...n { out.append(alphabet[Int(chunk >> (18 - 6 * UInt32(k)) & 63)]) }
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}
