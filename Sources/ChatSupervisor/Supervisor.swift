import ChatBus
import ChatConfig
import ChatWire
import Foundation
import Logging
import Systemd

/// `chatd serve`: owns the bus broker and the children, nothing else. Spawns
/// the frontends (`frontends:`, all on the one port) and the workers;
/// restarts a child that exits (at once, then with exponential backoff once
/// it keeps crashing soon after starting); kills
/// and restarts one that stops sending heartbeats (hung, not dead); speaks
/// sd_notify to systemd (`READY=1` once every child is ready, `STATUS=`,
/// `WATCHDOG=1` at half of `WATCHDOG_USEC`, `STOPPING=1`); and turns
/// SIGTERM/SIGINT into an orderly stop: the frontends first (they close
/// WebSockets with 1001 and drain), then the workers once every frontend is
/// gone, SIGKILL after the grace.
///
/// Each child's life is a `Child` state machine; this class feeds it events
/// (spawns, sd_notify datagrams, exits, timers) and carries out its actions.
/// Its jobs are in the files named for them: spawning, control, status,
/// reload, rolling restart, rescale.
public final class Supervisor: @unchecked Sendable {
    /// Names the supervisor's pid in every child's environment: the parent a child watches (`exitWithParent`).
    public static let pidVariable = "CHATD_SUPERVISOR_PID"
    // All mutable state is touched only on `queue`.
    let queue = DispatchQueue(label: "chatd.supervisor")
    var config: ChatConfig
    let reloadConfig: @Sendable () async throws -> ChatConfig
    let executable: String
    let baseArguments: [String]
    var logger: Logger
    let graceSeconds: Double
    var children: [ChildName: ChildRecord] = [:]
    /// Children scaled away, until they exit, by pid.
    var retiring: [Int32: Child] = [:]
    /// The slots of frontends among `retiring`, by pid: their sessions are
    /// closed once they exit (`retiredExited`).
    var retiredFrontendSlots: [Int32: Int] = [:]
    var stopping = false
    /// Why the supervisor is stopping on its own (the exit status is then 1).
    private var failure: String?
    /// When children still running at a stop get SIGKILL.
    private var stopDeadline = Uptime.distantFuture
    /// Every child, retired ones included, is down after a stop; `run` returns.
    private(set) var stopped = false
    private var signalSources: [any DispatchSourceSignal] = []
    private let done = DispatchSemaphore(value: 0)
    var broker: Broker?
    private var listener: NotifyListener?
    private var control: ControlSocket?
    private var timers: [any DispatchSourceTimer] = []
    let systemd = Notifier()
    var toldReady = false
    var lastStatus = ""
    /// Store shards now; `ctl scale store <n>` and a reload change it.
    var storeShards: Int
    var storeScaleInProgress = false
    /// Frontends now; a reload changes it.
    var frontendCount: Int
    lazy var spawner = ChildSpawner(queue: queue)
    /// The listening socket of frontend slot 0 (of every slot with socket
    /// activation): the one systemd passed (chatd.socket), or the one the
    /// supervisor bound for `listen`. Without socket activation it is closed
    /// while slot 0's frontend is down and a sibling serves
    /// (`releaseSocket`), and bound again for its next process.
    var listeningSocket: ListeningSocket?
    /// It is systemd's: every frontend shares it.
    var socketActivated = false
    /// With a socket bound here and several frontends, each slot above 0
    /// has its own, bound with SO_REUSEPORT beside `listeningSocket`
    /// (`listeningSocket(forSlot:)`).
    var slotSockets: [Int: ListeningSocket] = [:]
    /// Steps of a rolling restart or a rescale waiting for a child event.
    let waiters = Waiters()
    /// Frontend processes taking a slot's WebSockets over, by slot (Supervisor+Handover.swift).
    var successors: [Int: Successor] = [:]
    /// The last handovers, for `ctl status`.
    var handovers: [HandoverRecord] = []
    /// SIGHUP's course (Supervisor+Reload.swift).
    var reloads: ReloadMachine
    /// `ctl restart` and `ctl upgrade` rolling restarts under way: a
    /// reload's restarts wait for them.
    var controlRestarts = 0
    /// `ctl status` across hosts (Supervisor+Hosts.swift): nil on one host.
    var hostExchange: StatusExchange?
    var hostStatuses = HostStatuses()

    /// - Parameters:
    ///   - executable: the chatd binary (the supervisor spawns itself).
    ///   - baseArguments: passed to every child after its own (e.g. `--config FILE`).
    /// - Parameter reload: reads the configuration again (SIGHUP).
    public init(
        config: ChatConfig, reload: @escaping @Sendable () async throws -> ChatConfig,
        executable: String, baseArguments: [String], logger: Logger, graceSeconds: Double = 10
    ) {
        self.config = config
        self.reloadConfig = reload
        self.executable = executable
        self.baseArguments = baseArguments
        self.logger = logger
        self.graceSeconds = graceSeconds
        self.storeShards = config.resolvedStoreWorkers
        self.frontendCount = config.resolvedFrontends
        self.reloads = ReloadMachine(running: config)
    }

    /// The timing rules of every child's state machine.
    var policy: Child.Policy { Child.Policy(hangTimeout: config.hangTimeoutSeconds) }

    /// Runs until SIGTERM or SIGINT; returns the process exit status.
    public func run() throws -> Int32 {
        let runtime = config.resolvedRuntimeDir
        try FileManager.default.createDirectory(atPath: runtime, withIntermediateDirectories: true)
        // Unix socket paths (control, notify, ipc) may be 107 bytes long.
        guard (runtime + "/store-999.out").utf8.count < 107 else {
            throw ConfigError.invalid("runtimeDir", "\(runtime) is too long for Unix socket paths")
        }
        try openListeningSocket()
        // The broker runs where the frontend does; a workers-only host connects to it.
        if config.run.runsFrontend {
            let queues = (0..<storeShards).map { Endpoints.queue(.store, shard: $0) }
                + Role.allCases.filter { $0 != .store && $0.hasQueue }.map { Endpoints.queue($0) }
            let broker = try Broker(bus: config.busAddress, queues: queues, logger: logger, security: BusSecurity(keys: config.busKeys))
            // Without its broker this host serves nobody: stop, exit non-zero,
            // and let systemd (Restart=on-failure) start it again.
            try broker.start { [weak self] reason in
                guard let self else { return }
                queue.async { self.fail(reason) }
            }
            broker.announce(storeShards: storeShards)
            self.broker = broker
        }
        listener = try NotifyListener(path: (runtime as NSString).appendingPathComponent("notify.sock"), queue: queue) { [weak self] fields, pid in
            self?.childReported(fields, from: pid)
        }
        control = try ControlSocket(path: (runtime as NSString).appendingPathComponent("control.sock"), queue: queue) { [weak self] line, reply in
            guard let self else { return reply(#"{"error":"stopping"}"#) }
            self.command(line, reply: reply)
        }
        handleSignals()
        queue.sync { startChildren() }
        done.wait()
        queue.sync { stopHostStatus() }
        broker?.stop()
        return queue.sync { failure } == nil ? 0 : 1
    }

    /// Stops everything as SIGTERM would, and makes `run` return 1.
    func fail(_ reason: String) {
        guard failure == nil else { return }
        failure = reason
        logger.critical("supervisor stopping on a failure", metadata: ["reason": "\(reason)"])
        beginStop(signal: 0)
    }

    private func handleSignals() {
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { [weak self] in
                if sig == SIGHUP { self?.reload() } else { self?.beginStop(signal: sig) }
            }
            source.resume()
            signalSources.append(source)
        }
    }

    private func startChildren() {
        logger.info("supervisor starting", metadata: [
            "store.workers": "\(storeShards)", "frontends": "\(config.run.runsFrontend ? frontendCount : 0)", "pid": "\(getpid())",
        ])
        for spec in specs { add(spec) }
        // Sessions of the one frontend before there were several, and of the
        // slots an earlier run with more frontends had: no process of this
        // run has those names to close them (each slot that runs closes its
        // own predecessor's). The broker holds the commands until a
        // receipts worker takes its queue.
        if config.run.runsFrontend {
            resetSessions(ofFrontend: ChildName.frontendRole)
            for slot in frontendCount..<ChatConfig.maxFrontends { resetSessions(ofFrontend: ChildName.frontend(slot).description) }
        }
        // The liveness tick: hang detection and stop deadlines (`Child.Event.timer`).
        schedule(every: 0.25) { [weak self] in self?.tick() }
        // The tree's metrics to the frontends (Supervisor+Metrics.swift); none
        // with `metrics: false` or on a `run: workers` host (no broker).
        if config.collectsMetrics {
            countersAtZero()
            schedule(every: Self.metricsPublishSeconds) { [weak self] in self?.publishMetrics() }
        }
        startHostStatus()
        // Uploads a frontend staged and never finished (it died mid-way):
        // with no files worker on this host nothing else removes them.
        if !config.runsFilesWorker {
            schedule(every: 60) { [weak self] in self?.sweepStaging() }
        }
        // systemd's watchdog: ping at half the interval it expects.
        if let usec = ProcessInfo.processInfo.environment["WATCHDOG_USEC"].flatMap(Double.init), usec > 0,
            ProcessInfo.processInfo.environment["WATCHDOG_PID"].map({ Int32($0) == getpid() }) ?? true {
            schedule(every: usec / 2 / 1_000_000) { [weak self] in self?.watchdogPing() }
        }
    }

    func schedule(every seconds: Double, _ body: @escaping @Sendable () -> Void) {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + seconds, repeating: seconds)
        timer.setEventHandler(handler: body)
        timer.resume()
        timers.append(timer)
    }

    // MARK: Events into the state machines

    /// Which state machine an event is for.
    enum Target: Sendable {
        case child(ChildName)
        /// A child scaled away, still exiting.
        case retired(pid: Int32)
    }

    /// A new child, started at once.
    func add(_ spec: ChildSpec) {
        children[spec.name] = ChildRecord(spec: spec, policy: policy)
        countersAtZero(spec.name)
        deliver(.start, to: .child(spec.name))
    }

    /// Feeds one event to a child's state machine and carries out its actions.
    func deliver(_ event: Child.Event, to target: Target) {
        dispatchPrecondition(condition: .onQueue(queue))
        let actions: [Child.Action]
        switch target {
        case .child(let name):
            guard var record = children[name] else { return }
            let (crashes, planned) = (record.machine.restarts, record.machine.plannedRestarts)
            actions = record.machine.handle(event, now: Uptime.now())
            children[name] = record
            countRestarts(name, crashesBefore: crashes, plannedBefore: planned, machine: record.machine)
        case .retired(let pid):
            guard var machine = retiring[pid] else { return }
            actions = machine.handle(event, now: Uptime.now())
            retiring[pid] = machine.isStopped ? nil : machine
        }
        for action in actions { perform(action, for: target) }
        if !actions.isEmpty { updateStatus() }
        waiters.resume()
        signalDoneOnceStopped()
    }

    /// Lets `run` return once every child is down after a stop, those scaled
    /// away and still exiting too (a process of ours must not outlive us).
    private func signalDoneOnceStopped() {
        guard stopping, !stopped, retiring.isEmpty, children.values.allSatisfy(\.machine.isStopped) else { return }
        stopped = true
        done.signal()
    }

    private func perform(_ action: Child.Action, for target: Target) {
        let label: String
        switch target {
        case .child(let name): label = name.description
        case .retired(let pid): label = "retired pid \(pid)"
        }
        switch action {
        case .spawn(let predecessorFailed):
            if case .child(let name) = target { spawn(name, predecessorFailed: predecessorFailed) }
        case .kill(let pid, let signal):
            kill(pid, signal)
        case .wake(let at):
            queue.asyncAfter(deadline: at.dispatchTime) { [weak self] in self?.deliver(.timer, to: target) }
        case .notify:
            break  // `deliver` updates the status and resumes the waiters after every event
        case .log(let level, let message, let fields):
            var metadata: Logger.Metadata = ["child": "\(label)"]
            for (key, value) in fields { metadata[key] = "\(value)" }
            // A child exiting while the supervisor stops is expected.
            logger.log(level: stopping && level == .warning && message == "child exited" ? .info : level, "\(message)", metadata: metadata)
        }
    }

    /// A child's sd_notify datagram, from process `pid`. A retired process
    /// still draining says the same name as its slot's new one: only the
    /// record's own process is heard.
    private func childReported(_ fields: [String: String], from pid: Int32?) {
        if successorReported(fields, from: pid) { return }
        guard let name = fields["CHATD_CHILD"].flatMap(ChildName.init), var record = children[name], let process = record.process,
            pid == nil || pid == process.pid else { return }
        // A count, or "changing" while the frontend waits to switch.
        if let shards = fields["CHATD_STORE_SHARDS"] { record.storeShards = Int(shards) }
        if let queues = fields[QueueReport.field] { record.outstanding = QueueReport(decoding: queues) }
        if let sockets = fields[FrontendSlot.webSocketsField] { record.webSockets = Int(sockets) }
        recordMetrics(fields, into: &record)
        children[name] = record
        if fields["READY"] == "1" {
            deliver(.reportedReady, to: .child(name))
        } else if fields["WATCHDOG"] == "1" {
            deliver(.heartbeat, to: .child(name))
        } else {
            waiters.resume()
        }
    }

    /// The liveness tick: reaps (a missed SIGCHLD must not leave a dead child
    /// looking alive) and gives every machine the time.
    private func tick() {
        spawner.reap()
        for name in children.keys { deliver(.timer, to: .child(name)) }
        for pid in retiring.keys { deliver(.timer, to: .retired(pid: pid)) }
    }

    /// A process was reaped.
    func reaped(_ process: ChildProcess) {
        guard let termination = process.termination else { return }
        if let (name, _) = children.first(where: { $0.value.process === process }) {
            children[name]?.process = nil
            // Before the exit reaches the machine: a restart at once binds a fresh one.
            if case .frontend(let slot) = name { releaseSocket(ofSlot: slot) }
            deliver(.exited(termination), to: .child(name))
            guard stopping else { return }
            // One that exited on its own stays down; workers follow as soon as every frontend is gone.
            deliver(.stop(restart: false, killAt: stopDeadline), to: .child(name))
            if name.isFrontend && !frontendsRunning {
                closeListeningSocket()
                stopWorkers()
            }
        } else {
            deliver(.exited(termination), to: .retired(pid: process.pid))
            retiredExited(pid: process.pid)
        }
    }

    // MARK: Stopping

    func beginStop(signal sig: Int32) {
        guard !stopping else { return }
        stopping = true
        systemd.send(["STOPPING": "1", "STATUS": "stopping"])
        lastStatus = "stopping"  // what `ctl status` says until the end
        logger.info("stopping", metadata: ["signal": "\(sig)", "children": "\(children.values.filter { $0.process != nil }.count)"])
        waiters.failAll()
        adoptReportedSuccessors()
        stopDeadline = Uptime.now() + graceSeconds
        // Whatever is between two lives stays down.
        for (name, record) in children where record.process == nil { deliver(.stop(restart: false, killAt: stopDeadline), to: .child(name)) }
        // The frontends first: they close WebSockets with 1001 and drain their
        // pending commands while the workers still answer.
        if frontendsRunning {
            for name in children.keys where name.isFrontend { deliver(.stop(restart: false, killAt: stopDeadline), to: .child(name)) }
            queue.asyncAfter(deadline: .now() + graceSeconds / 2) { [weak self] in self?.stopWorkers() }
        } else {
            closeListeningSocket()
            stopWorkers()
        }
        signalDoneOnceStopped()
    }

    private func stopWorkers() {
        for name in children.keys where !name.isFrontend { deliver(.stop(restart: false, killAt: stopDeadline), to: .child(name)) }
    }

    /// A frontend process is up. Frontends scaled away and still exiting are
    /// not waited for: they had the grace of their own stop.
    private var frontendsRunning: Bool {
        children.values.contains { $0.spec.name.isFrontend && $0.process != nil }
    }

    /// Children no longer wanted: forgotten, then SIGTERM (SIGKILL after the grace).
    func retire(_ names: [ChildName]) {
        for name in names {
            guard let record = children.removeValue(forKey: name), let pid = record.machine.pid else { continue }
            retiring[pid] = record.machine
            if case .frontend(let slot) = name { retiredFrontendSlots[pid] = slot }
            // The service goes on: a retired frontend's clients get 1012 and reconnect to a sibling.
            deliver(.stop(restart: false, killAt: Uptime.now() + graceSeconds, signal: name.restartSignal), to: .retired(pid: pid))
        }
    }

    static func monotonicMicros() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
    }
}
