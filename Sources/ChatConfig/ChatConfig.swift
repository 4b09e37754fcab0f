import ChatWire
import Configuration
import Foundation
import SystemPackage

/// Every setting of chatd. Read from, in order of precedence: `CHAT_*`
/// environment variables, the config file (`--config`, YAML), the embedded
/// defaults below, so `chatd serve` runs with no file at all.
///
/// A key `chat.storeWorkers` is `storeWorkers:` under `chat:` in the file and
/// `CHAT_STORE_WORKERS` in the environment.
public struct ChatConfig: Sendable, Equatable {
    /// `host:port` the frontend listens on.
    public var listen: String = "127.0.0.1:8000"
    /// SQLite files, attachments, the generated development secret.
    public var dataDir: String = "./data"
    /// Control and notify sockets, and the bus's ipc endpoints; nil = `<dataDir>/run`.
    public var runtimeDir: String?
    /// The bus across hosts: `tcp://<broker host>:<base port>`. Nil: ipc
    /// files in the runtime directory (one host).
    public var bus: String?
    /// Allows a `tcp://` bus on a non-loopback address (`bus.insecure: true`,
    /// `CHAT_BUS_INSECURE`): the bus is neither authenticated nor encrypted
    /// (until CURVE), so anyone who reaches its ports reads every reply and
    /// pushes commands as any user. See `checkBusExposure`.
    public var busInsecure: Bool = false
    /// What `chatd serve` runs on this host: `all` (the broker, the frontend
    /// and every worker), `frontend` (the broker and the frontend; workers on
    /// other hosts), or `workers` (workers only, connecting to `bus`).
    public var run: String = "all"
    /// HS256 secret. Nil: one is generated into `<dataDir>/jwt-secret` on first start.
    public var jwtSecret: String?
    public var jwtIssuer: String?
    public var jwtAudience: String?
    /// Store shards; `auto` (0) = one per CPU.
    public var storeWorkers: Int = 0
    public var logLevel: String = "info"
    /// Most Unicode code points in a message's content.
    public var maxMessageChars: Int = 10_000
    /// Largest attachment upload.
    public var maxUploadBytes: Int = 25 << 20
    /// Largest JSON request body.
    public var maxBodyBytes: Int = 1 << 20
    /// Largest WebSocket message (one frame, or its fragments together).
    public var maxFrameBytes: Int = 64 << 10
    /// How long a command may stay unanswered (resends included) before the client gets 503.
    public var requestTimeoutMilliseconds: Int = 10_000
    /// How long before an unanswered command is resent.
    public var retryMilliseconds: Int = 750
    /// A child silent this long (no heartbeat) is killed and restarted (seconds).
    public var hangTimeoutSeconds: Double = 10
    /// Receipts workers (read status, typing, sessions).
    public var receiptsWorkers: Int = 1
    /// How long a `typing: true` counts (seconds).
    public var typingWindowSeconds: Double = 30
    /// A WebSocket silent this long (no frame, no pong) is closed (seconds).
    public var idleTimeoutSeconds: Double = 120
    /// Bytes queued to one slow WebSocket client before it is disconnected.
    public var maxOutboundBytes: Int = 4 << 20

    public init() {}

    /// Loads the configuration: environment over file over defaults.
    public static func load(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment) async throws -> ChatConfig {
        var providers: [any ConfigProvider] = [EnvironmentVariablesProvider(environmentVariables: environment)]
        if let file {
            providers.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(file)))
        }
        let reader = ConfigReader(providers: providers).scoped(to: "chat")
        var config = ChatConfig()
        config.listen = reader.string(forKey: "listen", default: config.listen)
        config.dataDir = reader.string(forKey: "dataDir", default: config.dataDir)
        config.runtimeDir = reader.string(forKey: "runtimeDir")
        config.bus = reader.string(forKey: "bus").flatMap { $0.isEmpty ? nil : $0 }
        config.busInsecure = reader.bool(forKey: "bus.insecure", default: config.busInsecure)
        config.run = reader.string(forKey: "run", default: config.run)
        guard ["all", "frontend", "workers"].contains(config.run) else { throw ConfigError.invalid("run", "\(config.run): all, frontend or workers") }
        if let bus = config.bus, config.busTCP == nil { throw ConfigError.invalid("bus", "\(bus): tcp://<host>:<port>") }
        if config.run != "all" && config.bus == nil { throw ConfigError.invalid("run", "\(config.run) needs bus: tcp://<host>:<port>") }
        config.jwtSecret = reader.string(forKey: "jwtSecret", isSecret: true)
        config.jwtIssuer = reader.string(forKey: "jwtIssuer")
        config.jwtAudience = reader.string(forKey: "jwtAudience")
        let workers = reader.string(forKey: "storeWorkers", default: "auto")
        guard workers == "auto" || Int(workers).map({ $0 > 0 }) == true else {
            throw ConfigError.invalid("storeWorkers", workers)
        }
        config.storeWorkers = Int(workers) ?? 0
        config.logLevel = reader.string(forKey: "logLevel", default: config.logLevel)
        config.maxMessageChars = reader.int(forKey: "maxMessageChars", default: config.maxMessageChars)
        config.maxBodyBytes = reader.int(forKey: "maxBodyBytes", default: config.maxBodyBytes)
        config.maxUploadBytes = reader.int(forKey: "maxUploadBytes", default: config.maxUploadBytes)
        config.maxFrameBytes = reader.int(forKey: "maxFrameBytes", default: config.maxFrameBytes)
        config.requestTimeoutMilliseconds = reader.int(forKey: "requestTimeoutMilliseconds", default: config.requestTimeoutMilliseconds)
        config.retryMilliseconds = reader.int(forKey: "retryMilliseconds", default: config.retryMilliseconds)
        config.hangTimeoutSeconds = reader.double(forKey: "hangTimeoutSeconds", default: config.hangTimeoutSeconds)
        config.receiptsWorkers = max(1, reader.int(forKey: "receiptsWorkers", default: config.receiptsWorkers))
        config.typingWindowSeconds = reader.double(forKey: "typingWindowSeconds", default: config.typingWindowSeconds)
        config.idleTimeoutSeconds = reader.double(forKey: "idleTimeoutSeconds", default: config.idleTimeoutSeconds)
        config.maxOutboundBytes = reader.int(forKey: "maxOutboundBytes", default: config.maxOutboundBytes)
        // HS256 keys shorter than the hash are weak (RFC 7518 3.2); refuse them.
        if let secret = config.jwtSecret, !secret.isEmpty, secret.utf8.count < 32 {
            throw ConfigError.invalid("jwtSecret", "must be at least 32 bytes, got \(secret.utf8.count)")
        }
        guard config.listenAddress != nil else { throw ConfigError.invalid("listen", config.listen) }
        return config
    }

    /// Store shards after resolving `auto`.
    public var resolvedStoreWorkers: Int {
        storeWorkers > 0 ? storeWorkers : max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    public var resolvedRuntimeDir: String {
        runtimeDir ?? (dataDir as NSString).appendingPathComponent("run")
    }

    /// `bus` as host and base port.
    public var busTCP: (host: String, port: Int)? {
        guard let bus, bus.hasPrefix("tcp://") else { return nil }
        let rest = bus.dropFirst(6)
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65000).contains(port),
            colon > rest.startIndex else { return nil }
        return (String(rest[..<colon]), port)
    }

    /// Refuses a `tcp://` bus on anything but a loopback address unless
    /// `bus.insecure` says the operator accepts it (`chatd serve` calls this).
    public func checkBusExposure() throws {
        guard let tcp = busTCP, !busInsecure else { return }
        var host = tcp.host
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let loopback = host == "localhost" || host == "::1" || host.hasPrefix("127.") && host.split(separator: ".").count == 4
        guard !loopback else { return }
        throw ConfigError.invalid(
            "bus",
            "\(bus ?? ""): the bus has no authentication and no encryption yet, so anyone who can reach these ports "
                + "can read every reply and send commands as any user. Use a loopback address, or set bus.insecure: true "
                + "(CHAT_BUS_INSECURE=true) if the network is private and trusted."
        )
    }

    public var busAddress: BusAddress {
        busTCP.map { .tcp(host: $0.host, basePort: $0.port) } ?? .ipc(directory: resolvedRuntimeDir)
    }

    public var databasePath: String { (dataDir as NSString).appendingPathComponent("chat.sqlite") }
    /// The search worker's own index file.
    public var searchIndexPath: String { (dataDir as NSString).appendingPathComponent("search.sqlite") }
    /// Attachments, content-addressed: `files/ab/cdef…` by SHA-256.
    public var filesDir: String { (dataDir as NSString).appendingPathComponent("files") }
    /// Uploads being received, before the files worker takes them.
    public var stagingDir: String { (dataDir as NSString).appendingPathComponent("staging") }

    /// `listen` split into host and port.
    public var listenAddress: (host: String, port: Int)? {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = String(listen[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    /// The HS256 secret: configured, or generated once into the data directory
    /// (mode 0600) so a development server and `chatd token` agree on it.
    public func resolveJWTSecret() throws -> String {
        if let jwtSecret, !jwtSecret.isEmpty { return jwtSecret }
        let path = (dataDir as NSString).appendingPathComponent("jwt-secret")
        if let existing = try? String(contentsOfFile: path, encoding: .utf8), !existing.isEmpty {
            return existing.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        var bytes = [UInt8](repeating: 0, count: 32)
        var rng = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = rng.next() }
        let secret = bytes.map { String(format: "%02x", $0) }.joined()
        // O_EXCL: when two processes race to create it, one wins and both read its value.
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        if fd >= 0 {
            _ = secret.withCString { write(fd, $0, strlen($0)) }
            close(fd)
            return secret
        }
        return try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

public enum ConfigError: Error, CustomStringConvertible {
    case invalid(String, String)

    public var description: String {
        switch self {
        case .invalid(let key, let value): "invalid value for \(key): \(value)"
        }
    }
}
