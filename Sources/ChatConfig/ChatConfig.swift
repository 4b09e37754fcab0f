import ChatWire
import Configuration
import Foundation
import Logging
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
    /// PostgreSQL for the data, `postgres://user:password@host:port/database`
    /// (`database`, CHAT_DATABASE_URL or CHAT_DATABASE). Nil: SQLite files in `dataDir`.
    public var database: String?
    /// The bus across hosts: `tcp://<broker host>:<base port>`. Nil: ipc
    /// files in the runtime directory (one host).
    public var bus: String?
    /// Allows a `tcp://` bus on a non-loopback address (`bus.insecure: true`,
    /// `CHAT_BUS_INSECURE`): the bus is neither authenticated nor encrypted
    /// (until CURVE), so anyone who reaches its ports reads every reply and
    /// pushes commands as any user. See `checkBusExposure`.
    public var busInsecure: Bool = false
    /// This host's CURVE key pair, written by `chatd keygen` (`bus.key`,
    /// `CHAT_BUS_KEY`; mode 0600). With `busPeerKeysFile`, every `tcp://`
    /// bus socket is authenticated and encrypted (docs/protocol.md, "Security").
    public var busKeyFile: String?
    /// Every host's public key, one line each: `<key> <host> [tcp://<broker>:<port>]`
    /// (`bus.peerKeys`, `CHAT_BUS_PEER_KEYS`). Brokers accept only these keys.
    public var busPeerKeysFile: String?
    /// Both files, read and checked at load: nil when they are not configured.
    public var busKeys: BusKeys?
    /// What `chatd serve` runs on this host (`run:`).
    public var run: RunMode = .all
    /// Several frontend hosts (`peers:`, `CHAT_PEERS` comma-separated): the
    /// bus address (`tcp://host:port`) of every frontend host's broker. A
    /// `run: workers` host's workers link to each (`bus` may then be left
    /// out); a frontend host's `bus` is its own broker, and its supervisor
    /// reads the other hosts' status from the rest. Empty: one broker, `bus`.
    public var peers: [String] = []
    /// This host's name in `ctl status` across hosts (`host:`, CHAT_HOST):
    /// the machine's hostname unless set.
    public var host: String = ChatConfig.machineHostname()
    /// How attachments reach the files worker and come back (`attachments:`);
    /// nil: by `run` (`resolvedAttachments`).
    public var attachments: AttachmentsMode?
    /// HS256 secret. Nil: one is generated into `<dataDir>/jwt-secret` on first start.
    public var jwtSecret: String?
    public var jwtIssuer: String?
    public var jwtAudience: String?
    /// RS256/ES256 keys: a JWKS file path or an http(s) URL (`auth.jwks`,
    /// CHAT_JWKS or CHAT_AUTH_JWKS). With it, no secret is generated: HS256
    /// is verified only when `jwtSecret` is configured too.
    public var jwks: String?
    /// Least seconds between two fetches of a JWKS URL on an unknown `kid` (`auth.jwksRefreshSeconds`).
    public var jwksRefreshSeconds: Double = 60
    /// Clock skew allowed on a token's `exp` and `nbf`, seconds (`auth.leewaySeconds`).
    public var jwtLeewaySeconds: Double = 60
    /// Store shards; `auto` (0) = one per CPU.
    public var storeWorkers: Int = 0
    /// Frontend processes sharing the listening socket; `auto` (0) = one per CPU.
    public var frontends: Int = 0
    public var logLevel: String = "info"
    /// `text` (swift-log's lines) or `json` (one object per line), for every process (`logFormat`, CHAT_LOG_FORMAT).
    public var logFormat: LogFormat = .text
    /// One info line per HTTP request and WebSocket handshake, label `chatd.access` (`accessLog`, CHAT_ACCESS_LOG).
    public var accessLog = false
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
    /// Webhooks workers on this host (`webhooks.workers`, CHAT_WEBHOOKS_WORKERS), 0 for none.
    public var webhooksWorkers: Int = 1
    /// Webhook URLs may be on loopback, private or link-local networks
    /// (`webhooks.allowPrivateTargets`, CHAT_WEBHOOKS_ALLOW_PRIVATE=1): the SSRF guard off, for tests and closed networks.
    public var webhooksAllowPrivateTargets = false
    /// How long a delivery is retried before it is kept as a failure, seconds (`webhooks.retryWindowSeconds`).
    public var webhooksRetryWindowSeconds: Double = 86_400
    /// STUN and TURN servers for calls (`calls.iceServers`,
    /// CHAT_CALLS_ICE_SERVERS, comma-separated): `stun:`/`stuns:` and
    /// `turn:`/`turns:` URLs, as `GET /api/chat/calls/ice_servers/` lists them.
    public var iceServers: [String] = []
    /// The secret shared with the TURN servers (`calls.turnSecret`): coturn's
    /// `static-auth-secret`, which TURN credentials are signed with.
    public var turnSecret: String?
    /// How long TURN credentials last (`calls.turnCredentialSeconds`): 60 s to 7 days.
    public var turnCredentialSeconds: Double = 86_400
    /// How long a call rings before nobody answering makes it missed
    /// (`calls.ringSeconds`): 1 s to 10 min, 45 s as api-contract.md says.
    public var callRingSeconds: Double = 45
    /// `callRingSeconds` as `CallRules` and the store take it.
    public var callRingMicros: Int64 { Int64(callRingSeconds * 1_000_000) }
    /// Files workers on this host, 1 or 0 (`filesWorkers`): one host of a
    /// deployment keeps the blobs, every other workers host says 0.
    public var filesWorkers: Int = 1
    /// A warm standby per worker role, promoted when a worker dies (`standbys`, CHAT_STANDBYS).
    public var standbys = true
    /// `ctl restart frontend` hands each frontend's WebSockets to its new
    /// process (`frontendHandover`, CHAT_FRONTEND_HANDOVER); off, they close
    /// with 1012 and the clients reconnect to a sibling.
    public var frontendHandover = true
    /// How long a `typing: true` counts (seconds).
    public var typingWindowSeconds: Double = 30
    /// A WebSocket silent this long (no frame, no pong) is closed (seconds).
    public var idleTimeoutSeconds: Double = 120
    /// Bytes queued to one slow WebSocket client before it is disconnected.
    public var maxOutboundBytes: Int = 4 << 20
    /// The URL clients reach this server at (`https://chat.example.com`), for
    /// absolute links (`next`, `previous`). Nil: `http://<listen>`. Never
    /// taken from a request's `Host` header, which the client chooses.
    public var publicURL: String?
    /// Longest request target (`414` past it).
    public var maxURLBytes: Int = 8 << 10
    /// Largest request head, request line included (`431` past it).
    public var maxHeaderBytes: Int = 64 << 10
    /// Most header fields in a request (`431` past it).
    public var maxHeaderCount: Int = 100
    /// A request head must arrive within this time of its first byte (seconds).
    public var headTimeoutSeconds: Double = 10
    /// A request body may pause at most this long between two pieces (seconds).
    public var bodyTimeoutSeconds: Double = 30
    /// A keep-alive connection without a request this long is closed (seconds).
    public var keepAliveTimeoutSeconds: Double = 75
    /// Most members a room may have (`participant_ids` and joins).
    public var maxParticipants: Int = 1000
    /// Rate and connection limits below; `off` for load tests and benchmarks.
    /// Size limits hold either way.
    public var rateLimits: Bool = true
    /// `GET /metrics` (Prometheus text, open like /healthz: counts only;
    /// docs/metrics.md); false answers it 404 (`metrics`, CHAT_METRICS).
    public var metrics = true
    /// This host's processes count and report metrics: `metrics` is on and
    /// the host serves `/metrics`. A `run: workers` host has no broker to
    /// publish the tree's document on (docs/metrics.md): its children would
    /// report to a supervisor with nobody to show them to.
    public var collectsMetrics: Bool { metrics && run.runsFrontend }
    /// The browser client at `/` (`webClient`, CHAT_WEB_CLIENT); off, `/` is 404.
    public var webClient = true
    /// REST requests per user: sustained rate per second, and burst.
    public var restRequestsPerSecond: Double = 50
    public var restBurst: Double = 200
    /// WebSocket events per user (all their sockets together): rate and burst.
    public var socketEventsPerSecond: Double = 20
    public var socketEventBurst: Double = 100
    /// Open WebSockets per user on one frontend.
    public var socketsPerUser: Int = 100
    /// WebSocket handshakes per client IP: rate per second, and burst.
    public var handshakesPerSecondPerIP: Double = 50
    public var handshakeBurst: Double = 500

    public init() {}

    /// Loads the configuration: environment over file over defaults.
    /// - Parameter readingKeyFiles: false for `chatd keygen`, which writes the key file the configuration names.
    public static func load(
        file: String?, environment: [String: String] = ProcessInfo.processInfo.environment, readingKeyFiles: Bool = true
    ) async throws -> ChatConfig {
        var providers: [any ConfigProvider] = [EnvironmentVariablesProvider(environmentVariables: environment)]
        let fileKeys = FileKeys()
        if let file {
            providers.append(try await FileProvider<YAMLSnapshot>(parsingOptions: .init(secretsSpecifier: fileKeys.specifier), filePath: FilePath(file)))
        }
        let recorder = KeyRecorder()
        let reader = ConfigReader(providers: providers, accessReporter: recorder).scoped(to: "chat")
        let config: ChatConfig
        do {
            config = try read(reader, environment: environment, readingKeyFiles: readingKeyFiles)
        } catch let error as ConfigError {
            // A type error is the likelier cause of a value refused later (a default was used instead).
            try check(recorder, fileKeys: [], file: file, environment: environment)
            guard case .invalid(let key, _) = error, let provider = recorder.source(of: "chat.\(key)") else { throw error }
            let place = provider.hasPrefix("FileProvider") ? file ?? "config" : describeSource(provider, key: "chat.\(key)", file: nil, environment: environment)
            throw ConfigError.at(place, error.description)
        }
        try check(recorder, fileKeys: fileKeys.all, file: file, environment: environment)
        return config
    }

    /// Every key, from `reader` (scoped to `chat`): what `load` reads is what
    /// it knows, so a key read only sometimes would be refused as unknown.
    static func read(_ reader: ConfigReader, environment: [String: String], readingKeyFiles: Bool = true) throws -> ChatConfig {
        var config = ChatConfig()
        config.listen = reader.string(forKey: "listen", default: config.listen)
        config.dataDir = reader.string(forKey: "dataDir", default: config.dataDir)
        config.runtimeDir = reader.string(forKey: "runtimeDir")
        // CHAT_DATABASE_URL is the documented name (the usual one); CHAT_DATABASE is the key's own.
        let database = reader.string(forKey: "database", isSecret: true)
        config.database = (environment["CHAT_DATABASE_URL"] ?? database).flatMap { $0.isEmpty ? nil : $0 }
        if let url = config.database, !(url.hasPrefix("postgres://") || url.hasPrefix("postgresql://")) {
            throw ConfigError.invalid("database", "postgres://user:password@host:port/database (or none, for SQLite in dataDir)")
        }
        try config.readBus(reader, readingKeyFiles: readingKeyFiles)
        let attachments = reader.string(forKey: "attachments", default: "auto")
        guard attachments == "auto" || AttachmentsMode(rawValue: attachments) != nil else {
            throw ConfigError.invalid("attachments", "\(attachments): auto, local or bus")
        }
        config.attachments = AttachmentsMode(rawValue: attachments)
        try config.readAuth(reader, environment: environment)
        let workers = reader.string(forKey: "storeWorkers", default: "auto")
        guard workers == "auto" || Int(workers).map({ $0 > 0 }) == true else {
            throw ConfigError.invalid("storeWorkers", workers)
        }
        config.storeWorkers = Int(workers) ?? 0
        config.frontends = try Self.parseFrontends(reader.string(forKey: "frontends", default: "auto"))
        config.logLevel = reader.string(forKey: "logLevel", default: config.logLevel)
        let levels = Logger.Level.allCases.map(\.rawValue)
        guard levels.contains(config.logLevel) else {
            throw ConfigError.invalid("logLevel", "\(config.logLevel): one of \(levels.joined(separator: ", "))")
        }
        let format = reader.string(forKey: "logFormat", default: config.logFormat.rawValue)
        guard let logFormat = LogFormat(rawValue: format) else {
            throw ConfigError.invalid("logFormat", "\(format): one of \(LogFormat.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        config.logFormat = logFormat
        config.accessLog = reader.bool(forKey: "accessLog", default: config.accessLog)
        config.maxMessageChars = reader.int(forKey: "maxMessageChars", default: config.maxMessageChars)
        config.maxBodyBytes = reader.int(forKey: "maxBodyBytes", default: config.maxBodyBytes)
        config.maxUploadBytes = reader.int(forKey: "maxUploadBytes", default: config.maxUploadBytes)
        config.maxFrameBytes = reader.int(forKey: "maxFrameBytes", default: config.maxFrameBytes)
        config.requestTimeoutMilliseconds = reader.int(forKey: "requestTimeoutMilliseconds", default: config.requestTimeoutMilliseconds)
        config.retryMilliseconds = reader.int(forKey: "retryMilliseconds", default: config.retryMilliseconds)
        config.hangTimeoutSeconds = reader.double(forKey: "hangTimeoutSeconds", default: config.hangTimeoutSeconds)
        config.receiptsWorkers = max(1, reader.int(forKey: "receiptsWorkers", default: config.receiptsWorkers))
        config.filesWorkers = reader.int(forKey: "filesWorkers", default: config.filesWorkers)
        guard (0...1).contains(config.filesWorkers) else {
            throw ConfigError.invalid("filesWorkers", "\(config.filesWorkers): 1, or 0 on every workers host but the one that keeps the attachments")
        }
        try config.readWebhooks(reader, environment: environment)
        try config.readCalls(reader)
        config.standbys = reader.bool(forKey: "standbys", default: config.standbys)
        config.frontendHandover = reader.bool(forKey: "frontendHandover", default: config.frontendHandover)
        config.typingWindowSeconds = reader.double(forKey: "typingWindowSeconds", default: config.typingWindowSeconds)
        config.idleTimeoutSeconds = reader.double(forKey: "idleTimeoutSeconds", default: config.idleTimeoutSeconds)
        config.maxOutboundBytes = reader.int(forKey: "maxOutboundBytes", default: config.maxOutboundBytes)
        config.publicURL = reader.string(forKey: "publicURL").flatMap { $0.isEmpty ? nil : $0 }
        if let url = config.publicURL, !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
            throw ConfigError.invalid("publicURL", "\(url): http:// or https:// and a host")
        }
        config.maxParticipants = reader.int(forKey: "maxParticipants", default: config.maxParticipants)
        config.webClient = reader.bool(forKey: "webClient", default: config.webClient)
        try config.readEdge(reader)
        guard config.listenAddress != nil else { throw ConfigError.invalid("listen", config.listen) }
        return config
    }

    /// Issue 16's webhooks settings (part of `read`).
    mutating func readWebhooks(_ reader: ConfigReader, environment: [String: String]) throws {
        webhooksWorkers = reader.int(forKey: "webhooks.workers", default: webhooksWorkers)
        guard webhooksWorkers >= 0 else { throw ConfigError.invalid("webhooks.workers", "\(webhooksWorkers): must not be negative") }
        // CHAT_WEBHOOKS_ALLOW_PRIVATE is the documented name (api-contract.md); the key's own works too.
        webhooksAllowPrivateTargets = reader.bool(forKey: "webhooks.allowPrivateTargets", default: webhooksAllowPrivateTargets)
        if let value = environment["CHAT_WEBHOOKS_ALLOW_PRIVATE"], !value.isEmpty {
            webhooksAllowPrivateTargets = ["1", "true", "on", "yes"].contains(value.lowercased())
        }
        webhooksRetryWindowSeconds = reader.double(forKey: "webhooks.retryWindowSeconds", default: webhooksRetryWindowSeconds)
        guard webhooksRetryWindowSeconds > 0, webhooksRetryWindowSeconds <= 30 * 86_400 else {
            throw ConfigError.invalid("webhooks.retryWindowSeconds", "\(webhooksRetryWindowSeconds): more than 0, at most 30 days")
        }
    }

    /// Issue 17's call settings (part of `read`): the ICE servers, and the
    /// TURN secret that any `turn:` URL needs.
    mutating func readCalls(_ reader: ConfigReader) throws {
        iceServers = reader.stringArray(forKey: "calls.iceServers", default: iceServers)
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        turnSecret = reader.string(forKey: "calls.turnSecret", isSecret: true).flatMap { $0.isEmpty ? nil : $0 }
        turnCredentialSeconds = reader.double(forKey: "calls.turnCredentialSeconds", default: turnCredentialSeconds)
        callRingSeconds = reader.double(forKey: "calls.ringSeconds", default: callRingSeconds)
        for url in iceServers where !["stun:", "stuns:", "turn:", "turns:"].contains(where: { url.hasPrefix($0) && url.count > $0.count }) {
            throw ConfigError.invalid("calls.iceServers", "\(url): a stun:, stuns:, turn: or turns: URL")
        }
        if turnSecret == nil, iceServers.contains(where: { $0.hasPrefix("turn") }) {
            throw ConfigError.invalid("calls.turnSecret", "a turn: server needs the secret it shares with chatd (coturn's static-auth-secret)")
        }
        // Bounded: the expiry is written in whole Unix seconds, and a
        // credential that never expires is no longer time-limited.
        guard turnCredentialSeconds >= 60, turnCredentialSeconds <= 7 * 86_400 else {
            throw ConfigError.invalid("calls.turnCredentialSeconds", "\(turnCredentialSeconds): 60 to 604800 (7 days)")
        }
        // Every frontend sweeps once a second, so a shorter ring is not kept;
        // a longer one than 10 min is a call nobody is waiting on.
        guard callRingSeconds >= 1, callRingSeconds <= 600 else {
            throw ConfigError.invalid("calls.ringSeconds", "\(callRingSeconds): 1 to 600")
        }
    }

    /// Tokens: the HS256 secret or a JWKS, issuer, audience, leeway (part of `read`).
    mutating func readAuth(_ reader: ConfigReader, environment: [String: String]) throws {
        jwtSecret = reader.string(forKey: "jwtSecret", isSecret: true)
        jwtIssuer = reader.string(forKey: "jwtIssuer")
        jwtAudience = reader.string(forKey: "jwtAudience")
        // CHAT_JWKS is the documented name; CHAT_AUTH_JWKS is the key's own.
        let jwksKey = reader.string(forKey: "auth.jwks")
        jwks = (environment["CHAT_JWKS"] ?? jwksKey).flatMap { $0.isEmpty ? nil : $0 }
        jwksRefreshSeconds = reader.double(forKey: "auth.jwksRefreshSeconds", default: jwksRefreshSeconds)
        jwtLeewaySeconds = reader.double(forKey: "auth.leewaySeconds", default: jwtLeewaySeconds)
        guard jwksRefreshSeconds >= 0 else { throw ConfigError.invalid("auth.jwksRefreshSeconds", "must not be negative") }
        guard jwtLeewaySeconds >= 0 else { throw ConfigError.invalid("auth.leewaySeconds", "must not be negative") }
        // HS256 keys shorter than the hash are weak (RFC 7518 3.2); refuse them.
        if let secret = jwtSecret, !secret.isEmpty, secret.utf8.count < 32 {
            throw ConfigError.invalid("jwtSecret", "must be at least 32 bytes, got \(secret.utf8.count)")
        }
    }

    /// The edge's limits, timeouts and rate limits (part of `read`): each
    /// checked here, since every connection trusts them.
    mutating func readEdge(_ reader: ConfigReader) throws {
        maxURLBytes = reader.int(forKey: "maxUrlBytes", default: maxURLBytes)
        maxHeaderBytes = reader.int(forKey: "maxHeaderBytes", default: maxHeaderBytes)
        maxHeaderCount = reader.int(forKey: "maxHeaderCount", default: maxHeaderCount)
        headTimeoutSeconds = reader.double(forKey: "headTimeoutSeconds", default: headTimeoutSeconds)
        bodyTimeoutSeconds = reader.double(forKey: "bodyTimeoutSeconds", default: bodyTimeoutSeconds)
        keepAliveTimeoutSeconds = reader.double(forKey: "keepAliveTimeoutSeconds", default: keepAliveTimeoutSeconds)
        let limits = reader.string(forKey: "rateLimits", default: "on").lowercased()
        guard ["on", "off", "true", "false"].contains(limits) else { throw ConfigError.invalid("rateLimits", "\(limits): on or off") }
        rateLimits = limits == "on" || limits == "true"
        metrics = reader.bool(forKey: "metrics", default: metrics)
        restRequestsPerSecond = reader.double(forKey: "restRequestsPerSecond", default: restRequestsPerSecond)
        restBurst = reader.double(forKey: "restBurst", default: restBurst)
        socketEventsPerSecond = reader.double(forKey: "socketEventsPerSecond", default: socketEventsPerSecond)
        socketEventBurst = reader.double(forKey: "socketEventBurst", default: socketEventBurst)
        socketsPerUser = reader.int(forKey: "socketsPerUser", default: socketsPerUser)
        handshakesPerSecondPerIP = reader.double(forKey: "handshakesPerSecondPerIP", default: handshakesPerSecondPerIP)
        handshakeBurst = reader.double(forKey: "handshakeBurst", default: handshakeBurst)
        for (key, value) in [("maxUrlBytes", maxURLBytes), ("maxHeaderBytes", maxHeaderBytes), ("maxHeaderCount", maxHeaderCount),
                             ("maxParticipants", maxParticipants), ("socketsPerUser", socketsPerUser)] where value < 1 {
            throw ConfigError.invalid(key, "\(value): must be at least 1")
        }
        // Timeouts become nanoseconds in an Int64 for every connection: a day is ample and cannot overflow.
        for (key, value) in [("headTimeoutSeconds", headTimeoutSeconds), ("bodyTimeoutSeconds", bodyTimeoutSeconds),
                             ("keepAliveTimeoutSeconds", keepAliveTimeoutSeconds)] where value > 86_400 {
            throw ConfigError.invalid(key, "\(value): at most 86400 seconds")
        }
        for (key, value) in [("headTimeoutSeconds", headTimeoutSeconds), ("bodyTimeoutSeconds", bodyTimeoutSeconds),
                             ("keepAliveTimeoutSeconds", keepAliveTimeoutSeconds), ("restRequestsPerSecond", restRequestsPerSecond),
                             ("restBurst", restBurst), ("socketEventsPerSecond", socketEventsPerSecond), ("socketEventBurst", socketEventBurst),
                             ("handshakesPerSecondPerIP", handshakesPerSecondPerIP), ("handshakeBurst", handshakeBurst)] where !(value > 0 && value.isFinite) {
            throw ConfigError.invalid(key, "\(value): must be a positive number")
        }
    }

    /// The bus, `run`, `peers`, `host` and the bus keys (part of `read`).
    /// Peers are trimmed and compared by lower-cased address: a broker listed
    /// twice would get every event published twice. A frontend host's own
    /// broker need not be among its peers: it is one implicitly
    /// (`statusBrokers`). `run: all` takes no peers: its workers serve only
    /// its own broker, so the other hosts' clients would go unserved.
    mutating func readBus(_ reader: ConfigReader, readingKeyFiles: Bool) throws {
        bus = reader.string(forKey: "bus").map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : $0 }
        busInsecure = reader.bool(forKey: "bus.insecure", default: busInsecure)
        let runValue = reader.string(forKey: "run", default: run.rawValue)
        guard let mode = RunMode(rawValue: runValue) else { throw ConfigError.invalid("run", "\(runValue): all, frontend or workers") }
        run = mode
        if let bus, busTCP == nil { throw ConfigError.invalid("bus", "\(bus): tcp://<host>:<port>") }
        peers = (reader.stringArray(forKey: "peers") ?? []).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for peer in peers where Self.tcpAddress(peer) == nil { throw ConfigError.invalid("peers", "\(peer): tcp://<host>:<port>") }
        var seen: Set<String> = []
        for peer in peers where !seen.insert(peer.lowercased()).inserted {
            throw ConfigError.invalid("peers", "\(peer) is listed twice: every event would be published to it twice")
        }
        // Each worker keeps a link (four sockets) to every peer.
        guard peers.count <= 60 else { throw ConfigError.invalid("peers", "\(peers.count) brokers: at most 60") }
        if run == .all && !peers.isEmpty {
            throw ConfigError.invalid("peers", "not with run: all (its workers serve only its own broker): run: frontend or run: workers")
        }
        if run == .frontend && bus == nil { throw ConfigError.invalid("run", "frontend needs bus: tcp://<host>:<port>") }
        if run == .workers && bus == nil && peers.isEmpty {
            throw ConfigError.invalid("run", "workers needs bus: tcp://<host>:<port>, or peers: the brokers of every frontend host")
        }
        host = reader.string(forKey: "host", default: host)
        guard (1...64).contains(host.count), !host.contains(where: { $0.isWhitespace || $0.isNewline }) else {
            throw ConfigError.invalid("host", "\(host): a name of 1 to 64 characters without spaces")
        }
        busKeyFile = reader.string(forKey: "bus.key").flatMap { $0.isEmpty ? nil : $0 }
        busPeerKeysFile = reader.string(forKey: "bus.peerKeys").flatMap { $0.isEmpty ? nil : $0 }
        if readingKeyFiles { busKeys = try readBusKeys() }
    }

    /// Most frontends: each holds its own connections, event loops and bus
    /// sockets (one per store shard), so beyond a few per core they cost
    /// memory and file descriptors without serving more.
    public static let maxFrontends = 64

    /// `frontends:` read: `auto` (0, one per CPU) or a count from 1 to `maxFrontends`.
    public static func parseFrontends(_ text: String) throws -> Int {
        if text == "auto" { return 0 }
        guard let count = Int(text), (1...maxFrontends).contains(count) else {
            throw ConfigError.invalid("frontends", "\(text): auto or a count from 1 to \(maxFrontends)")
        }
        return count
    }

    /// Frontends after resolving `auto`.
    public var resolvedFrontends: Int {
        frontends > 0 ? frontends : min(Self.maxFrontends, max(1, ProcessInfo.processInfo.activeProcessorCount))
    }

    /// Store shards after resolving `auto`.
    public var resolvedStoreWorkers: Int {
        storeWorkers > 0 ? storeWorkers : max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    public var resolvedRuntimeDir: String {
        runtimeDir ?? (dataDir as NSString).appendingPathComponent("run")
    }

    /// `bus` as host and base port.
    public var busTCP: (host: String, port: Int)? { bus.flatMap(Self.tcpAddress) }

    /// A `tcp://host:port` bus address as host and base port (`bus:`,
    /// `peers:`; the peers file's broker addresses parse the same way).
    static func tcpAddress(_ bus: String) -> (host: String, port: Int)? {
        BusKeys.hostAndPort(bus)
    }

    /// `bus.key` and `bus.peerKeys` read and checked against `bus`; nil when
    /// neither is set. One without the other is refused: half a setup would
    /// run the bus in clear text.
    func readBusKeys() throws -> BusKeys? {
        switch (busKeyFile, busPeerKeysFile) {
        case (nil, nil): return nil
        case (.some, nil): throw ConfigError.invalid("bus.peerKeys", "not set: bus.key needs the peers file (every host's public key) beside it")
        case (nil, .some): throw ConfigError.invalid("bus.key", "not set: bus.peerKeys needs this host's key pair (chatd keygen) beside it")
        case (.some(let keyFile), .some(let peersFile)):
            let keys = try BusKeyFiles.load(keyFile: keyFile, peersFile: peersFile, bus: busAddress, runsBroker: run.runsFrontend)
            // Workers and supervisors connect to every peer's broker: each
            // needs that broker's key, or every handshake with it fails.
            for (peer, address) in zip(peers, peerAddresses) where keys.serverKey(for: address) == nil {
                throw ConfigError.invalid("bus.peerKeys", "\(peersFile) lists no key for the broker at \(peer) (peers:): add `<its public key> <its host name> \(peer)`")
            }
            return keys
        }
    }

    /// Refuses a `tcp://` bus on anything but a loopback address unless
    /// its sockets are authenticated (`bus.key` and `bus.peerKeys`: CURVE),
    /// or `bus.insecure` says the operator accepts it (`chatd serve` calls this).
    public func checkBusExposure() throws {
        guard let tcp = busTCP, !busInsecure, busKeys == nil else { return }
        var host = tcp.host
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let loopback = host == "localhost" || host == "::1" || host.hasPrefix("127.") && host.split(separator: ".").count == 4
        guard !loopback else { return }
        throw ConfigError.invalid(
            "bus",
            "\(bus ?? ""): without keys the bus has no authentication and no encryption, so anyone who can reach these ports "
                + "can read every reply and send commands as any user. Set bus.key (chatd keygen) and bus.peerKeys "
                + "(docs/operations.md, \"Bus keys\"), use a loopback address, or set bus.insecure: true "
                + "(CHAT_BUS_INSECURE=true) if the network is private and trusted."
        )
    }

    public var busAddress: BusAddress {
        busTCP.map { .tcp(host: $0.host, basePort: $0.port) } ?? .ipc(directory: resolvedRuntimeDir)
    }

    /// `peers` as bus addresses.
    public var peerAddresses: [BusAddress] {
        peers.compactMap(Self.tcpAddress).map { .tcp(host: $0.host, basePort: $0.port) }
    }

    /// The brokers this host's workers link to: every peer on a `run:
    /// workers` host that names them, else the one bus.
    public var workerBuses: [BusAddress] {
        run == .workers && !peers.isEmpty ? peerAddresses : [busAddress]
    }

    /// The brokers this host's supervisor reads the other hosts' status
    /// from (`ctl status` across hosts): a frontend host's own (where the
    /// workers hosts publish theirs) and every peer's (their frontend
    /// hosts'), a workers host's every broker. None on one host.
    public var statusBrokers: [BusAddress] {
        guard busTCP != nil || !peers.isEmpty else { return [] }
        // Its own broker first, whether or not `peers` lists it.
        return run.runsFrontend ? [busAddress] + peerAddresses.filter { $0 != busAddress } : workerBuses
    }

    /// `checkBusExposure` for each of `peers`.
    public func checkPeerExposure() throws {
        for peer in peers {
            var one = self
            one.bus = peer
            one.peers = []
            do {
                try one.checkBusExposure()
            } catch ConfigError.invalid(_, let problem) {
                throw ConfigError.invalid("peers", problem)
            }
        }
    }

    /// The machine's hostname: `host`'s default.
    public static func machineHostname() -> String {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return "localhost" }
        let host = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return host.isEmpty ? "localhost" : host
    }

    /// The origin absolute links start with: `publicURL` without a trailing slash, or `http://<listen>`.
    public var linkBase: String {
        if let publicURL { return publicURL.hasSuffix("/") ? String(publicURL.dropLast()) : publicURL }
        return "http://\(listen)"
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

    /// The HS256 secret the frontend verifies with: the configured one; with
    /// no JWKS, the generated development secret; with a JWKS alone, none.
    public func verifyingJWTSecret() throws -> String? {
        if let jwtSecret, !jwtSecret.isEmpty { return jwtSecret }
        return jwks == nil ? try resolveJWTSecret() : nil
    }

    /// Where the generated development secret is kept.
    public var jwtSecretPath: String { (dataDir as NSString).appendingPathComponent("jwt-secret") }

    /// The HS256 secret: configured, or generated once into the data directory
    /// (mode 0600) so a development server and `chatd token` agree on it.
    public func resolveJWTSecret() throws -> String {
        if let jwtSecret, !jwtSecret.isEmpty { return jwtSecret }
        let path = jwtSecretPath
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

/// What `chatd serve` runs on one host.
public enum RunMode: String, Sendable, CaseIterable {
    /// The broker, the frontend and every worker.
    case all
    /// The broker and the frontend; the workers run on other hosts.
    case frontend
    /// Workers only, connecting to the broker at `bus`.
    case workers

    /// This host runs the frontend (and so the broker).
    public var runsFrontend: Bool { self != .workers }
    /// This host runs workers (and so has the database).
    public var runsWorkers: Bool { self != .frontend }
}

public enum ConfigError: Error, CustomStringConvertible {
    case invalid(String, String)
    /// What is wrong, after where: `chatd.yaml: logLevel` or `CHAT_LOG_LEVEL=loud`.
    case at(String, String)

    public var description: String {
        switch self {
        case .invalid(let key, let value): "invalid value for \(key): \(value)"
        case .at(let place, let problem): "\(place): \(problem)"
        }
    }
}
