import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real coturn TURN server on 127.0.0.1 for the calls tests: it takes
/// TURN REST API credentials (`--use-auth-secret`, `--static-auth-secret`),
/// the kind chatd mints from `calls.turnSecret`, and `allocates` proves a
/// credential by a real allocation (`turnutils_uclient`), not by
/// recomputing the HMAC the way chatd does.
///
/// Debian's coturn (4.6.1): no configuration file (`-n`), no CLI, no
/// TLS/DTLS; UDP and TCP on one free loopback port, relays on loopback; its
/// log, pid file and SQLite user database in a temporary directory. Started
/// through `setpriv --pdeathsig` (which execs in place, so the pid is the
/// server's): a killed test run leaves no server behind.
public final class TurnServer: @unchecked Sendable {
    /// Whether coturn's `turnserver` and `turnutils_uclient` are installed (PATH or /usr/bin).
    public static var isInstalled: Bool { find("turnserver") != nil && find("turnutils_uclient") != nil }

    public let port: Int
    public let realm: String
    private let directory: String
    private let process: Process
    private let lock = NSLock()
    private var stopped = false

    private var logPath: String { directory + "/turnserver.log" }

    /// A server sharing `secret` with whoever mints the credentials, on a
    /// free loopback port; returns once it accepts TCP connections (10 s at most).
    public static func start(secret: String) throws -> TurnServer {
        guard let turnserver = find("turnserver"), find("turnutils_uclient") != nil else {
            throw TestServerError(description: "no coturn: turnserver or turnutils_uclient not found (apt-get install coturn)")
        }
        return try TurnServer(turnserver: turnserver, secret: secret, port: try TestServer.freePorts(1),
                              directory: try TestServer.temporaryDirectory())
    }

    private init(turnserver: String, secret: String, port: Int, directory: String) throws {
        let realm = "chatd.test"
        (self.port, self.realm, self.directory) = (port, realm, directory)
        let process = Process()
        let launcher = FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") ? ["/usr/bin/setpriv", "--pdeathsig=TERM"] : []
        // --verbose: the log then says "ALLOCATE processed, success" per grant, which `allocates` waits for.
        let command = launcher + [turnserver, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--listening-port=\(port)",
                                  "--use-auth-secret", "--static-auth-secret=\(secret)", "--realm=\(realm)",
                                  "--no-cli", "--no-tls", "--no-dtls", "--allow-loopback-peers", "--verbose",
                                  "--log-file=\(directory)/turnserver.log", "--simple-log", "--no-stdout-log",
                                  "--pidfile=\(directory)/turnserver.pid", "--userdb=\(directory)/turndb"]
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        self.process = process
        do {
            // The parent-death signal follows the thread that spawns, so one that stays.
            try PostgresServer.spawnOnAThreadThatStays(process)
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        let deadline = Date().addingTimeInterval(10)
        while !Self.listening(port) {
            guard Date() < deadline, process.isRunning else {
                let tail = logTail()
                stop()
                throw TestServerError(description: "turnserver did not listen on 127.0.0.1:\(port) within 10 s\n\(tail)")
            }
            usleep(20_000)
        }
    }

    /// Runs turnutils_uclient for one real allocation with these credentials; true when the server granted it.
    ///
    /// Granted: the server logs `user <username>: incoming packet ALLOCATE
    /// processed, success` within milliseconds; the client is then ended
    /// rather than waited for (it idles a random 1-6 s before it would exit 0).
    /// Refused (wrong secret, expired, malformed): the server answers 401
    /// and the client gives up at once (exit 255, "Cannot complete Allocation").
    public func allocates(username: String, credential: String) throws -> Bool {
        guard let uclient = Self.find("turnutils_uclient") else { throw TestServerError(description: "no turnutils_uclient") }
        guard !lock.withLock({ stopped }), process.isRunning else {
            throw TestServerError(description: "turnserver is not running\n\(logTail())")
        }
        let offset = log().count
        let granted = "user <\(username)>: incoming packet ALLOCATE processed, success"
        let client = Process()
        client.executableURL = URL(fileURLWithPath: uclient)
        // -y: two clients relaying to each other (no peer process); -c: no RTCP pair; -n 0: allocate, send nothing.
        client.arguments = ["-u", username, "-w", credential, "-p", "\(port)", "-y", "-c", "-n", "0", "-m", "1", "127.0.0.1"]
        client.standardOutput = FileHandle.nullDevice
        client.standardError = FileHandle.nullDevice
        try client.run()
        defer { Self.end(client, within: 2) }
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if String(decoding: log().dropFirst(offset), as: UTF8.self).contains(granted) { return true }
            if !client.isRunning {
                // A grant's line is written before the client can have exited (seconds later).
                usleep(100_000)
                return String(decoding: log().dropFirst(offset), as: UTF8.self).contains(granted)
            }
            usleep(20_000)
        }
        throw TestServerError(description: "turnutils_uclient: no verdict within 15 s\n\(logTail())")
    }

    /// SIGTERM to the server this started (by its pid), SIGKILL if it has
    /// not exited within 5 s; then its directory goes (kept with `CHATD_KEEP_TEST_DATA`).
    public func stop() {
        let first = lock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        Self.end(process, within: 5)
        if ProcessInfo.processInfo.environment["CHATD_KEEP_TEST_DATA"] == nil { try? FileManager.default.removeItem(atPath: directory) }
    }

    deinit { stop() }

    private func log() -> Data { FileManager.default.contents(atPath: logPath) ?? Data() }

    private func logTail() -> String { "turnserver log (\(logPath)):\n" + String(decoding: log().suffix(4000), as: UTF8.self) }

    /// Signals only a process Foundation has not reaped (`isRunning`), so never a reused pid.
    private static func end(_ process: Process, within seconds: Int) {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        for _ in 0..<(seconds * 40) where process.isRunning { usleep(25_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for _ in 0..<80 where process.isRunning { usleep(25_000) }
    }

    private static func listening(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = TestServer.loopback(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    static func find(_ name: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        return (path + ["/usr/bin"]).map { $0 + "/" + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
