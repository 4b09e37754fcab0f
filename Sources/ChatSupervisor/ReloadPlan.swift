import ChatConfig

/// Which children a reload restarts: those whose view of the configuration
/// changed.
///
/// The comparison is on `ChatConfig` itself, not field by field: a child
/// reads the whole file at its start (`--config`, with the supervisor's
/// environment, which a reload cannot change), so its view is the
/// configuration minus what it never reads (`ChatConfig.view(frontend:)`).
/// A setting added to `ChatConfig` is in every child's view until someone
/// names it there: forgetting costs a restart that was not needed, never
/// one that was.
struct ReloadPlan: Equatable, Sendable {
    /// Some setting only a frontend reads changed (limits, token keys, edge and rate limits).
    var frontends = false
    /// Some setting a worker reads changed (`maxMessageChars`, `typingWindowSeconds` ...).
    var workers = false
    /// Settings a reload does not apply (`listen`, directories, the bus,
    /// `run`): only logged. Every child gets the running values in its
    /// environment (`ChatConfig.fixedEnvironment`), so one started now
    /// cannot read them and leave the others behind.
    var needsFullRestart: [String] = []

    init(from old: ChatConfig, to new: ChatConfig) {
        let fixed: [(String, Bool)] = [
            ("listen", old.listen != new.listen), ("dataDir", old.dataDir != new.dataDir), ("runtimeDir", old.runtimeDir != new.runtimeDir),
            ("bus", old.bus != new.bus), ("bus.insecure", old.busInsecure != new.busInsecure), ("run", old.run != new.run),
            ("peers", old.peers != new.peers), ("host", old.host != new.host), ("bus.key", old.busKeyFile != new.busKeyFile),
            ("database", old.database != new.database), ("filesWorkers", old.filesWorkers != new.filesWorkers),
            ("logFormat", old.logFormat != new.logFormat), ("metrics", old.metrics != new.metrics),
        ]
        needsFullRestart = fixed.filter(\.1).map(\.0)
        frontends = old.view(frontend: true) != new.view(frontend: true)
        workers = old.view(frontend: false) != new.view(frontend: false)
    }

    /// Restarts some child.
    var restartsAny: Bool { frontends || workers }
}

extension ChatConfig {
    /// The configuration as a frontend (or a worker) uses it: the settings
    /// it never reads are set to their defaults, so that a change to them
    /// is no change to its view.
    func view(frontend: Bool) -> ChatConfig {
        let defaults = ChatConfig()
        var view = self
        // Applied by the supervisor itself, in place (counts, standbys,
        // the handover switch, the hang timeout it measures).
        view.frontends = defaults.frontends
        view.storeWorkers = defaults.storeWorkers
        view.receiptsWorkers = defaults.receiptsWorkers
        view.standbys = defaults.standbys
        view.frontendHandover = defaults.frontendHandover
        view.hangTimeoutSeconds = defaults.hangTimeoutSeconds
        // Read by every child, but not worth restarting them all (every
        // WebSocket with 1012 when the handover is off): the supervisor's
        // own level changes at once, a child's at its next start.
        view.logLevel = defaults.logLevel
        // Never applied by a reload (`ReloadPlan.needsFullRestart`).
        view = view.keepingFixedSettings(of: defaults)
        if frontend {
            view.typingWindowSeconds = defaults.typingWindowSeconds  // the receipts worker's
        } else {
            view.resetFrontendOnly(to: defaults)
        }
        return view
    }

    /// The settings only the frontend reads (the workers take limits on
    /// content, members and uploads from the configuration as well: those
    /// stay in both views). Missing one here restarts the workers for
    /// nothing; naming one a worker reads would miss its restart.
    private mutating func resetFrontendOnly(to defaults: ChatConfig) {
        attachments = defaults.attachments
        jwtSecret = defaults.jwtSecret
        jwtIssuer = defaults.jwtIssuer
        jwtAudience = defaults.jwtAudience
        jwks = defaults.jwks
        jwksRefreshSeconds = defaults.jwksRefreshSeconds
        jwtLeewaySeconds = defaults.jwtLeewaySeconds
        maxBodyBytes = defaults.maxBodyBytes
        maxFrameBytes = defaults.maxFrameBytes
        requestTimeoutMilliseconds = defaults.requestTimeoutMilliseconds
        retryMilliseconds = defaults.retryMilliseconds
        idleTimeoutSeconds = defaults.idleTimeoutSeconds
        maxOutboundBytes = defaults.maxOutboundBytes
        publicURL = defaults.publicURL
        maxURLBytes = defaults.maxURLBytes
        maxHeaderBytes = defaults.maxHeaderBytes
        maxHeaderCount = defaults.maxHeaderCount
        headTimeoutSeconds = defaults.headTimeoutSeconds
        bodyTimeoutSeconds = defaults.bodyTimeoutSeconds
        keepAliveTimeoutSeconds = defaults.keepAliveTimeoutSeconds
        rateLimits = defaults.rateLimits
        restRequestsPerSecond = defaults.restRequestsPerSecond
        restBurst = defaults.restBurst
        socketEventsPerSecond = defaults.socketEventsPerSecond
        socketEventBurst = defaults.socketEventBurst
        socketsPerUser = defaults.socketsPerUser
        handshakesPerSecondPerIP = defaults.handshakesPerSecondPerIP
        handshakeBurst = defaults.handshakeBurst
        accessLog = defaults.accessLog
        webClient = defaults.webClient
    }
}

/// SIGHUP's course, one reload at a time: RELOADING=1, the file read and
/// applied (in place, then the children whose view changed restarted),
/// READY=1. A SIGHUP that comes meanwhile is queued, and any number of them
/// fold into one: the file is read once more after the running reload, and
/// READY=1 follows that one. One before the start's READY=1 is held until
/// then: systemd would take the reload's READY=1 for the start's, and end
/// the start while children are still coming up. Pure: the supervisor
/// carries out the actions.
struct ReloadMachine: Sendable {
    enum Phase: Equatable, Sendable {
        case idle
        case reading
        /// Applied in place, then its restarts; answered with `applied`.
        case applying
    }

    enum Action: Equatable, Sendable {
        /// RELOADING=1 to systemd.
        case notifyReloading
        /// Read the file again; answer with `read`.
        case read
        /// Apply what changes in place, then restart the children the plan
        /// names (when it names any); answer with `applied`.
        case apply(ChatConfig, ReloadPlan)
        /// READY=1 to systemd.
        case notifyReady
    }

    private(set) var phase = Phase.idle
    /// A SIGHUP came during this reload (or before the start's end).
    private(set) var again = false
    /// The supervisor told systemd READY=1 for its start (`startedUp`).
    private(set) var started = false
    /// What the running children read, as far as a reload knows: it moves
    /// on once a reload's restarts all succeeded, so after a failed one
    /// the next SIGHUP restarts them again. Its fixed settings (`listen`,
    /// the directories, the bus) stay the running ones: every child gets
    /// those in its environment.
    private(set) var childrenRead: ChatConfig
    /// The configuration being applied, while it is.
    private var applying: ChatConfig?

    init(running: ChatConfig) { childrenRead = running }

    mutating func signal() -> [Action] {
        guard started, phase == .idle else {
            again = true
            return []
        }
        phase = .reading
        return [.notifyReloading, .read]
    }

    /// The start's READY=1 was sent: a SIGHUP held until now begins.
    mutating func startedUp() -> [Action] {
        guard !started else { return [] }
        started = true
        guard again, phase == .idle else { return [] }
        again = false
        return signal()
    }

    /// The file was read (nil: it could not be; the running configuration
    /// stays). Also taken when idle: a reload driven without a signal (tests).
    mutating func read(_ fresh: ChatConfig?) -> [Action] {
        guard phase != .applying else { return [] }
        guard let fresh else { return finish() }
        phase = .applying
        applying = fresh.keepingFixedSettings(of: childrenRead)
        return [.apply(fresh, ReloadPlan(from: childrenRead, to: fresh))]
    }

    /// The reload was applied and its restarts ended (`succeeded` false:
    /// some child was not restarted).
    mutating func applied(succeeded: Bool) -> [Action] {
        guard phase == .applying else { return [] }
        if succeeded, let applying { childrenRead = applying }
        applying = nil
        return finish()
    }

    private mutating func finish() -> [Action] {
        if again {
            again = false
            phase = .reading
            return [.read]
        }
        phase = .idle
        return [.notifyReady]
    }
}
