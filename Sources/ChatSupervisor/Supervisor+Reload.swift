import ChatBus
import ChatConfig
import ChatWire
import Foundation
import Logging

extension Supervisor {
    /// SIGHUP: reads the configuration again, applies in place what the
    /// supervisor itself uses (the log level, the frontend, receipts and
    /// store counts, standbys, the handover switch), then rolling-restarts
    /// the children whose view of it changed (`ReloadPlan`): the workers,
    /// then the frontends, which hand their WebSockets over with
    /// `frontendHandover` (1012 without). RELOADING=1 first, READY=1 once
    /// those restarts are done or failed; one reload at a time
    /// (`ReloadMachine`: a SIGHUP meanwhile is queued, several fold into
    /// one; one before the start's READY=1 waits for it).
    func reload() {
        guard !stopping else { return }
        if !toldReady { logger.info("reload held until every child is ready (the start's READY=1)") }
        carryOut(reloads.signal())
    }

    /// The start's READY=1 was sent (`updateStatus`): a held SIGHUP begins.
    func reloadAfterStart() {
        carryOut(reloads.startedUp())
    }

    func applyReload(_ result: Result<ChatConfig, any Error>) {
        // SIGTERM came while the file was read: no scaling, and no READY=1 after STOPPING=1.
        guard !stopping else { return logger.info("reload dropped: the supervisor is stopping") }
        switch result {
        case .failure(let error):
            logger.error("reload failed, keeping the running configuration", metadata: ["error": "\(error)"])
            carryOut(reloads.read(nil))
        case .success(let fresh):
            // As `serve` checks at start: a pair whose halves do not match
            // would fail every handshake after the children's restart.
            do {
                try BusSecurity.check(fresh.busKeys, keyFile: fresh.busKeyFile)
            } catch {
                logger.error("reload failed, keeping the running configuration", metadata: ["error": "\(error)"])
                return carryOut(reloads.read(nil))
            }
            carryOut(reloads.read(fresh))
        }
    }

    private func carryOut(_ actions: [ReloadMachine.Action]) {
        for action in actions {
            switch action {
            case .notifyReloading:
                systemd.send(["RELOADING": "1", "MONOTONIC_USEC": String(Self.monotonicMicros())])
            case .read:
                let load = reloadConfig
                let queue = self.queue
                Task { [weak self] in
                    let result: Result<ChatConfig, any Error>
                    do { result = .success(try await load()) } catch { result = .failure(error) }
                    queue.async { [weak self] in self?.applyReload(result) }
                }
            case .apply(let fresh, let plan):
                apply(fresh, plan)
            case .notifyReady:
                guard !stopping else { continue }
                systemd.send(["READY": "1", "STATUS": lastStatus])
            }
        }
    }

    /// What a reload changes: in place first, then the restarts the plan
    /// names. One change of children at a time: a `ctl restart` or `ctl
    /// upgrade` under way ends first (it has deadlines), since what is
    /// applied in place restarts standbys and scales roles under it.
    private func apply(_ fresh: ChatConfig, _ plan: ReloadPlan) {
        waiters.wait(on: queue, until: .distantFuture) { [unowned self] in
            controlRestarts == 0
        } then: { [unowned self] in
            // Those running now; the ones a scale below adds start with the new file already.
            let before = Set(children.keys)
            applyInPlace(fresh, plan)
            guard plan.restartsAny else { return carryOut(reloads.applied(succeeded: true)) }
            restart(plan, runningBefore: before)
        } failure: { [unowned self] in
            reloadRestarted(Self.json(["error": "the supervisor is stopping"]))
        }
    }

    /// The plan's rolling restart: the workers, then the frontends.
    private func restart(_ plan: ReloadPlan, runningBefore before: Set<ChildName>) {
        let workers = plan.workers ? children.keys.filter { $0.worker != nil && before.contains($0) } : []
        let frontends = plan.frontends ? children.keys.filter { $0.isFrontend && before.contains($0) } : []
        let targets = workers.sorted { $0.description < $1.description } + frontends.sorted { $0.description < $1.description }
        logger.info("reload restarts", metadata: [
            "children": "\(targets.map(\.description).joined(separator: ","))", "handover": "\(config.frontendHandover)",
        ])
        // After a store rescale this reload began (it moves rooms between
        // shards; it has a deadline).
        waiters.wait(on: queue, until: .distantFuture) { [unowned self] in
            !storeScaleInProgress && controlRestarts == 0
        } then: { [unowned self] in
            rollingRestart(targets, done: []) { [weak self] answer in
                guard let self else { return }
                queue.async { self.reloadRestarted(answer) }
            }
        } failure: { [unowned self] in
            reloadRestarted(Self.json(["error": "the supervisor is stopping"]))
        }
    }

    private func reloadRestarted(_ answer: String) {
        let object = (try? JSONSerialization.jsonObject(with: Data(answer.utf8))) as? [String: Any]
        let error = object?["error"] as? String
        let restarted = (object?["restarted"] as? [String] ?? []).joined(separator: ",")
        if let error {
            // The children not restarted keep what they read; the next SIGHUP restarts them all again.
            logger.error("reload: restarts failed", metadata: ["error": "\(error)", "restarted": "\(restarted)"])
        } else {
            logger.info("reload: restarts done", metadata: ["restarted": "\(restarted)"])
        }
        carryOut(reloads.applied(succeeded: error == nil))
    }

    /// The settings the supervisor applies itself, without restarting a child.
    private func applyInPlace(_ fresh: ChatConfig, _ plan: ReloadPlan) {
        if let level = Logger.Level(rawValue: fresh.logLevel) { logger.logLevel = level }
        let receipts = fresh.receiptsWorkers
        let needsRestart = plan.needsFullRestart.isEmpty
            ? "no" : "\(plan.needsFullRestart.joined(separator: ", ")) changed: restart the service to apply; every child keeps the running values"
        config.logLevel = fresh.logLevel
        config.hangTimeoutSeconds = fresh.hangTimeoutSeconds
        // The store rescale's deadline and a retired frontend's drain (`retiredAfterHandoverKillDelay`).
        config.requestTimeoutMilliseconds = fresh.requestTimeoutMilliseconds
        config.frontendHandover = fresh.frontendHandover
        for name in children.keys { children[name]?.machine.policy = policy }
        // A changed peers file: the broker lets in its keys from the next
        // connection on (the children restart with it: their view changed).
        // ZAP runs only at a handshake, so a host whose key went stays
        // connected until this host restarts.
        if let keys = fresh.busKeys {
            broker?.update(keys: keys)
            let removed = (config.busKeys?.allowed ?? []).subtracting(keys.allowed)
            if broker != nil, !removed.isEmpty {
                logger.warning("removed bus keys take effect at restart: hosts connected with them stay connected until this host restarts", metadata: [
                    "removed.keys": "\(removed.sorted().joined(separator: ","))",
                ])
            }
        }
        logger.info("reloaded", metadata: [
            "log.level": "\(fresh.logLevel)", "receipts.workers": "\(receipts)", "frontends": "\(fresh.resolvedFrontends)",
            "store.workers": "\(fresh.resolvedStoreWorkers)", "needs.restart": "\(needsRestart)",
            "restarts": "\(plan.workers ? "workers" : "")\(plan.workers && plan.frontends ? "," : "")\(plan.frontends ? "frontends" : "")",
        ])
        if config.run.runsFrontend && fresh.resolvedFrontends != frontendCount { scaleFrontends(to: fresh.resolvedFrontends) }
        config.frontends = fresh.frontends
        // A standby read the configuration when it started; promoted later,
        // it would serve with the old settings. Idle, they are cheap to
        // start again (as `ctl restart <role>` does first): restarted before
        // the plan starts any new ones, and before the receipts scale below,
        // which would promote one at once.
        if plan.workers { restartStandbys(for: children.keys.filter { $0.worker != nil }) }
        config.standbys = fresh.standbys
        applyStandbyPlan()
        if config.run.runsWorkers { scale(role: .receipts, to: receipts) { _ in } }
        config.receiptsWorkers = receipts
        if fresh.resolvedStoreWorkers != storeShards && config.run == .all {
            let logger = self.logger
            scale(role: .store, to: fresh.resolvedStoreWorkers) { logger.info("store scale after reload", metadata: ["result": "\($0)"]) }
        }
    }
}
