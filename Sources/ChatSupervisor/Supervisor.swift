import ChatBus
import ChatWire
import ChatConfig
import Foundation
import Logging

/// One child process the supervisor keeps running.
struct ChildSpec: Sendable {
    /// `frontend` or `store.<n>`.
    var name: String
    var arguments: [String]
}

/// `chatd serve`: owns the bus broker and the children, nothing else. Spawns
/// the frontend and the store workers, restarts a child that exits (at most
/// once a second per child, like runit's runsv), and turns SIGTERM/SIGINT into
/// an orderly stop: children get SIGTERM, stragglers SIGKILL after the grace.
public final class Supervisor: @unchecked Sendable {
    // All mutable state is touched only on `queue`.
    private let queue = DispatchQueue(label: "chatd.supervisor")
    private let config: ChatConfig
    private let executable: String
    private let baseArguments: [String]
    private let logger: Logger
    private let graceSeconds: Double
    private var children: [String: Process] = [:]
    private var lastStart: [String: Date] = [:]
    private var restarts: [String: Int] = [:]
    private var stopping = false
    private var signalSources: [any DispatchSourceSignal] = []
    private let done = DispatchSemaphore(value: 0)
    private var broker: Broker?

    /// - Parameters:
    ///   - executable: the chatd binary (the supervisor spawns itself).
    ///   - baseArguments: passed to every child before its own (e.g. `--config FILE`).
    public init(config: ChatConfig, executable: String, baseArguments: [String], logger: Logger, graceSeconds: Double = 10) {
        self.config = config
        self.executable = executable
        self.baseArguments = baseArguments
        self.logger = logger
        self.graceSeconds = graceSeconds
    }

    var specs: [ChildSpec] {
        let shards = config.resolvedStoreWorkers
        var specs = [ChildSpec(name: "frontend", arguments: ["frontend", "--shards", String(shards)])]
        for shard in 0..<shards {
            specs.append(ChildSpec(name: "store.\(shard)", arguments: ["worker", "--role", "store", "--shard", String(shard), "--shards", String(shards)]))
        }
        // One each of the other roles: receipts may be scaled by config;
        // search owns one index file, files is I/O-bound.
        for (role, count) in [("receipts", config.receiptsWorkers), ("search", 1), ("files", 1)] {
            for index in 0..<count {
                specs.append(ChildSpec(name: "\(role).\(index)", arguments: ["worker", "--role", role, "--shard", String(index), "--shards", String(shards)]))
            }
        }
        return specs
    }

    /// Runs until SIGTERM or SIGINT; returns the process exit status.
    public func run() throws -> Int32 {
        let runtime = config.resolvedRuntimeDir
        try FileManager.default.createDirectory(atPath: runtime, withIntermediateDirectories: true)
        // ipc:// paths are Unix socket paths: the kernel allows 107 bytes.
        guard ("ipc://" + runtime + "/store-999.out").utf8.count < 107 + 6 else {
            throw ConfigError.invalid("runtimeDir", "\(runtime) is too long for Unix socket paths")
        }
        let queues = (0..<config.resolvedStoreWorkers).map { Endpoints.queue(.store, shard: $0) }
            + Role.allCases.filter { $0 != .store }.map { Endpoints.queue($0) }
        let broker = try Broker(runtimeDir: runtime, queues: queues, logger: logger)
        try broker.start()
        self.broker = broker

        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { [weak self] in self?.beginStop(signal: sig) }
            source.resume()
            signalSources.append(source)
        }
        queue.sync {
            logger.info("supervisor starting", metadata: ["store.workers": "\(config.resolvedStoreWorkers)", "pid": "\(getpid())"])
            for spec in specs { start(spec) }
        }
        done.wait()
        broker.stop()
        return 0
    }

    private func start(_ spec: ChildSpec) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !stopping else { return }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = spec.arguments + baseArguments
        process.terminationHandler = { [weak self] process in
            guard let self else { return }
            self.queue.async { self.exited(spec, process: process) }
        }
        do {
            try process.run()
            children[spec.name] = process
            lastStart[spec.name] = Date()
            logger.info("child started", metadata: ["child": "\(spec.name)", "pid": "\(process.processIdentifier)"])
        } catch {
            logger.error("child failed to start", metadata: ["child": "\(spec.name)", "error": "\(error)"])
            scheduleRestart(spec)
        }
    }

    private func exited(_ spec: ChildSpec, process: Process) {
        let how = process.terminationReason == .uncaughtSignal ? "signal" : "exit"
        logger.log(level: stopping ? .info : .warning, "child exited", metadata: [
            "child": "\(spec.name)", "pid": "\(process.processIdentifier)", "\(how)": "\(process.terminationStatus)",
        ])
        if children[spec.name] === process { children[spec.name] = nil }
        if stopping {
            if children.isEmpty { done.signal() }
            return
        }
        scheduleRestart(spec)
    }

    /// Restarts at once unless the child started less than a second ago.
    private func scheduleRestart(_ spec: ChildSpec) {
        let since = lastStart[spec.name].map { Date().timeIntervalSince($0) } ?? 10
        let delay = max(0, 1 - since)
        restarts[spec.name, default: 0] += 1
        queue.asyncAfter(deadline: .now() + delay) { [weak self] in
            guard let self, !self.stopping else { return }
            self.logger.info("restarting child", metadata: ["child": "\(spec.name)", "restarts": "\(self.restarts[spec.name] ?? 0)"])
            self.start(spec)
        }
    }

    private func beginStop(signal sig: Int32) {
        guard !stopping else { return }
        stopping = true
        logger.info("stopping", metadata: ["signal": "\(sig)", "children": "\(children.count)"])
        if children.isEmpty { done.signal(); return }
        // The frontend first: it closes WebSockets with 1001 and drains its
        // pending commands while the workers still answer.
        if let frontend = children["frontend"] {
            kill(frontend.processIdentifier, SIGTERM)
            queue.asyncAfter(deadline: .now() + graceSeconds / 2) { [weak self] in self?.stopWorkers() }
            // Workers follow as soon as the frontend is gone.
            frontend.terminationHandler = { [weak self] _ in
                guard let self else { return }
                self.queue.async {
                    self.children["frontend"] = nil
                    self.logger.info("child exited", metadata: ["child": "frontend"])
                    self.stopWorkers()
                }
            }
        } else {
            stopWorkers()
        }
        queue.asyncAfter(deadline: .now() + graceSeconds) { [weak self] in
            guard let self else { return }
            for (name, child) in self.children {
                self.logger.warning("child did not stop in time, killing", metadata: ["child": "\(name)"])
                kill(child.processIdentifier, SIGKILL)
            }
        }
    }

    private func stopWorkers() {
        for (name, child) in children where name != "frontend" {
            kill(child.processIdentifier, SIGTERM)
        }
        if children.isEmpty { done.signal() }
    }
}
