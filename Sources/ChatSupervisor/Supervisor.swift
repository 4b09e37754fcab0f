import ChatBus
import ChatConfig
import ChatWire
import Foundation
import Logging

/// One child process the supervisor keeps running.
struct ChildSpec: Sendable {
    /// `frontend`, `store.<n>`, `receipts.<n>`, `search.0`, `files.0`.
    var name: String
    var arguments: [String]
}

/// What the supervisor knows of one child.
struct ChildState {
    var spec: ChildSpec
    var process: ChildProcess?
    var lastStart = Date.distantPast
    var restarts = 0
    /// Exits in a row that came soon after a start (a crash loop).
    var quickExits = 0
    /// Said READY=1 since its last start.
    var ready = false
    /// Its last READY=1 or WATCHDOG=1.
    var lastHeartbeat = Date.distantPast
    /// A frontend's commands awaiting an answer, per queue (its heartbeats say).
    var outstanding: [String: Int] = [:]
    /// The store shard count a frontend sends by (its heartbeats say).
    var storeShards: Int?
    /// The last process crashed (a signal such as a Swift trap's SIGILL or
    /// SIGTRAP, SIGSEGV, SIGABRT) or hung and was killed; not an operator's
    /// or the OOM killer's SIGKILL, nor a clean exit. Its replacement says so
    /// in its bus heartbeats, and frontends count it toward poison commands.
    var predecessorFailed = false
    /// The supervisor killed the current process for hanging.
    var killedAsHung = false
}

/// `chatd serve`: owns the bus broker and the children, nothing else. Spawns
/// the frontend and the workers; restarts a child that exits (at once, then
/// with exponential backoff once it keeps crashing soon after starting); kills
/// and restarts one that stops sending heartbeats (hung, not dead); speaks
/// sd_notify to systemd (`READY=1` once every child is ready, `STATUS=`,
/// `WATCHDOG=1` at half of `WATCHDOG_USEC`, `STOPPING=1`); and turns
/// SIGTERM/SIGINT into an orderly stop: the frontend first (it closes
/// WebSockets with 1001 and drains), then the workers, SIGKILL after the grace.
public final class Supervisor: @unchecked Sendable {
    // All mutable state is touched only on `queue`.
    private let queue = DispatchQueue(label: "chatd.supervisor")
    private var config: ChatConfig
    private let reloadConfig: @Sendable () async throws -> ChatConfig
    private let executable: String
    private let baseArguments: [String]
    private var logger: Logger
    private let graceSeconds: Double
    private var children: [String: ChildState] = [:]
    private var stopping = false
    private var signalSources: [any DispatchSourceSignal] = []
    private let done = DispatchSemaphore(value: 0)
    private var broker: Broker?
    private var listener: NotifyListener?
    private var control: ControlSocket?
    private var timers: [any DispatchSourceTimer] = []
    private let systemd = Notifier()
    private var toldReady = false
    private var lastStatus = ""
    /// Store shards now; `ctl scale store <n>` and a reload change it.
    private var storeShards: Int
    private var storeScaleInProgress = false
    private lazy var spawner = ChildSpawner(queue: queue)
    /// The listening socket systemd passed (chatd.socket), handed to every frontend.
    private var activatedSocket: CInt?

    /// A child that lived less than this had a quick exit (counts towards backoff).
    static let quickExit: TimeInterval = 5
    /// Backoff between restarts of a crash-looping child tops out here.
    static let maxBackoff: TimeInterval = 30

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
    }

    /// The children this host runs (`run`: all, frontend, or workers).
    var specs: [ChildSpec] {
        var specs = config.run == "workers" ? [] : [frontendSpec]
        guard config.run != "frontend" else { return specs }
        for shard in 0..<storeShards { specs.append(workerSpec("store", shard)) }
        // One each of the other roles: receipts may be scaled by config;
        // search owns one index file, files is I/O-bound.
        for (role, count) in [("receipts", config.receiptsWorkers), ("search", 1), ("files", 1)] {
            for index in 0..<count { specs.append(workerSpec(role, index)) }
        }
        return specs
    }

    /// A frontend started now sends by the current store shard count.
    var frontendSpec: ChildSpec { ChildSpec(name: "frontend", arguments: ["frontend", "--shards", String(storeShards)]) }

    func workerSpec(_ role: String, _ index: Int) -> ChildSpec {
        ChildSpec(name: "\(role).\(index)", arguments: ["worker", "--role", role, "--shard", String(index)])
    }

    /// Runs until SIGTERM or SIGINT; returns the process exit status.
    public func run() throws -> Int32 {
        let runtime = config.resolvedRuntimeDir
        activatedSocket = try SocketActivation.listeningSocket()
        try FileManager.default.createDirectory(atPath: runtime, withIntermediateDirectories: true)
        // Unix socket paths (control, notify, ipc) may be 107 bytes long.
        guard (runtime + "/store-999.out").utf8.count < 107 else {
            throw ConfigError.invalid("runtimeDir", "\(runtime) is too long for Unix socket paths")
        }
        // The broker runs where the frontend does; a workers-only host connects to it.
        if config.run != "workers" {
            let queues = (0..<storeShards).map { Endpoints.queue(.store, shard: $0) }
                + Role.allCases.filter { $0 != .store }.map { Endpoints.queue($0) }
            let broker = try Broker(bus: config.busAddress, queues: queues, logger: logger)
            try broker.start()
            broker.announce(storeShards: storeShards)
            self.broker = broker
        }
        listener = try NotifyListener(path: (runtime as NSString).appendingPathComponent("notify.sock"), queue: queue) { [weak self] fields in
            self?.childReported(fields)
        }

        control = try ControlSocket(path: (runtime as NSString).appendingPathComponent("control.sock"), queue: queue) { [weak self] line, reply in
            guard let self else { return reply(#"{"error":"stopping"}"#) }
            self.command(line, reply: reply)
        }

        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { [weak self] in
                if sig == SIGHUP { self?.reload() } else { self?.beginStop(signal: sig) }
            }
            source.resume()
            signalSources.append(source)
        }
        queue.sync {
            logger.info("supervisor starting", metadata: ["store.workers": "\(storeShards)", "pid": "\(getpid())"])
            for spec in specs {
                children[spec.name] = ChildState(spec: spec)
                start(spec.name)
            }
            schedule(every: 0.25) { [weak self] in self?.checkLiveness() }
            // systemd's watchdog: ping at half the interval it expects.
            if let usec = ProcessInfo.processInfo.environment["WATCHDOG_USEC"].flatMap(Double.init), usec > 0,
                ProcessInfo.processInfo.environment["WATCHDOG_PID"].map({ Int32($0) == getpid() }) ?? true {
                schedule(every: usec / 2 / 1_000_000) { [weak self] in self?.watchdogPing() }
            }
        }
        done.wait()
        broker?.stop()
        return 0
    }

    private func schedule(every seconds: Double, _ body: @escaping @Sendable () -> Void) {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + seconds, repeating: seconds)
        timer.setEventHandler(handler: body)
        timer.resume()
        timers.append(timer)
    }

    private func start(_ name: String) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !stopping, var child = children[name] else { return }
        var environment = ProcessInfo.processInfo.environment
        // Children report to the supervisor, never to systemd directly.
        environment["NOTIFY_SOCKET"] = listener?.path
        environment["CHATD_CHILD"] = name
        environment["CHATD_PREDECESSOR_FAILED"] = child.predecessorFailed ? "1" : nil
        environment["WATCHDOG_USEC"] = nil
        environment["WATCHDOG_PID"] = nil
        // The frontend serves the socket systemd passed, if it passed one.
        let inherit = name == "frontend" ? activatedSocket.map { [$0] } ?? [] : []
        if let fd = inherit.first { environment["CHATD_LISTEN_FD"] = String(fd) }
        child.lastStart = Date()
        child.ready = false
        child.killedAsHung = false
        do {
            let process = try spawner.spawn(
                executable: executable, arguments: child.spec.arguments + baseArguments, environment: environment, inherit: inherit
            )
            process.onExit = { [weak self] process in self?.exited(name, process: process) }
            child.process = process
            children[name] = child
            logger.info("child started", metadata: ["child": "\(name)", "pid": "\(process.pid)"])
        } catch {
            children[name] = child
            logger.error("child failed to start", metadata: ["child": "\(name)", "error": "\(error)"])
            scheduleRestart(name)
        }
        updateStatus()
    }

    /// A child's sd_notify datagram.
    private func childReported(_ fields: [String: String]) {
        guard let name = fields["CHATD_CHILD"], var child = children[name], child.process != nil else { return }
        if fields["READY"] == "1" {
            if !child.ready { logger.info("child ready", metadata: ["child": "\(name)"]) }
            child.ready = true
        }
        if fields["READY"] == "1" || fields["WATCHDOG"] == "1" { child.lastHeartbeat = Date() }
        // A count, or "changing" while the frontend waits to switch.
        if let shards = fields["CHATD_STORE_SHARDS"] { child.storeShards = Int(shards) }
        if let queues = fields["CHATD_QUEUES"] {
            child.outstanding = [:]
            for pair in queues.split(separator: " ") {
                let parts = pair.split(separator: ":")
                if parts.count == 2, let count = Int(parts[1]) { child.outstanding[String(parts[0])] = count }
            }
        }
        children[name] = child
        updateStatus()
    }

    /// Kills a child that stopped sending heartbeats (the restart follows its exit).
    private func checkLiveness() {
        spawner.reap()
        guard !stopping else { return }
        let now = Date()
        for (name, child) in children {
            guard let process = child.process else { continue }
            // A child gets the hang timeout from its start, and then between
            // heartbeats (one every 500 ms, READY=1 or not: a worker waiting
            // for the bus of another host is alive, not hung).
            let since = max(child.lastHeartbeat, child.lastStart)
            if now.timeIntervalSince(since) > config.hangTimeoutSeconds {
                logger.error("child stopped sending heartbeats, killing it", metadata: [
                    "child": "\(name)", "pid": "\(process.pid)", "silent.seconds": "\(Int(now.timeIntervalSince(since)))",
                ])
                kill(process.pid, SIGKILL)
                children[name]?.lastHeartbeat = now  // one kill per hang
                children[name]?.killedAsHung = true
            }
        }
    }

    private func exited(_ name: String, process: ChildProcess) {
        // A scaled-away child, or an old process of a name scaled back up.
        guard var child = children[name], child.process == nil || child.process === process else { return }
        logger.log(level: stopping ? .info : .warning, "child exited", metadata: [
            "child": "\(name)", "pid": "\(process.pid)", "status": "\(process.termination.map { "\($0)" } ?? "?")",
        ])
        if child.process === process { child.process = nil }
        child.ready = false
        child.predecessorFailed = child.killedAsHung || process.termination.map(ChildProcess.isCrash) ?? false
        children[name] = child
        if stopping {
            if children.values.allSatisfy({ $0.process == nil }) { done.signal() }
            return
        }
        scheduleRestart(name)
    }

    /// Restarts at once (at most once a second, like runsv); after repeated
    /// quick exits, waits 1, 2, 4, ... up to 30 s between attempts.
    private func scheduleRestart(_ name: String) {
        guard var child = children[name] else { return }
        let lived = Date().timeIntervalSince(child.lastStart)
        child.quickExits = lived < Self.quickExit ? child.quickExits + 1 : 0
        child.restarts += 1
        children[name] = child
        // The first few quick exits in a row restart at once (a worker killed
        // by an operator or an OOM should be back within a second); from the
        // fourth, the child is crash-looping and waits 1, 2, 4 ... 30 s.
        let backoff = child.quickExits > 3 ? min(Self.maxBackoff, pow(2, Double(child.quickExits - 4))) : 0
        let delay = max(1 - lived, backoff)
        if child.quickExits >= 5 {
            logger.error("child is crash-looping", metadata: ["child": "\(name)", "quick.exits": "\(child.quickExits)", "next.attempt.seconds": "\(Int(delay))"])
        }
        updateStatus()
        queue.asyncAfter(deadline: .now() + delay) { [weak self] in
            guard let self, !self.stopping, self.children[name]?.process == nil else { return }
            self.logger.info("restarting child", metadata: ["child": "\(name)", "restarts": "\(self.children[name]?.restarts ?? 0)"])
            self.start(name)
        }
    }

    /// Tells systemd how things are: READY=1 once (every child ready), STATUS= on change.
    private func updateStatus() {
        let ready = children.values.filter(\.ready).count
        let looping = children.values.filter { $0.quickExits >= 5 }.map(\.spec.name).sorted()
        let restarts = children.values.reduce(0) { $0 + $1.restarts }
        var status = "\(ready)/\(children.count) children ready, \(restarts) restarts"
        if !looping.isEmpty { status += "; crash-looping: \(looping.joined(separator: ", "))" }
        if stopping { status = "stopping" }
        if !toldReady && ready == children.count && !stopping {
            toldReady = true
            systemd.send(["READY": "1", "STATUS": status])
            lastStatus = status
            logger.info("ready", metadata: ["children": "\(children.count)"])
        } else if status != lastStatus {
            systemd.send(["STATUS": status])
            lastStatus = status
        }
    }

    private func watchdogPing() {
        // Pinging proves the supervisor's queue runs; children have their own liveness.
        systemd.send(["WATCHDOG": "1"])
    }

    private func beginStop(signal sig: Int32) {
        guard !stopping else { return }
        stopping = true
        systemd.send(["STOPPING": "1", "STATUS": "stopping"])
        let running = children.filter { $0.value.process != nil }
        logger.info("stopping", metadata: ["signal": "\(sig)", "children": "\(running.count)"])
        if running.isEmpty { done.signal(); return }
        // The frontend first: it closes WebSockets with 1001 and drains its
        // pending commands while the workers still answer.
        if let frontend = children["frontend"]?.process {
            kill(frontend.pid, SIGTERM)
            queue.asyncAfter(deadline: .now() + graceSeconds / 2) { [weak self] in self?.stopWorkers() }
            // Workers follow as soon as the frontend is gone.
            frontend.onExit = { [weak self] process in
                self?.exited("frontend", process: process)
                self?.stopWorkers()
            }
        } else {
            stopWorkers()
        }
        queue.asyncAfter(deadline: .now() + graceSeconds) { [weak self] in
            guard let self else { return }
            for (name, child) in self.children {
                guard let process = child.process else { continue }
                self.logger.warning("child did not stop in time, killing", metadata: ["child": "\(name)"])
                kill(process.pid, SIGKILL)
            }
        }
    }

    // MARK: Reload

    /// SIGHUP: reads the configuration again and applies what can change
    /// without a restart: the log level and the receipts worker count here;
    /// the new limits reach each child at its next (rolling) restart.
    private func reload() {
        guard !stopping else { return }
        systemd.send(["RELOADING": "1", "MONOTONIC_USEC": String(Self.monotonicMicros())])
        let load = reloadConfig
        let queue = self.queue
        Task { [weak self] in
            let result: Result<ChatConfig, any Error>
            do { result = .success(try await load()) } catch { result = .failure(error) }
            queue.async { [weak self] in self?.applyReload(result) }
        }
    }

    private func applyReload(_ result: Result<ChatConfig, any Error>) {
        switch result {
        case .failure(let error):
            logger.error("reload failed, keeping the running configuration", metadata: ["error": "\(error)"])
        case .success(let fresh):
            if let level = Logger.Level(rawValue: fresh.logLevel) { logger.logLevel = level }
            let receipts = fresh.receiptsWorkers
            let unchangeable = fresh.listen != config.listen || fresh.dataDir != config.dataDir || fresh.runtimeDir != config.runtimeDir
            config.logLevel = fresh.logLevel
            config.hangTimeoutSeconds = fresh.hangTimeoutSeconds
            logger.info("reloaded", metadata: [
                "log.level": "\(fresh.logLevel)", "receipts.workers": "\(receipts)",
                "store.workers": "\(fresh.resolvedStoreWorkers)",
                "needs.restart": "\(unchangeable ? "listen or directories changed: restart to apply" : "no")",
            ])
            if config.run != "frontend" { scale(role: "receipts", to: receipts) { _ in } }
            config.receiptsWorkers = receipts
            if fresh.resolvedStoreWorkers != storeShards && config.run == "all" {
                let logger = self.logger
                scale(role: "store", to: fresh.resolvedStoreWorkers) { logger.info("store scale after reload", metadata: ["result": "\($0)"]) }
            }
        }
        systemd.send(["READY": "1", "STATUS": lastStatus])
    }

    static func monotonicMicros() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
    }

    // MARK: Control

    /// A control-socket command (on `queue`).
    private func command(_ line: String, reply: @escaping @Sendable (String) -> Void) {
        let words = line.split(separator: " ").map(String.init)
        switch (words.first, words.count) {
        case ("status", 1):
            reply(statusJSON())
        case ("restart", 2):
            let targets = children.keys.filter { $0 == words[1] || $0.hasPrefix(words[1] + ".") }.sorted()
            guard !targets.isEmpty else { return reply(Self.json(["error": "no child or role named \(words[1])"])) }
            logger.info("rolling restart", metadata: ["children": "\(targets.joined(separator: ","))"])
            rollingRestart(targets, done: [], reply: reply)
        case ("scale", 3):
            guard let count = Int(words[2]), count >= 1, count <= 64 else { return reply(Self.json(["error": "scale takes a count from 1 to 64"])) }
            scale(role: words[1], to: count, reply: reply)
        default:
            reply(Self.json(["error": "commands: status | restart <child|role> | scale <role> <n>"]))
        }
    }

    private func statusJSON() -> String {
        let now = Date()
        // Queue depth: what the frontends sent to a queue and have no answer
        // for yet (waiting in the broker or a worker's socket, being handled,
        // or its reply on the way). ZeroMQ does not count its queues.
        var queues: [String: Int] = [:]
        for child in children.values where child.process != nil {
            queues.merge(child.outstanding, uniquingKeysWith: +)
        }
        let rows = children.values.sorted { $0.spec.name < $1.spec.name }.map { child -> [String: Any] in
            let parts = child.spec.name.split(separator: ".")
            let role = String(parts[0])
            // store.1 drains queue store-1; the other roles' workers share one.
            let queue = Role(rawValue: role).map { Endpoints.queue($0, shard: parts.count > 1 ? Int(parts[1]) ?? 0 : 0) }
            return [
                "queue_depth": role == "frontend" ? child.outstanding.values.reduce(0, +) : queue.flatMap { queues[$0] } ?? 0,
                "child": child.spec.name,
                "role": role,
                "pid": child.process.map { Int($0.pid) } ?? NSNull(),
                "ready": child.ready,
                "uptime_seconds": child.process == nil ? NSNull() : (now.timeIntervalSince(child.lastStart) * 10).rounded() / 10,
                "restarts": child.restarts,
                "last_heartbeat_seconds_ago": child.ready ? (now.timeIntervalSince(child.lastHeartbeat) * 10).rounded() / 10 : NSNull(),
            ]
        }
        return Self.json(["children": rows, "queues": queues, "status": lastStatus])
    }

    static func json(_ object: [String: Any]) -> String {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// One child at a time: SIGTERM, wait for the replacement's READY=1, then the next.
    private func rollingRestart(_ names: [String], done: [String], reply: @escaping @Sendable (String) -> Void) {
        guard let name = names.first else { return reply(Self.json(["restarted": done])) }
        guard let process = children[name]?.process else { return rollingRestart(Array(names.dropFirst()), done: done, reply: reply) }
        let old = process.pid
        // A requested stop is not a crash: it must not count towards backoff.
        children[name]?.quickExits = -1
        kill(old, SIGTERM)
        let deadline = Date().addingTimeInterval(config.hangTimeoutSeconds + graceSeconds)
        awaitCondition(deadline: deadline, failure: { reply(Self.json(["error": "\(name) did not come back", "restarted": done])) }) {
            let child = self.children[name]
            return child?.ready == true && child?.process.map { $0.pid != old } == true
        } then: {
            self.rollingRestart(Array(names.dropFirst()), done: done + [name], reply: reply)
        }
    }

    /// Changes how many workers a role runs: store shards (see `scaleStore`)
    /// or receipts workers (round robin on one queue). Search keeps one index
    /// file and files is I/O-bound: one each.
    private func scale(role: String, to count: Int, reply: @escaping @Sendable (String) -> Void) {
        if role == "store" { return scaleStore(to: count, reply: reply) }
        guard config.run != "frontend" else { return reply(Self.json(["error": "this host runs no workers (run: frontend)"])) }
        guard role == "receipts" else {
            return reply(Self.json(["error": "store and receipts scale at run time; search and files run one worker each"]))
        }
        let current = children.keys.filter { $0.hasPrefix(role + ".") }.sorted { Int($0.split(separator: ".")[1])! < Int($1.split(separator: ".")[1])! }
        if count > current.count {
            for index in current.count..<count {
                let spec = workerSpec(role, index)
                children[spec.name] = ChildState(spec: spec)
                start(spec.name)
            }
        } else {
            stop(children: Array(current.suffix(current.count - count)))
        }
        logger.info("scaled", metadata: ["role": "\(role)", "from": "\(current.count)", "to": "\(count)"])
        updateStatus()
        reply(Self.json(["role": role, "workers": count]))
    }

    /// Changes the store shard count while serving. Rooms move to the shard
    /// their id hashes to under the new count; per-room order holds because a
    /// frontend switches only once nothing it sent to a store shard is
    /// unanswered, holding back (in order) what comes meanwhile. So: new
    /// shards start (and say READY), the broker announces the count, every
    /// frontend reports it in its heartbeat, and only then do shards beyond
    /// the count stop. Lasts until the supervisor restarts (set
    /// `storeWorkers` in the configuration and reload to keep it).
    ///
    /// If the new shards do not come up, the change is undone. If frontends
    /// do not confirm in time, the broker keeps announcing the new count and
    /// the old shards keep running; running the same command again finishes it.
    private func scaleStore(to count: Int, reply: @escaping @Sendable (String) -> Void) {
        guard config.run == "all" else {
            return reply(Self.json(["error": "with the frontend and the workers on different hosts, set storeWorkers on both and restart"]))
        }
        guard !storeScaleInProgress else { return reply(Self.json(["error": "a store scale is in progress"])) }
        let from = storeShards
        storeScaleInProgress = true
        storeShards = count
        logger.info("scaling store", metadata: ["from": "\(from)", "to": "\(count)"])
        // A frontend (re)started from now on begins with the new count.
        children["frontend"]?.spec = frontendSpec
        broker?.add(queues: (0..<count).map { Endpoints.queue(.store, shard: $0) })
        // Shards a failed scale-down left running are reused, not started twice.
        let started = (0..<count).map { "store.\($0)" }.filter { children[$0] == nil }
        for name in started {
            children[name] = ChildState(spec: workerSpec("store", Int(name.dropFirst(6))!))
            start(name)
        }
        let finish: @Sendable (String) -> Void = { [weak self] answer in
            self?.storeScaleInProgress = false
            self?.updateStatus()
            reply(answer)
        }
        let deadline = Date().addingTimeInterval(config.hangTimeoutSeconds + Double(config.requestTimeoutMilliseconds) / 1000)
        awaitCondition(deadline: deadline, failure: {
            // Frontends were not told yet: undo.
            self.storeShards = from
            self.children["frontend"]?.spec = self.frontendSpec
            self.stop(children: started)
            finish(Self.json(["error": "new store shards did not become ready; still \(from) shards"]))
        }) {
            (0..<count).allSatisfy { self.children["store.\($0)"]?.ready == true }
        } then: {
            self.broker?.announce(storeShards: count)
            self.awaitCondition(deadline: deadline, failure: {
                finish(Self.json(["error": "frontends did not confirm \(count) shards in time; shards beyond it keep running, run this again to finish"]))
            }) {
                self.children.values.filter { $0.spec.name == "frontend" && $0.process != nil }.allSatisfy { $0.storeShards == count }
            } then: {
                self.stop(children: self.children.keys.filter { $0.hasPrefix("store.") && Int($0.dropFirst(6)).map { $0 >= count } == true })
                self.logger.info("scaled", metadata: ["role": "store", "from": "\(from)", "to": "\(count)"])
                finish(Self.json(["role": "store", "workers": count]))
            }
        }
    }

    /// Children no longer wanted: forgotten, then SIGTERM (SIGKILL after the grace).
    private func stop(children names: [String]) {
        for name in names {
            guard let process = children.removeValue(forKey: name)?.process else { continue }
            kill(process.pid, SIGTERM)
            queue.asyncAfter(deadline: .now() + graceSeconds) {
                if process.termination == nil { kill(process.pid, SIGKILL) }
            }
        }
    }

    /// Checks `condition` on the queue every 50 ms until it holds (`then`) or the deadline passes (`failure`).
    private func awaitCondition(
        deadline: Date, failure: @escaping @Sendable () -> Void, _ condition: @escaping @Sendable () -> Bool, then: @escaping @Sendable () -> Void
    ) {
        if condition() { return then() }
        if Date() > deadline || stopping { return failure() }
        queue.asyncAfter(deadline: .now() + 0.05) { [weak self] in
            self?.awaitCondition(deadline: deadline, failure: failure, condition, then: then)
        }
    }

    private func stopWorkers() {
        for (name, child) in children where name != "frontend" {
            if let process = child.process { kill(process.pid, SIGTERM) }
        }
        if children.values.allSatisfy({ $0.process == nil }) { done.signal() }
    }
}
