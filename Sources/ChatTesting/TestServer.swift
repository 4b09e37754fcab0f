import ChatCore
import ChatFrontend
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A real `chatd serve` on loopback port 0 (the port it got read back) with temporary directories,
/// for end-to-end tests and benchmarks. Talks to it only as a client does.
public final class TestServer: @unchecked Sendable {
    public let port: Int
    /// The address it listens on: loopback, or a namespace host's (`NetworkNamespaces`).
    public let host: String
    public let dataDir: String
    public let secret: String
    public let process: Process
    public let logPath: String
    private let auth: Authenticator

    /// The chatd binary: `CHATD_BINARY`, or the one built beside the test bundle.
    public static func binary() throws -> String {
        if let path = ProcessInfo.processInfo.environment["CHATD_BINARY"] { return path }
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
            Bundle.main.bundleURL.deletingLastPathComponent(),
            Bundle.main.bundleURL,
        ].map { $0.appendingPathComponent("chatd").path }
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw TestServerError(description: "chatd binary not found in \(candidates); build it or set CHATD_BINARY")
        }
        return found
    }

    /// A new directory under /tmp (short: ipc paths must fit in 107 bytes).
    public static func temporaryDirectory() throws -> String {
        var template = Array("/tmp/chatd-test-XXXXXX".utf8CString)
        guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }).map({ String(cString: $0) }) else {
            throw TestServerError(description: "mkdtemp failed")
        }
        return dir
    }

    /// `count` consecutive loopback ports nobody listens on right now, below
    /// the kernel's ephemeral range (32768 up), which outgoing connections
    /// draw from: a TCP bus takes a base port and the ones after it.
    public static func freePorts(_ count: Int) throws -> Int {
        for _ in 0..<100 {
            let base = Int.random(in: 20_000..<(32_000 - count))
            if (try? (base..<base + count).allSatisfy({ try freePort($0) == $0 })) == true { return base }
        }
        throw TestServerError(description: "no \(count) free consecutive ports")
    }

    /// 127.0.0.1:`port` as a socket address.
    public static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    /// A loopback port nobody listens on right now (`wanted`, or any).
    public static func freePort(_ wanted: Int = 0) throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = loopback(port: wanted)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else { throw TestServerError(description: "no free port: \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Starts `chatd serve` and waits until `/healthz` answers 200.
    /// - Parameters:
    ///   - port: a fixed port (a restart on the same port); nil: port 0, and
    ///     the port the server got is read from `ctl status` (`listen`).
    ///   - configFile: passed as `--config` (a YAML file).
    ///   - socketActivated: started by `systemd-socket-activate`, which
    ///     listens on the port and execs chatd with the socket (LISTEN_FDS)
    ///     when the first connection arrives.
    ///   - dataDir: the data directory (default: a new temporary one).
    ///   - umask: the umask chatd starts with (octal, e.g. `"000"`): it is
    ///     exec-ed by `/bin/sh` after `umask`, so the test process keeps its own.
    ///   - frontends: frontend processes sharing the port (`frontends:`); one
    ///     unless a test is about several, so that `childPIDs(matching:)`
    ///     finds one frontend and the others stay as they were.
    ///   - jwtSecret: the HS256 secret (several frontend hosts share one); nil: a new random one.
    ///   - healthy: wait for `/healthz` 200; false: for any answer (a
    ///     `run: frontend` host whose workers are not there yet answers 503).
    public static func start(
        storeWorkers: Int = 1, frontends: Int = 1, port: Int? = nil, configFile: String? = nil, environment: [String: String] = [:], timeout: Double = 30,
        socketActivated: Bool = false, dataDir: String? = nil, umask: String? = nil, jwtSecret: String? = nil, healthy: Bool = true
    ) async throws -> TestServer {
        let dir = try dataDir ?? temporaryDirectory()
        // systemd-socket-activate listens before chatd runs: it needs a port named.
        let fixed = socketActivated ? try port ?? freePort() : port
        let secret = jwtSecret ?? randomSecret()
        let process = Process()
        let arguments = [try binary(), "serve", "--die-with-parent"] + (configFile.map { ["--config", $0] } ?? [])
        var env = ProcessInfo.processInfo.environment
        env["CHAT_LISTEN"] = "127.0.0.1:\(fixed ?? 0)"
        env["CHAT_DATA_DIR"] = dir
        env["CHAT_JWT_SECRET"] = secret
        env["CHAT_STORE_WORKERS"] = String(storeWorkers)
        env["CHAT_FRONTENDS"] = String(frontends)
        env["CHAT_LOG_LEVEL"] = env["CHAT_LOG_LEVEL"] ?? "info"
        // CHATD_TEST_POSTGRES=1: the data in a database of its own (the same one again for the same data directory).
        if PostgresServer.enabled { env["CHAT_DATABASE_URL"] = try PostgresServer.databaseURL(forDataDir: dir) }
        for (key, value) in environment { env[key] = value }
        if socketActivated {
            // It passes on only the variables named with -E (and PATH, HOME ...).
            let passed = env.filter { $0.key.hasPrefix("CHAT_") || environment[$0.key] != nil }.flatMap { ["-E", "\($0.key)=\($0.value)"] }
            process.executableURL = URL(fileURLWithPath: "/usr/bin/systemd-socket-activate")
            process.arguments = ["--listen=127.0.0.1:\(fixed ?? 0)", "--fdname=http"] + passed + arguments
        } else if let umask {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "umask \(umask) && exec \"$0\" \"$@\""] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: arguments[0])
            process.arguments = Array(arguments.dropFirst())
        }
        process.environment = env
        let logPath = dir + "/chatd.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardError = log
        process.standardOutput = log
        try process.run()
        let runtimeDir = env["CHAT_RUNTIME_DIR"] ?? dir + "/run"
        let port = if let fixed { fixed } else { try await boundPort(runtimeDir: runtimeDir, process: process, timeout: timeout, logPath: logPath) }
        let server = TestServer(
            port: port, dataDir: dir, secret: secret, process: process, logPath: logPath, auth: await Authenticator(secret: secret)
        )
        do {
            try await server.waitUntil(timeout: timeout, healthy ? "healthz 200" : "healthz answers") {
                let status = try? await server.request("GET", "/healthz").status
                return healthy ? status == 200 : status != nil
            }
        } catch {
            server.stop()
            throw TestServerError(description: "\(error)\n--- server log ---\n\(server.log)")
        }
        return server
    }

    /// A new HS256 secret: 64 hex digits.
    public static func randomSecret() -> String {
        (0..<4).map { _ in String(format: "%016llx", UInt64.random(in: 0...UInt64.max)) }.joined()
    }

    /// The port a server started with `listen` on port 0 got: the `listen`
    /// of its `ctl status`, asked on its control socket as soon as that exists.
    static func boundPort(runtimeDir: String, process: Process, timeout: Double, logPath: String) async throws -> Int {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && process.isRunning {
            if let answer = try? control(runtimeDir + "/control.sock", "status"),
                let status = try? JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any],
                let listen = status["listen"] as? String, let colon = listen.lastIndex(of: ":"),
                let port = Int(listen[listen.index(after: colon)...]) {
                return port
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        throw TestServerError(description: "no listening address in ctl status\n--- server log ---\n\(log)")
    }

    /// One command on the supervisor's control socket (what `chatd ctl` does): its answer.
    public static func control(_ path: String, _ command: String) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw TestServerError(description: "path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw TestServerError(description: "connect \(path): \(errno)") }
        var limit = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        let line = Array((command + "\n").utf8)
        guard line.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == line.count else {
            throw TestServerError(description: "send \(path): \(errno)")
        }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            answer += buffer[0..<count]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    init(port: Int, host: String = "127.0.0.1", dataDir: String, secret: String, process: Process, logPath: String, auth: Authenticator) {
        self.port = port
        self.host = host
        self.dataDir = dataDir
        self.secret = secret
        self.process = process
        self.logPath = logPath
        self.auth = auth
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// SIGTERM and wait for exit (SIGKILL after `grace`); returns the exit status.
    @discardableResult
    public func stop(grace: Double = 15, keepData: Bool = false) -> Int32 {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(grace)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        // CHATD_KEEP_TEST_DATA=1 keeps every server's directory (and log) for a post-mortem.
        if !keepData && ProcessInfo.processInfo.environment["CHATD_KEEP_TEST_DATA"] == nil {
            PostgresServer.dropDatabase(forDataDir: dataDir)
            try? FileManager.default.removeItem(atPath: dataDir)
        }
        return process.terminationStatus
    }

    deinit { if process.isRunning { stop() } }

    /// Pids of the supervisor's children whose command line contains `needle`.
    /// A standby (`chatd worker --standby --role R`) counts as the worker it
    /// was promoted to, under the command line a worker of that name is
    /// started with (`--role R --shard N`, the name from `ctl status`), and
    /// not at all while it waits: callers look for the process serving a
    /// role, which the command line alone no longer says.
    public func childPIDs(matching needle: String) -> [Int32] {
        let parent = process.processIdentifier
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var names: [Int32: String]?
        return entries.compactMap(Int32.init).filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")") else { return false }
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            guard fields.count > 1, Int32(fields[1]) == parent else { return false }
            var cmdline = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))).map {
                String(decoding: $0.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            } ?? ""
            if cmdline.contains(" --standby ") {
                if names == nil { names = childNames() }
                // Promoted: `store.3` has `--role store --shard 3`.
                guard let name = names?[pid], let dot = name.firstIndex(of: ".") else { return false }
                let role = name[..<dot], index = name[name.index(after: dot)...]
                cmdline = cmdline.replacingOccurrences(of: " --standby --role \(role) ", with: " --role \(role) --shard \(index) ")
            }
            return cmdline.contains(needle)
        }
    }

    /// Pids of the frontends now running.
    public var frontendPIDs: [Int32] { childPIDs(matching: " frontend --shards ").sorted() }

    /// The frontend process holding the server side of `client`'s connection,
    /// found as the kernel knows it, with nothing added to the server: the
    /// client's local port names the server's socket in /proc/net/tcp (the
    /// one whose remote port it is), whose inode is among that frontend's
    /// descriptors (`socket:[inode]` in /proc/<pid>/fd).
    public func frontendPID(serving client: WebSocketClient) -> Int32? {
        guard let clientPort = Self.localPort(client.fd), let inode = Self.serverSocketInode(serverPort: port, clientPort: clientPort) else { return nil }
        let wanted = "socket:[\(inode)]"
        return frontendPIDs.first { pid in
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
            return fds.contains { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) == wanted }
        }
    }

    /// The port a socket is bound to on this side.
    static func localPort(_ fd: Int32) -> Int? {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
        }
        return named ? Int(UInt16(bigEndian: address.sin_port)) : nil
    }

    /// The inode of the accepted socket from `serverPort` to `clientPort`
    /// (/proc/net/tcp and tcp6: `sl local rem st ... inode`, ports in hex).
    static func serverSocketInode(serverPort: Int, clientPort: Int) -> String? {
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = readWhole(table) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                func port(_ field: Substring) -> Int? { field.split(separator: ":").last.flatMap { Int($0, radix: 16) } }
                // Inode 0: a socket in TIME_WAIT, owned by nobody.
                guard fields.count > 9, port(fields[1]) == serverPort, port(fields[2]) == clientPort, fields[9] != "0" else { continue }
                return String(fields[9])
            }
        }
        return nil
    }

    /// A /proc file read to its end. Its size says 0, and the kernel gives it
    /// a page per read: a reader that trusts the size or one read gets only
    /// the first sockets of /proc/net/tcp.
    static func readWhole(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += buffer[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Each serving child's name by pid (`store.0`), from `ctl status`.
    public func childNames() -> [Int32: String] {
        let rows = ((try? status())?["children"] as? [[String: Any]]) ?? []
        var names: [Int32: String] = [:]
        for row in rows {
            if let pid = row["pid"] as? Int, let name = row["child"] as? String { names[Int32(pid)] = name }
        }
        return names
    }

    /// The supervisor's `ctl status`, asked on its control socket (no
    /// `chatd ctl` process started: fast enough to poll).
    public func status() throws -> [String: Any] {
        let runtime = process.environment?["CHAT_RUNTIME_DIR"] ?? dataDir + "/run"
        let answer = try Self.control(runtime + "/control.sock", "status")
        return (try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any]) ?? [:]
    }

    /// Polls `condition` until it holds or `timeout` passes.
    public func waitUntil(timeout: Double = 10, _ what: String = "condition", _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestServerError(description: "timed out waiting for \(what)")
    }

    // MARK: Client side

    public func token(sub: String, email: String? = nil, name: String? = nil, expiresIn: Double = 3600) async throws -> String {
        try await auth.mint(ChatClaims(sub: sub, expires: Date().addingTimeInterval(expiresIn), email: email ?? "\(sub)@example.com", name: name))
    }

    public struct HTTPResult: @unchecked Sendable {
        public var status: Int
        public var body: Data
        public var headers: [String: String]
        public var json: Any? { try? JSONSerialization.jsonObject(with: body) }
        public var object: [String: Any] { (json as? [String: Any]) ?? [:] }
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// One HTTP request to the server.
    public func request(
        _ method: String, _ path: String, token: String? = nil, json: Any? = nil, body: Data? = nil,
        headers: [String: String] = [:], timeout: Double = 30
    ) async throws -> HTTPResult {
        try await Self.request(host: host, port: port, method, path, token: token, json: json, body: body, headers: headers, timeout: timeout)
    }

    /// One HTTP request to a chatd at `host`:`port`, started here or not (chatd-load's `--target`).
    public static func request(
        host: String, port: Int, _ method: String, _ path: String, token: String? = nil, json: Any? = nil, body: Data? = nil,
        headers: [String: String] = [:], timeout: Double = 30
    ) async throws -> HTTPResult {
        var request = URLRequest(url: URL(string: "http://\(host):\(port)\(path)")!)
        request.httpMethod = method
        request.timeoutInterval = timeout
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let json {
            request.httpBody = try JSONSerialization.data(withJSONObject: json)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        if let body { request.httpBody = body }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        var fields: [String: String] = [:]
        for (key, value) in http.allHeaderFields { fields["\(key)".lowercased()] = "\(value)" }
        return HTTPResult(status: http.statusCode, body: data, headers: fields)
    }

    /// A group room of `count` new users `<prefix>-0` ... (the first creates
    /// it), each provisioned by a first request: the subjects and tokens, in order.
    public func room(of count: Int, prefix: String, name: String) async throws -> (id: String, subs: [String], tokens: [String]) {
        let subs = (0..<count).map { "\(prefix)-\($0)" }
        var tokens: [String] = []
        for sub in subs {
            let token = try await self.token(sub: sub)
            _ = try await request("GET", "/api/chat/rooms/", token: token)
            tokens.append(token)
        }
        let created = try await request("POST", "/api/chat/rooms/", token: tokens[0], json: [
            "name": name, "participant_ids": subs.dropFirst().map(IDs.userID(forSubject:)),
        ])
        guard let room = created.object["id"] as? String else { throw TestServerError(description: created.text) }
        return (room, subs, tokens)
    }

    /// Runs `chatd ctl <words>` against this server; returns what it printed.
    public func ctl(_ words: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.binary())
        process.arguments = ["ctl"] + words
        process.environment = ProcessInfo.processInfo.environment.merging(["CHAT_DATA_DIR": dataDir]) { $1 }
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// Opens a WebSocket with the token in the `Authorization` header.
    public func webSocket(_ path: String, token: String?) throws -> WebSocketClient {
        try WebSocketClient(host: host, port: port, path: path, headers: token.map { ["Authorization": "Bearer \($0)"] } ?? [:])
    }
}

public struct TestServerError: Error, CustomStringConvertible {
    public let description: String

    public init(description: String) {
        self.description = description
    }
}
