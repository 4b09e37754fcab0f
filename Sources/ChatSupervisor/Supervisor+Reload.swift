import ChatConfig
import ChatWire
import Foundation
import Logging

extension Supervisor {
    /// SIGHUP: reads the configuration again and applies what can change
    /// without a restart: the log level, the frontend and receipts worker
    /// counts and the store shard count here;
    /// the new limits reach each child at its next (rolling) restart.
    func reload() {
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

    func applyReload(_ result: Result<ChatConfig, any Error>) {
        // SIGTERM came while the file was read: no scaling, and no READY=1 after STOPPING=1.
        guard !stopping else { return logger.info("reload dropped: the supervisor is stopping") }
        switch result {
        case .failure(let error):
            logger.error("reload failed, keeping the running configuration", metadata: ["error": "\(error)"])
        case .success(let fresh):
            if let level = Logger.Level(rawValue: fresh.logLevel) { logger.logLevel = level }
            let receipts = fresh.receiptsWorkers
            let unchangeable = fresh.listen != config.listen || fresh.dataDir != config.dataDir || fresh.runtimeDir != config.runtimeDir
            config.logLevel = fresh.logLevel
            config.hangTimeoutSeconds = fresh.hangTimeoutSeconds
            for name in children.keys { children[name]?.machine.policy = policy }
            logger.info("reloaded", metadata: [
                "log.level": "\(fresh.logLevel)", "receipts.workers": "\(receipts)", "frontends": "\(fresh.resolvedFrontends)",
                "store.workers": "\(fresh.resolvedStoreWorkers)",
                "needs.restart": "\(unchangeable ? "listen or directories changed: restart to apply" : "no")",
            ])
            if config.run.runsFrontend && fresh.resolvedFrontends != frontendCount { scaleFrontends(to: fresh.resolvedFrontends) }
            config.frontends = fresh.frontends
            // A standby read the configuration when it started; promoted
            // later, it would serve with the old limits. Idle, they are cheap
            // to start again (as `ctl restart <role>` does first): restarted
            // before the plan starts any new ones, and before the receipts
            // scale below, which would promote one at once.
            restartStandbys(for: children.keys.filter { $0.worker != nil })
            config.standbys = fresh.standbys
            applyStandbyPlan()
            if config.run.runsWorkers { scale(role: .receipts, to: receipts) { _ in } }
            config.receiptsWorkers = receipts
            if fresh.resolvedStoreWorkers != storeShards && config.run == .all {
                let logger = self.logger
                scale(role: .store, to: fresh.resolvedStoreWorkers) { logger.info("store scale after reload", metadata: ["result": "\($0)"]) }
            }
        }
        systemd.send(["READY": "1", "STATUS": lastStatus])
    }
}
