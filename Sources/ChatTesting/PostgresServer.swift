import Foundation
import Synchronization

/// A throwaway PostgreSQL for the end-to-end suite on PostgreSQL
/// (`CHATD_TEST_POSTGRES=1`): Debian's `initdb` and `postgres`
/// (`/usr/lib/postgresql/*/bin`), a data directory under /tmp that this test
/// process owns, listening on a free loopback port with trust authentication.
/// One server per test process, started on first use and shared; one fresh
/// database per `TestServer`, dropped when its data directory goes.
///
/// PostgreSQL refuses to run as root: as root, the server runs as the
/// `postgres` user Debian's package creates (`setpriv`, which execs, so the
/// pid is the postmaster's; with a parent-death signal, so a killed test run
/// leaves no server behind). It is stopped through its `Process` at exit.
///
/// `EndToEnd.MultiHost` starts one more of its own on a PostgreSQL host: a
/// network namespace, at that host's address (`NetworkNamespaces.startPostgres`).
public final class PostgresServer: Sendable {
    /// Whether the end-to-end suite runs on PostgreSQL.
    public static var enabled: Bool { ProcessInfo.processInfo.environment["CHATD_TEST_POSTGRES"] == "1" }

    /// The address it listens on (and `psql` and `url` use).
    public let address: String
    public let port: Int
    public let directory: String
    let binDir: String
    /// The postmaster (setpriv and `ip netns exec` exec in place): signalled
    /// only while Foundation has not reaped it, so never a reused pid.
    private let process: UncheckedProcess

    private static let shared = Mutex<PostgresServer?>(nil)

    /// The process's server, started on first use.
    public static func start() throws -> PostgresServer {
        try shared.withLock { server in
            if let server { return server }
            let started = try PostgresServer()
            server = started
            atexit { PostgresServer.shared.withLock { $0?.stop() } }
            return started
        }
    }

    private convenience init() throws {
        try self.init(directory: try TestServer.temporaryDirectory(), address: "127.0.0.1", port: try TestServer.freePort())
    }

    /// A server with its data under `directory` (made if missing; handed to
    /// the `postgres` user as root), listening on `address`:`port`, trusting
    /// loopback and, when given, the subnet `trusting` (CIDR); started
    /// through `launcher` when given (e.g. `ip netns exec <namespace>`,
    /// which execs in place, so the pid is still the postmaster's).
    public init(directory: String, address: String, port: Int, trusting subnet: String? = nil, launcher: [String] = []) throws {
        guard let bin = Self.findBinDir() else {
            throw TestServerError(description: "no PostgreSQL: /usr/lib/postgresql/*/bin/initdb not found (apt-get install postgresql)")
        }
        (binDir, self.directory, self.address, self.port) = (bin, directory, address, port)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let data = directory + "/data"
        let asRoot = getuid() == 0
        if asRoot { try Self.run("/bin/chown", ["postgres:postgres", directory]) }
        // C.UTF-8: lower()/ILIKE fold non-ASCII letters, as the contract's icontains does.
        try Self.run(bin + "/initdb", ["-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"], asPostgres: asRoot)
        if let subnet {
            let hba = try FileHandle(forWritingTo: URL(fileURLWithPath: data + "/pg_hba.conf"))
            hba.seekToEndOfFile()
            hba.write(Data("host all all \(subnet) trust\n".utf8))
            try hba.close()
        }
        let process = Process()
        // Durability is not under test: no fsync makes each test's database cheap.
        let arguments = [bin + "/postgres", "-D", data, "-p", "\(port)", "-k", directory, "-c", "listen_addresses=\(address)",
                         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=300"]
        Self.configure(process, arguments, asPostgres: asRoot, launcher: launcher)
        _ = FileManager.default.createFile(atPath: directory + "/postgres.log", contents: nil)
        let log = FileHandle(forWritingAtPath: directory + "/postgres.log")
        process.standardOutput = log
        process.standardError = log
        self.process = UncheckedProcess(process: process)
        try Self.spawnOnAThreadThatStays(process)
        do {
            try waitUntilReady()
        } catch {
            // A server that started but never answered would outlive the test run.
            stop()
            throw error
        }
    }

    /// Waits up to 30 s for `SELECT 1` to answer.
    private func waitUntilReady() throws {
        let deadline = Date().addingTimeInterval(30)
        while (try? psql("SELECT 1")) == nil {
            guard Date() < deadline, process.process.isRunning else {
                let log = (try? String(contentsOfFile: directory + "/postgres.log", encoding: .utf8)) ?? ""
                throw TestServerError(description: "PostgreSQL did not start on \(address):\(port)\n\(log)")
            }
            usleep(50_000)
        }
    }

    /// Whether Debian's PostgreSQL server is installed here.
    public static var isInstalled: Bool { findBinDir() != nil }

    /// Starts `process` from a thread that never ends: the parent-death
    /// signal follows the thread that spawned the server, not the process,
    /// and a pool thread that exits would take the server with it.
    static func spawnOnAThreadThatStays(_ process: Process) throws {
        let started = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<Void, any Error>?>(nil)
        let box = UncheckedProcess(process: process)
        Thread.detachNewThread {
            do {
                try box.process.run()
                outcome.withLock { $0 = .success(()) }
            } catch {
                outcome.withLock { $0 = .failure(error) }
            }
            started.signal()
            // Parked for the life of the test process.
            while true { sleep(UInt32.max) }
        }
        started.wait()
        try outcome.withLock { $0! }.get()
    }

    static func findBinDir() -> String? {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        return versions.sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }.map { "/usr/lib/postgresql/\($0)/bin" }
            .first { FileManager.default.isExecutableFile(atPath: $0 + "/initdb") }
    }

    static func configure(_ process: Process, _ arguments: [String], asPostgres: Bool, launcher: [String] = []) {
        let command = launcher + (asPostgres
            // INT is PostgreSQL's fast shutdown; TERM would wait for every client to leave.
            ? ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--pdeathsig=INT"] + arguments
            : arguments)
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        // The server's own working directory: root's may not be readable by postgres.
        process.currentDirectoryURL = URL(fileURLWithPath: "/tmp")
    }

    @discardableResult
    static func run(_ executable: String, _ arguments: [String], asPostgres: Bool = false, environment: [String: String] = [:]) throws -> String {
        let process = Process()
        configure(process, [executable] + arguments, asPostgres: asPostgres)
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestServerError(description: "\(executable) \(arguments.joined(separator: " ")) failed: \(output)")
        }
        return output
    }

    /// Runs one SQL statement as the superuser, giving up connecting after `connectTimeout` seconds.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres", connectTimeout: Int = 5) throws -> String {
        try Self.run(binDir + "/psql", ["-X", "-q", "-t", "-A", "-h", address, "-p", "\(port)", "-U", "postgres", "-d", database,
                                         "-v", "ON_ERROR_STOP=1", "-c", sql],
                     // A cut-off host fails in seconds rather than TCP's minutes.
                     environment: ["PGCONNECT_TIMEOUT": "\(connectTimeout)"])
    }

    /// A new, empty database; its `postgres://` URL.
    public func createDatabase() throws -> String {
        let name = "chatd_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        try psql("CREATE DATABASE \(name)")
        return url(name)
    }

    public func url(_ database: String) -> String { "postgres://postgres@\(address):\(port)/\(database)" }

    /// Drops the database of `url` (its connections are ended first).
    public func dropDatabase(url: String) {
        guard let name = url.split(separator: "/").last.map(String.init), name.hasPrefix("chatd_") else { return }
        _ = try? psql("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    /// The database of a test server's data directory: created on first
    /// use, its URL kept in the directory, so a restart finds the same data.
    public static func databaseURL(forDataDir dataDir: String) throws -> String {
        let file = dataDir + "/postgres-url"
        if let url = try? String(contentsOfFile: file, encoding: .utf8), !url.isEmpty { return url }
        let url = try start().createDatabase()
        // 0600, as everything in a data directory (EndToEnd.PrivateByDefault checks).
        guard FileManager.default.createFile(atPath: file, contents: Data(url.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw TestServerError(description: "cannot write \(file)")
        }
        return url
    }

    /// For a process a test starts itself (another host's supervisor): with
    /// `CHATD_TEST_POSTGRES=1` its data directory's database, else nothing
    /// (SQLite in the directory). `dropDatabase(forDataDir:)` undoes it.
    public static func environment(forDataDir dataDir: String) throws -> [String: String] {
        enabled ? ["CHAT_DATABASE_URL": try databaseURL(forDataDir: dataDir)] : [:]
    }

    /// The rows (one column each, one per line) of `sql` in the database of a data directory.
    public static func rows(_ sql: String, forDataDir dataDir: String) throws -> [String] {
        let url = try databaseURL(forDataDir: dataDir)
        let name = String(url.split(separator: "/").last ?? "")
        return try start().psql(sql, database: name).split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
    }

    /// Drops the database of a data directory that had one.
    public static func dropDatabase(forDataDir dataDir: String) {
        guard let url = try? String(contentsOfFile: dataDir + "/postgres-url", encoding: .utf8),
            let server = shared.withLock({ $0 }) else { return }
        server.dropDatabase(url: url)
    }

    /// SIGINT is PostgreSQL's fast shutdown: it ends the sessions and
    /// exits. (SIGTERM, the smart one, waits for every client to leave, and
    /// a chatd that outlived its test may never.) SIGKILL if it has not
    /// exited within 10 s; the directory goes only after.
    public func stop() {
        let postmaster = process.process
        // Foundation's Process reaps the postmaster: isRunning, not waitpid, says it ended.
        if postmaster.isRunning { kill(postmaster.processIdentifier, SIGINT) }
        for _ in 0..<400 where postmaster.isRunning { usleep(25_000) }
        if postmaster.isRunning { kill(postmaster.processIdentifier, SIGKILL) }
        for _ in 0..<200 where postmaster.isRunning { usleep(25_000) }
        if ProcessInfo.processInfo.environment["CHATD_KEEP_TEST_DATA"] == nil { try? FileManager.default.removeItem(atPath: directory) }
    }
}

/// A process handed to the thread that starts it.
struct UncheckedProcess: @unchecked Sendable { let process: Process }
