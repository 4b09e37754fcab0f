import ChatConfig
import ChatWire
import Foundation

extension Supervisor {
    /// The children this host runs (`run`: all, frontend, or workers).
    var specs: [ChildSpec] {
        var specs = config.run.runsFrontend ? (0..<frontendCount).map(frontendSpec) : []
        guard config.run.runsWorkers else { return specs }
        for shard in 0..<storeShards { specs.append(workerSpec(WorkerName(.store, shard))) }
        // One each of the other roles: receipts may be scaled by config;
        // search owns one index file, files is I/O-bound; webhooks by config
        // (`webhooks.workers`; their leases let several share the outbox).
        for (role, count) in [(Role.receipts, config.receiptsWorkers), (.search, 1), (.files, config.runsFilesWorker ? 1 : 0),
                             (.webhooks, config.webhooksWorkers)] {
            for index in 0..<count { specs.append(workerSpec(WorkerName(role, index))) }
        }
        return specs + standbyPlan.roles.map(standbySpec)
    }

    /// A frontend started now in `slot` sends by the current store shard count.
    func frontendSpec(_ slot: Int) -> ChildSpec {
        ChildSpec(name: .frontend(slot), arguments: ["frontend", "--shards", String(storeShards)])
    }

    /// The frontends' slots now, in order.
    var frontendSlots: [Int] {
        children.keys.compactMap { if case .frontend(let slot) = $0 { slot } else { nil } }.sorted()
    }

    /// Frontends (re)started from now on begin with the current store shard count.
    func refreshFrontendSpecs() {
        for slot in frontendSlots { children[.frontend(slot)]?.spec = frontendSpec(slot) }
    }

    func workerSpec(_ worker: WorkerName) -> ChildSpec {
        ChildSpec(name: .worker(worker), arguments: ["worker", "--role", worker.role.rawValue, "--shard", String(worker.index)])
    }

    /// A child's environment, and the descriptors it inherits.
    func childEnvironment(for name: ChildName, predecessorFailed: Bool) -> (environment: [String: String], inherit: [CInt]) {
        var environment = ProcessInfo.processInfo.environment
        // Children report to the supervisor, never to systemd directly.
        environment["NOTIFY_SOCKET"] = (config.resolvedRuntimeDir as NSString).appendingPathComponent("notify.sock")
        environment["CHATD_CHILD"] = name.description
        // The child's parent to watch, named: one that asks only after this
        // process died would take whoever it was handed to for its parent.
        environment[Supervisor.pidVariable] = String(getpid())
        environment["CHATD_PREDECESSOR_FAILED"] = predecessorFailed ? "1" : nil
        environment["WATCHDOG_USEC"] = nil
        environment["WATCHDOG_PID"] = nil
        // What a reload does not apply stays as the supervisor runs it, over
        // whatever the file says now (`ChatConfig.fixedEnvironment`).
        environment.merge(config.fixedEnvironment) { $1 }
        // Every frontend serves a socket the supervisor holds (systemd's, or
        // one of its own per slot): the kernel hands each connection to one.
        var inherit: [CInt] = []
        if case .frontend(let slot) = name, let socket = listeningSocket(forSlot: slot) {
            inherit = [socket.fd]
            environment["CHATD_LISTEN_FD"] = String(socket.fd)
            // Port 0 became a real port: links and logs give that one.
            if let address = socket.address, config.listenAddress?.port == 0 { environment["CHAT_LISTEN"] = address }
        }
        return (environment, inherit)
    }

    /// Carries out a state machine's `spawn`, and tells it how that went.
    func spawn(_ name: ChildName, predecessorFailed: Bool) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let record = children[name] else { return }
        // A restart that comes due while the supervisor stops does not happen.
        guard !stopping else { return deliver(.stop(restart: false, killAt: Uptime.now()), to: .child(name)) }
        // A worker's ready standby takes over at once (Supervisor+Standby.swift).
        if promoteStandby(to: name, predecessorFailed: predecessorFailed) { return }
        // A frontend's successor that took the WebSockets over (Supervisor+Handover.swift).
        if adoptSuccessor(name) { return }
        let (environment, inherit) = childEnvironment(for: name, predecessorFailed: predecessorFailed)
        do {
            // A standby waits for its assignment on its standard input.
            let standby = name.isStandby ? try StandbyChannel.pair() : nil
            defer { if let standby { close(standby.childEnd) } }
            let process = try spawner.spawn(
                executable: executable, arguments: record.spec.arguments + baseArguments, environment: environment, inherit: inherit,
                standardInput: standby?.childEnd
            )
            process.assignment = standby?.channel
            process.onExit = { [weak self] process in self?.reaped(process) }
            children[name]?.process = process
            // What the previous process reported is not this one's.
            children[name]?.storeShards = nil
            children[name]?.webSockets = nil
            deliver(.spawned(pid: process.pid), to: .child(name))
        } catch {
            deliver(.spawnFailed("\(error)"), to: .child(name))
        }
    }
}
