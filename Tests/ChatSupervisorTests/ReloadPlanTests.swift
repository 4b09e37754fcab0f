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
        for change in [{ $0.maxFrameBytes = 1024 }, { $0.jwtIssuer = "issuer" }, { $0.socketEventBurst = 5 }, { $0.rateLimits = false },
            { $0.accessLog = true }, { $0.webClient = false }] as [(inout ChatConfig) -> Void] {
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

    /// With `listen` or a directory changed, the children keep the running
    /// values (pinned in their environment): the log says what needs a full
    /// restart, and the other changes are restarted for as usual.
    @Test func listenOrADirectoryChangedIsOnlyLogged() {
        let plan = ReloadPlan(from: running, to: changed {
            $0.listen = "127.0.0.1:9000"
            $0.dataDir = "/elsewhere"
            $0.maxFrameBytes = 1024
        })
        #expect(plan.frontends && !plan.workers && plan.needsFullRestart == ["listen", "dataDir"], "\(plan)")
        let only = ReloadPlan(from: running, to: changed { $0.bus = "tcp://127.0.0.1:7400"; $0.run = .frontend })
        #expect(!only.restartsAny && only.needsFullRestart == ["bus", "run"], "\(only)")
        // Every worker writes the one database: a reload cannot move some of them.
        let moved = ReloadPlan(from: running, to: changed { $0.database = "postgres://chatd@db.example.com/chatd" })
        #expect(!moved.restartsAny && moved.needsFullRestart == ["database"], "\(moved)")
        // Set up once per process (the reports, the merge, the route): all on or all off.
        let started = ReloadPlan(from: running, to: changed { $0.logFormat = .json; $0.metrics = false })
        #expect(!started.restartsAny && started.needsFullRestart == ["logFormat", "metrics"], "\(started)")
    }

    /// A machine past the start's READY=1.
    func started() -> ReloadMachine {
        var machine = ReloadMachine(running: running)
        #expect(machine.startedUp().isEmpty)
        return machine
    }

    /// A SIGHUP before the start's READY=1 sends neither RELOADING=1 nor
    /// READY=1 (systemd would end the start early): it is held, and begins
    /// once the start's READY=1 is sent.
    @Test func aSignalBeforeTheStartIsHeldUntilItsReady() {
        var machine = ReloadMachine(running: running)
        #expect(machine.signal().isEmpty && machine.signal().isEmpty && machine.phase == .idle)
        #expect(machine.startedUp() == [.notifyReloading, .read] && machine.phase == .reading, "two held signals, one reload")
        #expect(machine.startedUp().isEmpty)
        #expect(machine.read(running) == [.apply(running, ReloadPlan(from: running, to: running))])
        #expect(machine.applied(succeeded: true) == [.notifyReady])
        var quiet = ReloadMachine(running: running)
        #expect(quiet.startedUp().isEmpty && quiet.signal() == [.notifyReloading, .read])
    }

    /// READY=1 follows the apply even when no child restarts: what is applied
    /// in place waits for a `ctl restart` under way, and READY=1 for it.
    @Test func readyFollowsTheApplyEvenWithoutRestarts() {
        var machine = started()
        _ = machine.signal()
        let fresh = changed { $0.receiptsWorkers = 3 }
        #expect(machine.read(fresh) == [.apply(fresh, ReloadPlan(from: running, to: fresh))] && machine.phase == .applying)
        #expect(machine.signal().isEmpty)
        #expect(machine.applied(succeeded: true) == [.read] && machine.childrenRead == fresh)
        #expect(machine.read(fresh).count == 1 && machine.applied(succeeded: true) == [.notifyReady] && machine.phase == .idle)
    }

    /// The children read the running `listen` and directories whatever the
    /// file says: what they read keeps those, so every reload of that file
    /// says again that they need a full restart, and restarts nothing more.
    @Test func whatTheChildrenReadKeepsTheFixedSettings() {
        var machine = started()
        let fresh = changed {
            $0.listen = "127.0.0.1:9000"
            $0.maxFrameBytes = 1024
        }
        _ = machine.signal()
        _ = machine.read(fresh)
        #expect(machine.applied(succeeded: true) == [.notifyReady])
        #expect(machine.childrenRead.listen == running.listen && machine.childrenRead.maxFrameBytes == 1024)
        _ = machine.signal()
        let again = machine.read(fresh)
        let plan = ReloadPlan(from: machine.childrenRead, to: fresh)
        #expect(again == [.apply(fresh, plan)] && !plan.restartsAny && plan.needsFullRestart == ["listen"])
    }

    /// A SIGHUP during a reload is queued; several fold into one more read,
    /// and READY=1 follows only the last.
    @Test func aSignalDuringAReloadIsFoldedIntoOneMore() {
        var machine = started()
        let first = machine.signal()
        #expect(first == [.notifyReloading, .read])
        let whileReading = machine.signal()
        #expect(whileReading.isEmpty && machine.phase == .reading)
        let fresh = changed { $0.maxFrameBytes = 1024 }
        let applied = machine.read(fresh)
        #expect(applied == [.apply(fresh, ReloadPlan(from: running, to: fresh))] && machine.phase == .applying)
        let whileRestarting = machine.signal() + machine.signal()
        #expect(whileRestarting.isEmpty)
        let done = machine.applied(succeeded: true)
        #expect(done == [.read] && machine.childrenRead == fresh, "one more read for both signals")
        // Read again: nothing more changed.
        let again = machine.read(fresh)
        #expect(again == [.apply(fresh, ReloadPlan(from: fresh, to: fresh))] && machine.phase == .applying)
        #expect(machine.applied(succeeded: true) == [.notifyReady] && machine.phase == .idle)
        let next = machine.signal()
        #expect(next == [.notifyReloading, .read])
    }

    @Test func anUnreadableFileEndsTheReload() {
        var machine = started()
        _ = machine.signal()
        let actions = machine.read(nil)
        #expect(actions == [.notifyReady] && machine.phase == .idle && machine.childrenRead == running)
    }

    /// Restarts that failed leave the children on what they read: the next
    /// reload of the same file restarts them again.
    @Test func failedRestartsAreTriedAgainByTheNextReload() {
        var machine = started()
        let fresh = changed { $0.maxMessageChars = 100 }
        _ = machine.signal()
        _ = machine.read(fresh)
        let failed = machine.applied(succeeded: false)
        #expect(failed == [.notifyReady] && machine.childrenRead == running)
        _ = machine.signal()
        let again = machine.read(fresh)
        #expect(again == [.apply(fresh, ReloadPlan(from: running, to: fresh))] && machine.phase == .applying)
    }
}
