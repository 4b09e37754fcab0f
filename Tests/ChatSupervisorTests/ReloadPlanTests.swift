import ChatConfig
import Testing

@testable import ChatSupervisor

/// Which children a reload restarts (`ReloadPlan`), and SIGHUP's course
/// (`ReloadMachine`): no process started.
@Suite struct ReloadPlanTests {
    let running = ChatConfig()

    func changed(_ change: (inout ChatConfig) -> Void) -> ChatConfig {
        var config = running
        change(&config)
        return config
    }

    @Test func theSameConfigurationRestartsNothing() {
        let plan = ReloadPlan(from: running, to: running)
        #expect(!plan.restartsAny && plan.needsFullRestart.isEmpty)
    }

    @Test func aFrontendLimitRestartsTheFrontendsOnly() {
        for change in [{ $0.maxFrameBytes = 1024 }, { $0.jwtIssuer = "issuer" }, { $0.socketEventBurst = 5 }, { $0.rateLimits = false }] as [(inout ChatConfig) -> Void] {
            let plan = ReloadPlan(from: running, to: changed(change))
            #expect(plan.frontends && !plan.workers, "\(plan)")
        }
    }

    @Test func aSettingBothReadRestartsBoth() {
        let plan = ReloadPlan(from: running, to: changed { $0.maxMessageChars = 100 })
        #expect(plan.frontends && plan.workers)
        let upload = ReloadPlan(from: running, to: changed { $0.maxUploadBytes = 1 << 20 })
        #expect(upload.frontends && upload.workers)
    }

    @Test func aWorkerSettingRestartsTheWorkersOnly() {
        let plan = ReloadPlan(from: running, to: changed { $0.typingWindowSeconds = 5 })
        #expect(plan.workers && !plan.frontends)
    }

    /// Counts, standbys, the handover switch, the hang timeout: applied by
    /// the supervisor itself; the log level: not worth a restart of every child.
    @Test func whatTheSupervisorAppliesRestartsNothing() {
        let changes: [(inout ChatConfig) -> Void] = [
            { $0.frontends = 3 }, { $0.storeWorkers = 4 }, { $0.receiptsWorkers = 2 }, { $0.standbys = false },
            { $0.frontendHandover = true }, { $0.hangTimeoutSeconds = 2 }, { $0.logLevel = "debug" },
        ]
        for change in changes {
            let plan = ReloadPlan(from: running, to: changed(change))
            #expect(!plan.restartsAny && plan.needsFullRestart.isEmpty, "\(plan)")
        }
    }

    /// With `listen` or a directory changed, a restarted child would read
    /// them: nothing is restarted, and the log says what needs a full restart.
    @Test func listenOrADirectoryChangedRestartsNoChild() {
        let plan = ReloadPlan(from: running, to: changed {
            $0.listen = "127.0.0.1:9000"
            $0.dataDir = "/elsewhere"
            $0.maxFrameBytes = 1024
        })
        #expect(!plan.restartsAny && plan.needsFullRestart == ["listen", "dataDir"])
    }

    /// A SIGHUP during a reload is queued; several fold into one more read,
    /// and READY=1 follows only the last.
    @Test func aSignalDuringAReloadIsFoldedIntoOneMore() {
        var machine = ReloadMachine(running: running)
        let first = machine.signal()
        #expect(first == [.notifyReloading, .read])
        let whileReading = machine.signal()
        #expect(whileReading.isEmpty && machine.phase == .reading)
        let fresh = changed { $0.maxFrameBytes = 1024 }
        let applied = machine.read(fresh)
        #expect(applied == [.apply(fresh, ReloadPlan(from: running, to: fresh))] && machine.phase == .restarting)
        let whileRestarting = machine.signal() + machine.signal()
        #expect(whileRestarting.isEmpty)
        let done = machine.restarted(succeeded: true)
        #expect(done == [.read] && machine.childrenRead == fresh, "one more read for both signals")
        // Read again: nothing more changed.
        let again = machine.read(fresh)
        #expect(again == [.apply(fresh, ReloadPlan(from: fresh, to: fresh)), .notifyReady] && machine.phase == .idle)
        let next = machine.signal()
        #expect(next == [.notifyReloading, .read])
    }

    @Test func anUnreadableFileEndsTheReload() {
        var machine = ReloadMachine(running: running)
        _ = machine.signal()
        let actions = machine.read(nil)
        #expect(actions == [.notifyReady] && machine.phase == .idle && machine.childrenRead == running)
    }

    /// Restarts that failed leave the children on what they read: the next
    /// reload of the same file restarts them again.
    @Test func failedRestartsAreTriedAgainByTheNextReload() {
        var machine = ReloadMachine(running: running)
        let fresh = changed { $0.maxMessageChars = 100 }
        _ = machine.signal()
        _ = machine.read(fresh)
        let failed = machine.restarted(succeeded: false)
        #expect(failed == [.notifyReady] && machine.childrenRead == running)
        _ = machine.signal()
        let again = machine.read(fresh)
        #expect(again == [.apply(fresh, ReloadPlan(from: running, to: fresh))] && machine.phase == .restarting)
    }
}
