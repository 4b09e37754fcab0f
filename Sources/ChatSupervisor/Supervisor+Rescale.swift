import ChatWire
import Foundation

extension Supervisor {
    /// Changes how many workers a role runs: store shards (see `scaleStore`)
    /// or receipts workers (round robin on one queue). Search keeps one index
    /// file and files is I/O-bound: one each.
    func scale(role: Role?, to count: Int, reply: @escaping @Sendable (String) -> Void) {
        if role == .store { return scaleStore(to: count, reply: reply) }
        guard config.run.runsWorkers else { return reply(Self.json(["error": "this host runs no workers (run: frontend)"])) }
        guard role == .receipts else {
            return reply(Self.json(["error": "store and receipts scale at run time; search and files run one worker each"]))
        }
        let current = children.keys.compactMap(\.worker).filter { $0.role == .receipts }.sorted()
        if count > current.count {
            for index in current.count..<count { add(workerSpec(WorkerName(.receipts, index))) }
        } else {
            retire(current.suffix(current.count - count).map(ChildName.worker))
        }
        logger.info("scaled", metadata: ["role": "receipts", "from": "\(current.count)", "to": "\(count)"])
        updateStatus()
        reply(Self.json(["role": "receipts", "workers": count]))
    }

    /// Adds frontends, or retires those in the highest slots (a reload that
    /// changes `frontends`). A retired frontend closes its WebSockets with
    /// 1012 and its clients reconnect to the others; the socket they share
    /// stays open, so no connection is refused meanwhile.
    func scaleFrontends(to count: Int) {
        let from = frontendSlots.count
        frontendCount = count
        for slot in 0..<count where children[.frontend(slot)] == nil { add(frontendSpec(slot)) }
        let retired = frontendSlots.filter { $0 >= count }
        // A slot between lives (crashed, in backoff) has no process whose
        // exit would close its sessions (`retiredExited`): closed now.
        let processless = retired.filter { children[.frontend($0)]?.machine.pid == nil }
        retire(retired.map(ChildName.frontend))
        for slot in processless { resetSessions(ofFrontend: ChildName.frontend(slot).description) }
        // Connections still queued on a retired slot's own socket are reset.
        for slot in retired { closeSlotSocket(slot, keepingPortFor: 0) }
        logger.info("scaled", metadata: ["role": "frontend", "from": "\(from)", "to": "\(count)"])
        updateStatus()
    }

    /// Changes the store shard count while serving. Rooms move to the shard
    /// their id hashes to under the new count; per-room order holds because a
    /// frontend switches only once nothing it sent to a store shard is
    /// unanswered, holding back (in order) what comes meanwhile. So, in two
    /// phases: new shards start and say READY (`waitForNewShards`), then the
    /// broker announces the count and every frontend reports it in its
    /// heartbeat, and only then do shards beyond the count stop
    /// (`waitForFrontends`). Lasts until the supervisor restarts (set
    /// `storeWorkers` in the configuration and reload to keep it).
    ///
    /// If the new shards do not come up, the change is undone. If frontends
    /// do not confirm in time, the broker keeps announcing the new count and
    /// the old shards keep running; running the same command again finishes it.
    func scaleStore(to count: Int, reply: @escaping @Sendable (String) -> Void) {
        guard config.run == .all else {
            return reply(Self.json(["error": "with the frontend and the workers on different hosts, set storeWorkers on both and restart"]))
        }
        guard !storeScaleInProgress else { return reply(Self.json(["error": "a store scale is in progress"])) }
        let from = storeShards
        storeScaleInProgress = true
        storeShards = count
        logger.info("scaling store", metadata: ["from": "\(from)", "to": "\(count)"])
        // A frontend (re)started from now on begins with the new count.
        refreshFrontendSpecs()
        broker?.add(queues: (0..<count).map { Endpoints.queue(.store, shard: $0) })
        // Shards a failed scale-down left running are reused, not started twice.
        let started = (0..<count).map { ChildName.worker(WorkerName(.store, $0)) }.filter { children[$0] == nil }
        for name in started { add(workerSpec(name.worker!)) }
        let finish: @Sendable (String) -> Void = { [weak self] answer in
            self?.storeScaleInProgress = false
            self?.updateStatus()
            reply(answer)
        }
        let deadline = Uptime.now() + config.hangTimeoutSeconds + Double(config.requestTimeoutMilliseconds) / 1000
        waitForNewShards(count, from: from, started: started, deadline: deadline, finish: finish)
    }

    /// Phase one: every shard below `count` says READY=1, or the change is undone.
    private func waitForNewShards(
        _ count: Int, from: Int, started: [ChildName], deadline: Uptime, finish: @escaping @Sendable (String) -> Void
    ) {
        waiters.wait(on: queue, until: deadline) { [unowned self] in
            (0..<count).allSatisfy { children[.worker(WorkerName(.store, $0))]?.machine.isReady == true }
        } then: { [unowned self] in
            broker?.announce(storeShards: count)
            waitForFrontends(count, from: from, deadline: deadline, finish: finish)
        } failure: { [unowned self] in
            // Frontends were not told yet: undo.
            storeShards = from
            refreshFrontendSpecs()
            retire(started)
            finish(Self.json(["error": "new store shards did not become ready; still \(from) shards"]))
        }
    }

    /// Phase two: every running frontend's heartbeat reports `count`; then
    /// the shards beyond it stop.
    private func waitForFrontends(_ count: Int, from: Int, deadline: Uptime, finish: @escaping @Sendable (String) -> Void) {
        waiters.wait(on: queue, until: deadline) { [unowned self] in
            children.values.filter { $0.spec.name.isFrontend && $0.process != nil }.allSatisfy { $0.storeShards == count }
        } then: { [unowned self] in
            retire(children.keys.filter { $0.worker.map { $0.role == .store && $0.index >= count } ?? false })
            logger.info("scaled", metadata: ["role": "store", "from": "\(from)", "to": "\(count)"])
            finish(Self.json(["role": "store", "workers": count]))
        } failure: {
            finish(Self.json(["error": "frontends did not confirm \(count) shards in time; shards beyond it keep running, run this again to finish"]))
        }
    }
}
