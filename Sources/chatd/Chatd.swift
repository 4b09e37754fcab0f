import ArgumentParser
import ChatBus
import ChatConfig
import ChatCore
import ChatFrontend
import ChatMetrics
import ChatPostgres
import ChatStore
import ChatSupervisor
import ChatWire
import ChatWorkers
import Foundation
import Logging
import Synchronization
import Systemd

@main
struct Chatd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatd",
        abstract: "A real-time chat server: REST and WebSockets in front, workers and SQLite behind.",
        version: ChatdVersion.version,
        subcommands: [Serve.self, FrontendCommand.self, WorkerCommand.self, Ctl.self, Token.self, Migrate.self, Backup.self, Keygen.self, Version.self],
        defaultSubcommand: Serve.self
    )
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print chatd's version (as --version does).")

    func run() { print(ChatdVersion.version) }
}

/// A refusal for the operator: printed as it is, without the usage text.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Options every subcommand takes.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "YAML config file; CHAT_* environment variables override it.")
    var config: String?

    /// Every chatd process starts here, so this is where the umask is set:
    /// before anything is created, and inherited by the children `serve` spawns.
    func load(readingKeyFiles: Bool = true) async throws -> ChatConfig {
        PrivateFiles.restrictUmask()
        return try await ChatConfig.load(file: config, readingKeyFiles: readingKeyFiles)
    }

    /// The process's logger, every other `Logger(label:)` of the process
    /// (the access log's) writing as it does: `logFormat`, `logLevel`.
    /// `role` names the process in JSON lines: the supervisor's name for a
    /// child (`CHATD_CHILD`), or `fallback` (`supervisor`, a command's name).
    func logger(_ label: String, _ config: ChatConfig, role fallback: String) -> Logger {
        let level = Logger.Level(rawValue: config.logLevel) ?? .info
        let role = ProcessInfo.processInfo.environment["CHATD_CHILD"].flatMap { $0.isEmpty ? nil : $0 } ?? fallback
        LogOutput.bootstrap(format: config.logFormat, level: level, role: role)
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}

/// Exits when the parent process goes away (we are reparented), so children
/// of a killed supervisor, or a server of a crashed test run, do not linger.
/// Polled rather than PR_SET_PDEATHSIG, which fires when the spawning
/// *thread* exits, and the supervisor spawns from a dispatch queue's threads.
/// - Parameter spawned: a child of the supervisor (`CHATD_SUPERVISOR_PID`
///   names it): a supervisor that died before this process first asked is
///   not taken for its parent (the process it was handed to instead would
///   be, for ever).
func exitWithParent(spawned: Bool = false) {
    let named = spawned ? ProcessInfo.processInfo.environment[Supervisor.pidVariable].flatMap { Int32($0) } : nil
    let parent = named ?? getppid()
    if getppid() != parent { parentGone(parent) }
    let timer = DispatchSource.makeTimerSource(queue: .global())
    timer.schedule(deadline: .now() + 0.5, repeating: 0.5)
    timer.setEventHandler {
        if getppid() != parent { parentGone(parent) }
    }
    timer.resume()
    // Kept alive for the life of the process.
    ParentWatch.timer = timer
}

private func parentGone(_ parent: Int32) -> Never {
    FileHandle.standardError.write(Data("chatd: parent \(parent) is gone, exiting\n".utf8))
    exit(0)
}

enum ParentWatch {
    // Set once at startup, before any other thread reads it.
    nonisolated(unsafe) static var timer: (any DispatchSourceTimer)?
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the supervisor: frontend and workers, restarted when they exit.")
    @OptionGroup var options: CommonOptions
    @Flag(help: .hidden) var dieWithParent = false

    func run() async throws {
        // Test harnesses pass this so a crashed test run leaves no server behind.
        if dieWithParent { exitWithParent() }
        let config = try await options.load()
        try config.checkBusExposure()
        try config.checkPeerExposure()
        try BusSecurity.check(config.busKeys, keyFile: config.busKeyFile)
        if config.collectsMetrics { ChatMetrics.bootstrap() }
        let logger = options.logger("chatd.supervisor", config, role: "supervisor")
        // Private whatever they were: the data and runtime directories (an
        // existing one included) are 0700 before anything goes in them.
        try PrivateFiles.directory(config.dataDir)
        try PrivateFiles.directory(config.resolvedRuntimeDir)
        // Migrate once here, so workers never race each other over the schema;
        // the database lives where the workers run.
        if config.run.runsWorkers { _ = try StoreEngines.open(config, migrate: true, logger: logger) }
        _ = try config.verifyingJWTSecret()
        PrivateFiles.narrow((config.dataDir as NSString).appendingPathComponent("jwt-secret"))
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let options = self.options
        let supervisor = Supervisor(
            config: config, reload: { try await options.load() }, executable: executable,
            baseArguments: options.config.map { ["--config", $0] } ?? [], logger: logger
        )
        let status = try supervisor.run()
        if status != 0 { throw ExitCode(status) }
    }
}

struct FrontendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "frontend", abstract: "Run the frontend (spawned by serve).")
    @OptionGroup var options: CommonOptions
    @Option(help: "Store shard count, as resolved by the supervisor.") var shards: Int?

    func run() async throws {
        exitWithParent(spawned: true)
        let config = try await options.load()
        if config.collectsMetrics { ChatMetrics.bootstrap() }
        let logger = options.logger("chatd.frontend", config, role: "frontend")
        let frontendID = "fe-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        try await Frontend.run(
            config: FrontendConfig(chat: config, frontendID: frontendID, storeShards: shards ?? config.resolvedStoreWorkers),
            logger: logger
        )
    }
}

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "worker", abstract: "Run one worker (spawned by serve).")
    @OptionGroup var options: CommonOptions
    @Option(help: "Worker role.") var role: String = "store"
    @Option(help: "Shard this worker owns.") var shard: Int = 0
    @Option(help: "Store shard count.") var shards: Int?
    @Flag(help: "Start as the role's warm standby: connect, then wait on standard input for the worker to become (spawned by serve).")
    var standby = false

    func run() async throws {
        exitWithParent(spawned: true)
        let config = try await options.load()
        if config.collectsMetrics { ChatMetrics.bootstrap() }
        var logger = options.logger("chatd.worker", config, role: "worker")
        guard let role = Role(rawValue: role), shard >= 0 else { throw ValidationError("unknown role \(self.role) or shard \(shard)") }
        let name = WorkerName(role, shard)
        logger[metadataKey: "worker"] = standby ? "\(StandbyName(role))" : "\(name)"
        let stop = StopFlag()
        let database = try StoreEngines.open(config, migrate: false, logger: logger)
        // A link to every frontend host's broker (`peers`); the shard count is
        // checked where another host's frontends route rooms by theirs.
        let server = try BusServer(
            role: role, shard: shard, buses: config.workerBuses, logger: logger,
            expectedShards: config.run == .workers ? config.resolvedStoreWorkers : nil, security: BusSecurity(keys: config.busKeys))
        logger.info("worker ready", metadata: ["pid": "\(getpid())"])
        // Heartbeats to the supervisor (sd_notify) under this child's name.
        let report = ChildReport(name: ProcessInfo.processInfo.environment["CHATD_CHILD"] ?? (standby ? "\(StandbyName(role))" : name.description))
        let metrics = config.collectsMetrics ? MetricsReporter(child: report.name, logger: logger) : nil
        // PostgreSQL store workers serve their shard only while they hold its
        // lock (docs/protocol.md, "Several workers hosts"); a waiting one is
        // ready (a spare, as a standby is) and connects no queue.
        let owner = try StoreEngines.shardOwner(config, role: role, logger: logger)
        let beat: (Bool) -> Void = { serving in
            owner?.check()
            report.heartbeat(serving: serving)
        }
        if standby {
            WorkerLoops.warmUp(role, database: database, logger: logger)
            try server.runStandby(assignments: STDIN_FILENO, shouldStop: { stop.isSet }, heartbeat: beat) { assignment in
                logger[metadataKey: "worker"] = "\(assignment.worker)"
                report.become(assignment.worker.description)
                metrics?.rename(assignment.worker.description)
                LogOutput.rename(role: assignment.worker.description)
                if let owner, !owner.waitForLock(shard: assignment.worker.index, shouldStop: { stop.isSet }, heartbeat: { report.heartbeat(serving: true) }) {
                    throw ExitCode.success
                }
                return try WorkerLoops.loop(role, database: database, config: config, logger: logger)
            }
        } else {
            if let owner, !owner.waitForLock(shard: shard, shouldStop: { stop.isSet }, heartbeat: { report.heartbeat(serving: true) }) {
                logger.info("worker stopped")
                return
            }
            let loop = try WorkerLoops.loop(role, database: database, config: config, logger: logger)
            try server.run(
                maxBatch: loop.maxBatch, shouldStop: { stop.isSet }, nudge: loop.nudge, wakeOn: loop.wakeOn, heartbeat: beat,
                idleInterval: loop.idleInterval, idle: loop.idle, handle: loop.handle
            )
        }
        logger.info("worker stopped")
        withExtendedLifetime(metrics) {}
    }
}

/// A worker's reports to the supervisor (sd_notify): READY=1 once it serves
/// (the bus echoed it; a standby: echoed and waiting), WATCHDOG=1 otherwise,
/// waiting for the bus included (alive, not hung). A promoted standby reports
/// under its new name, and says READY=1 again under it.
final class ChildReport {
    private let supervisor = Notifier()
    private(set) var name: String
    private var announced = false

    init(name: String) { self.name = name }

    func become(_ name: String) {
        self.name = name
        announced = false
    }

    func heartbeat(serving: Bool) {
        supervisor.send([serving && !announced ? "READY" : "WATCHDOG": "1", "CHATD_CHILD": name])
        if serving { announced = true }
    }
}

/// Set by SIGTERM/SIGINT; a worker finishes its batch and exits.
final class StopFlag: Sendable {
    /// A plain handler, installed at once: a dispatch signal source needs the
    /// signal ignored and registers later, on another thread, and a SIGTERM in
    /// between (a rolling restart of a worker that just started) was lost.
    private static let requested = Atomic<Bool>(false)

    init() {
        _ = Self.requested.load(ordering: .relaxed)  // initialised before any handler runs
        for sig in [SIGTERM, SIGINT] {
            signal(sig) { _ in StopFlag.requested.store(true, ordering: .relaxed) }
        }
    }

    var isSet: Bool { Self.requested.load(ordering: .relaxed) }
}

struct Ctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Control a running server: status (tables; --json for scripts), restart <child|role> (rolling), upgrade (every child from the binary on disk), scale <role> <n>.",
        discussion: "Talks to the supervisor's control socket in the runtime directory (same user or root only)."
    )
    @OptionGroup var options: CommonOptions
    @Argument(help: "status | restart <child|role> | upgrade | scale <role> <n>") var words: [String]
    @Flag(help: "status: the control socket's JSON, for scripts, instead of the tables.") var json = false

    func run() async throws {
        let config = try await options.load()
        let runtimeDir = URL(fileURLWithPath: config.resolvedRuntimeDir).standardized.path
        let socket = (runtimeDir as NSString).appendingPathComponent("control.sock")
        guard FileManager.default.fileExists(atPath: socket) else {
            throw CommandFailure("no chatd running with runtime directory \(runtimeDir) (control socket \(socket) not found); "
                + "pass the server's --config, or set CHAT_DATA_DIR or CHAT_RUNTIME_DIR as it has them")
        }
        let answer: String
        do {
            answer = try Control.send(runtimeDir: runtimeDir, command: words.joined(separator: " "))
        } catch let error as NSError {
            // NSError's own description on Linux drops the message ("(null)").
            throw CommandFailure(error.localizedDescription)
        }
        if words == ["status"], !json, let table = StatusTable.render(answer) {
            print(table, terminator: "")
            return
        }
        print(answer, terminator: answer.hasSuffix("\n") ? "" : "\n")
        if answer.contains("\"error\"") { throw ExitCode(1) }
    }
}

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Mint a development JWT for the configured HS256 secret.")
    @OptionGroup var options: CommonOptions
    @Option(help: "Subject (user) of the token.") var sub: String
    @Option(help: "Email claim.") var email: String?
    @Option(help: "Display name claim.") var name: String?
    @Option(help: "Lifetime in seconds.") var ttl: Int = 3600

    func run() async throws {
        let config = try await options.load()
        // With a JWKS alone the server verifies no HS256 token: minting one
        // with a generated secret would only produce tokens it refuses.
        guard config.jwks == nil || config.jwtSecret?.isEmpty == false else {
            throw ConfigError.invalid("jwtSecret", "none configured, and with auth.jwks set the server verifies HS256 only with a configured secret")
        }
        // Never generated here: a secret the server does not have only makes tokens it refuses.
        var secret = config.jwtSecret ?? ""
        if secret.isEmpty {
            let path = URL(fileURLWithPath: config.jwtSecretPath).standardized.path
            secret = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            guard !secret.isEmpty else {
                throw CommandFailure("no secret at \(path): start the server first or pass --config (or set CHAT_DATA_DIR as the server has it)")
            }
        }
        let auth = await Authenticator(secret: secret)
        let claims = ChatClaims(sub: sub, expires: Date().addingTimeInterval(Double(ttl)), email: email, name: name)
        print(try await auth.mint(claims))
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create or upgrade the database schema, then exit.")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let config = try await options.load()
        if let url = config.database {
            let settings = try PostgresSettings(url: url)
            _ = try StoreEngines.open(config, migrate: true, logger: Logger(label: "chatd.migrate"))
            print("migrated postgres://\(settings.host):\(settings.port)/\(settings.database)")
            return
        }
        // The path in full, and whether a database was there: run from the
        // wrong directory or without the server's --config, this is how the
        // operator sees it was not the server's.
        let path = URL(fileURLWithPath: config.databasePath).standardized.path
        let existed = FileManager.default.fileExists(atPath: path)
        try PrivateFiles.directory(config.dataDir)
        _ = try ChatDatabase(path: path)
        print(existed ? "migrated \(path)" : "created \(path): there was no database there")
    }
}

struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy the chat database, consistent, while the server serves (SQLite's online backup).",
        discussion: """
            Finds the database as serve does (--config, CHAT_DATA_DIR). Writes to a temporary name beside the \
            destination and renames it into place. Not copied: the search index, which the server rebuilds from \
            the database, and the attachments under <dataDir>/files (copy those after this; docs/operations.md).
            """
    )
    @OptionGroup var options: CommonOptions
    @Argument(help: "The copy's path, or a directory to write chat.sqlite in.") var destination: String
    @Flag(help: "Replace the destination if it exists.") var force = false

    func run() async throws {
        let config = try await options.load()
        if config.database != nil {
            throw CommandFailure("the data is in PostgreSQL (database:): back it up with pg_dump (docs/operations.md)")
        }
        let source = URL(fileURLWithPath: config.databasePath).standardized.path
        do {
            let result = try DatabaseBackup.run(source: source, destination: destination, force: force)
            print("backed up \(source) to \(result.path): \(result.bytes) bytes, \(result.pages) pages, \(Int(result.milliseconds.rounded())) ms")
        } catch let failure as DatabaseBackup.Failure {
            throw CommandFailure(failure.description)
        } catch {
            throw CommandFailure("backing up \(source) to \(destination): \(error)")
        }
    }
}

struct Keygen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write this host's bus key pair (CURVE), and print the line for every host's peers file.",
        discussion: """
            Writes to --out, or to the configured bus.key (--config, CHAT_BUS_KEY), mode 0600; refuses to replace \
            an existing file without --force. The secret key never leaves the file: copy only the printed line, to \
            the peers file (bus.peerKeys) of every host of the deployment (docs/operations.md, "Bus keys").
            """
    )
    @OptionGroup var options: CommonOptions
    @Option(help: "Where to write the key pair (default: the configured bus.key).") var out: String?
    @Option(help: "This host's name in the peers file (default: the machine's host name).") var host: String?
    @Flag(help: "Replace an existing key file (every peers file must then get the new public key).") var force = false

    func run() async throws {
        // The key file the configuration names may not exist yet: it is what this writes.
        let config = try await options.load(readingKeyFiles: false)
        guard let path = out ?? config.busKeyFile else {
            throw CommandFailure("no --out given and no bus.key configured (pass --config, or set CHAT_BUS_KEY)")
        }
        let pair = try BusSecurity.newKeyPair()
        let name = host ?? ProcessInfo.processInfo.hostName
        let text = BusKeyFiles.keyPairText(publicKey: pair.publicKey, secretKey: pair.secretKey, host: name)
        try Self.write(Data(text.utf8), to: path, force: force)
        // A frontend host runs the broker: its line names the address peers connect to.
        let broker = config.run.runsFrontend ? config.busTCP.map { _ in config.bus ?? "" } : nil
        print("wrote \(URL(fileURLWithPath: path).standardized.path) (mode 0600)")
        print("public key: \(pair.publicKey)")
        print("add this line to the peers file (bus.peerKeys) of every host:")
        print(BusKeyFiles.peerLine(publicKey: pair.publicKey, host: name, broker: broker))
    }

    /// Created 0600 under a temporary name beside `path`, then published:
    /// a crash leaves the old pair or the new one, never half a file.
    /// Without `force` it is published with link(2), which fails if `path`
    /// exists by then (two keygens at once: one wins, the other says so,
    /// rather than both printing a key and one of them being lost); with
    /// it, renamed over. The directory is fsynced so the name survives a crash.
    static func write(_ data: Data, to path: String, force: Bool) throws {
        if FileManager.default.fileExists(atPath: path) && !force {
            throw CommandFailure("\(path) exists: pass --force to replace it (and give every peers file the new public key)")
        }
        let temporary = path + ".new-\(getpid())"
        guard let handle = PrivateFiles.create(temporary) else {
            throw CommandFailure("cannot create \(temporary): \(String(cString: strerror(errno)))")
        }
        defer { unlink(temporary) }
        do {
            try handle.write(contentsOf: data)
            try handle.synchronize()
            try handle.close()
        } catch {
            throw CommandFailure("writing \(temporary): \(error)")
        }
        if force {
            guard rename(temporary, path) == 0 else {
                throw CommandFailure("cannot rename \(temporary) to \(path): \(String(cString: strerror(errno)))")
            }
        } else if link(temporary, path) != 0 {
            let reason = errno == EEXIST ? "it was created meanwhile; pass --force to replace it" : String(cString: strerror(errno))
            throw CommandFailure("cannot create \(path): \(reason)")
        }
        let parent = (path as NSString).deletingLastPathComponent
        let directory = open(parent.isEmpty ? "." : parent, O_RDONLY | O_DIRECTORY)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
    }
}
