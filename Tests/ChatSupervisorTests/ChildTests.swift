import ChatMetrics
import ChatWire
import Foundation
import Logging
import Testing

@testable import ChatSupervisor

/// The child state machine's transition table, with no process started:
/// every event goes in with its time, and the actions that come out are checked.
@Suite struct ChildTests {
    let t0 = Uptime(seconds: 1_000_000)

    /// A child spawned at `t0` as pid 100, READY=1 said if `ready`.
    func running(ready: Bool = true) -> Child {
        var child = Child()
        _ = child.handle(.start, now: t0)
        _ = child.handle(.spawned(pid: 100), now: t0)
        if ready { _ = child.handle(.reportedReady, now: t0) }
        return child
    }

    func logLevels(_ actions: [Child.Action]) -> [String: Logger.Level] {
        var levels: [String: Logger.Level] = [:]
        for case .log(let level, let message, _) in actions { levels[message] = level }
        return levels
    }

    func wake(_ actions: [Child.Action]) -> Uptime? {
        actions.lazy.compactMap { if case .wake(let at) = $0 { at } else { nil } }.first
    }

    @Test func startsSpawnsAndBecomesReady() {
        var child = Child()
        #expect(child.handle(.start, now: t0) == [.spawn(predecessorFailed: false)])
        #expect(child.isStopped)
        #expect(child.handle(.spawned(pid: 100), now: t0) == [.log(.info, "child started", ["pid": "100"])])
        #expect(child.state == .starting(pid: 100) && child.pid == 100 && !child.isReady)
        #expect(child.handle(.start, now: t0).isEmpty, "a running child is not spawned twice")
        #expect(child.handle(.reportedReady, now: t0 + 1) == [.log(.info, "child ready", [:]), .notify(.ready)])
        #expect(child.state == .ready(pid: 100) && child.isReady)
        #expect(child.handle(.reportedReady, now: t0 + 2).isEmpty, "READY=1 again is a heartbeat")
    }

    /// `/metrics` counts restarts by reason from these two counts
    /// (`chatd_child_restarts_total{reason="crash|planned"}`).
    @Test func crashesAndPlannedRestartsAreCountedApart() {
        var child = running()
        _ = child.handle(.exited(.signal(SIGKILL)), now: t0 + 10)
        #expect(child.restarts == 1 && child.plannedRestarts == 0)
        _ = child.handle(.timer, now: t0 + 12)
        _ = child.handle(.spawned(pid: 101), now: t0 + 12)
        _ = child.handle(.reportedReady, now: t0 + 12)
        _ = child.handle(.stop(restart: true, killAt: t0 + 30), now: t0 + 20)
        #expect(child.isInBackoff == false)
        _ = child.handle(.exited(.exit(0)), now: t0 + 21)
        #expect(child.restarts == 1 && child.plannedRestarts == 1 && child.isInBackoff)
        _ = child.handle(.timer, now: t0 + 23)
        _ = child.handle(.spawned(pid: 102), now: t0 + 23)
        _ = child.handle(.reportedReady, now: t0 + 23)
        _ = child.handle(.successorTookOver(child: "frontend.0"), now: t0 + 30)
        #expect(child.restarts == 1 && child.plannedRestarts == 2)
        _ = child.handle(.timer, now: t0 + 32)
        _ = child.handle(.spawned(pid: 103), now: t0 + 32)
        _ = child.handle(.stop(restart: false, killAt: t0 + 50), now: t0 + 40)
        _ = child.handle(.exited(.exit(0)), now: t0 + 41)
        #expect(child.restarts == 1 && child.plannedRestarts == 2 && child.isStopped, "a stop for good is no restart")
    }

    @Test func aSilentChildIsHungKilledOnceAndItsReplacementToldItFailed() {
        var child = running(ready: false)
        #expect(child.handle(.timer, now: t0 + 9.9).isEmpty, "the hang timeout counts from the start")
        #expect(child.handle(.heartbeat, now: t0 + 9).isEmpty)
        #expect(child.handle(.timer, now: t0 + 18.9).isEmpty, "and then from the last heartbeat")
        let killed = child.handle(.timer, now: t0 + 19.5)
        #expect(killed.contains(.kill(pid: 100, signal: SIGKILL)))
        #expect(logLevels(killed)["child stopped sending heartbeats, killing it"] == .error)
        #expect(child.state == .hung(pid: 100))
        #expect(child.handle(.timer, now: t0 + 20).isEmpty, "one kill per hang timeout")
        #expect(child.handle(.heartbeat, now: t0 + 20).isEmpty)
        #expect(child.handle(.timer, now: t0 + 30).contains(.kill(pid: 100, signal: SIGKILL)), "a SIGKILL that did not take is sent again")
        let exited = child.handle(.exited(.signal(SIGKILL)), now: t0 + 30.1)
        #expect(logLevels(exited)["child exited"] == .warning)
        #expect(child.predecessorFailed && child.restarts == 1)
        guard case .backoff = child.state else { Issue.record("\(child.state)"); return }
        let respawn = child.handle(.timer, now: t0 + 31)
        #expect(respawn.last == .spawn(predecessorFailed: true))
        _ = child.handle(.spawned(pid: 101), now: t0 + 31)
        #expect(child.state == .starting(pid: 101))
        #expect(child.handle(.timer, now: t0 + 31 + 9.9).isEmpty, "the replacement is not hung at once")
    }

    @Test func aCrashSignalFailsThePredecessorAKillFromOutsideDoesNot() {
        var crashed = running()
        _ = crashed.handle(.exited(.signal(SIGILL)), now: t0 + 60)
        #expect(crashed.predecessorFailed)
        var killed = running()
        _ = killed.handle(.exited(.signal(SIGKILL)), now: t0 + 60)
        #expect(!killed.predecessorFailed)
        var clean = running()
        _ = clean.handle(.exited(.exit(0)), now: t0 + 60)
        #expect(!clean.predecessorFailed && clean.restarts == 1)
    }

    @Test func quickExitsRestartAtOnceThenBackOffExponentiallyUpToTheCap() throws {
        var child = Child()
        var now = t0
        var delays: [TimeInterval] = []
        var looping: [Bool] = []
        _ = child.handle(.start, now: now)
        for pid in Int32(100)..<110 {
            _ = child.handle(.spawned(pid: pid), now: now)
            now += 2  // lives 2 s: a quick exit, past the one-a-second floor
            let actions = child.handle(.exited(.exit(1)), now: now)
            let at = try #require(wake(actions))
            delays.append(at.seconds(since: now))
            looping.append(logLevels(actions)["child is crash-looping"] == .error)
            #expect(child.handle(.timer, now: at - 0.01).isEmpty, "not before the backoff ends")
            #expect(child.handle(.timer, now: at).last == .spawn(predecessorFailed: false))
            now = at
        }
        #expect(delays == [0, 0, 0, 1, 2, 4, 8, 16, 30, 30])
        #expect(looping == [false, false, false, false, true, true, true, true, true, true])
        #expect(child.restarts == 10 && child.isCrashLooping)

        // A process that stays up resets the count: its exit restarts at once.
        _ = child.handle(.spawned(pid: 200), now: now)
        now += 60
        #expect(wake(child.handle(.exited(.exit(1)), now: now)) == now)
        #expect(child.quickExits == 0 && !child.isCrashLooping && child.restarts == 11)
    }

    @Test func atMostOneStartASecond() {
        var child = running()
        let actions = child.handle(.exited(.exit(0)), now: t0 + 0.25)
        #expect(wake(actions) == t0 + 1)
        #expect(child.state == .backoff(until: t0 + 1))
    }

    @Test func aPlannedRestartIsCountedApartAndIsNeitherAWarningNorACrash() {
        var child = running()
        // Crash-looping before: a requested restart clears it.
        for _ in 0..<5 {
            _ = child.handle(.exited(.signal(SIGSEGV)), now: t0)
            _ = child.handle(.timer, now: t0 + 100)
            _ = child.handle(.spawned(pid: 100), now: t0)
        }
        #expect(child.isCrashLooping && child.restarts == 5)
        _ = child.handle(.reportedReady, now: t0 + 1)
        let stop = child.handle(.stop(restart: true, killAt: t0 + 11), now: t0 + 2)
        #expect(stop == [.kill(pid: 100, signal: SIGTERM), .wake(at: t0 + 11)])
        #expect(child.state == .stopping(pid: 100, restart: true) && !child.isReady)
        #expect(child.handle(.reportedReady, now: t0 + 2.5).isEmpty, "a stopping child is not ready again")
        let exited = child.handle(.exited(.signal(SIGTERM)), now: t0 + 3)
        #expect(logLevels(exited) == ["child exited": .info])
        #expect(child.restarts == 5 && child.quickExits == 0 && !child.isCrashLooping && !child.predecessorFailed)
        #expect(child.plannedRestarts == 1)
        #expect(child.state == .backoff(until: t0 + 3))
        #expect(child.handle(.timer, now: t0 + 3).last == .spawn(predecessorFailed: false))
    }

    @Test func aPlannedRestartThatCrashesOrOutlivesItsDeadlineIsACrash() {
        // A trap while stopping: a crash, and its successor is told so.
        var crashed = running()
        _ = crashed.handle(.stop(restart: true, killAt: t0 + 11), now: t0 + 2)
        let trapped = crashed.handle(.exited(.signal(SIGTRAP)), now: t0 + 3)
        #expect(logLevels(trapped)["child exited"] == .warning)
        #expect(crashed.restarts == 1 && crashed.plannedRestarts == 0 && crashed.predecessorFailed)
        #expect(crashed.handle(.timer, now: t0 + 10).last == .spawn(predecessorFailed: true))

        // SIGTERM not obeyed by the deadline: SIGKILL, and a crash too.
        var stuck = running()
        _ = stuck.handle(.stop(restart: true, killAt: t0 + 11), now: t0 + 2)
        #expect(stuck.handle(.timer, now: t0 + 11).contains(.kill(pid: 100, signal: SIGKILL)))
        let killed = stuck.handle(.exited(.signal(SIGKILL)), now: t0 + 11.1)
        #expect(logLevels(killed)["child exited"] == .warning)
        #expect(stuck.restarts == 1 && stuck.plannedRestarts == 0)

        // Its next planned restart, obeyed in time, is planned again.
        _ = stuck.handle(.timer, now: t0 + 20)
        _ = stuck.handle(.spawned(pid: 101), now: t0 + 20)
        _ = stuck.handle(.stop(restart: true, killAt: t0 + 31), now: t0 + 21)
        #expect(logLevels(stuck.handle(.exited(.signal(SIGTERM)), now: t0 + 22))["child exited"] == .info)
        #expect(stuck.restarts == 1 && stuck.plannedRestarts == 1)
    }

    @Test func aStopForGoodEndsStoppedAndSaysSo() {
        var child = running()
        _ = child.handle(.stop(restart: false, killAt: t0 + 10), now: t0 + 1)
        #expect(child.handle(.exited(.exit(0)), now: t0 + 2) == [.log(.info, "child exited", ["pid": "100", "status": "exit 0"]), .notify(.stopped)])
        #expect(child.isStopped && child.restarts == 0)
        #expect(child.handle(.timer, now: t0 + 100).isEmpty)
        #expect(child.handle(.exited(.exit(0)), now: t0 + 101).isEmpty, "a second exit is ignored")
    }

    @Test func aChildThatIgnoresSIGTERMIsKilledAtTheDeadlineOnce() {
        var child = running()
        _ = child.handle(.stop(restart: false, killAt: t0 + 10), now: t0 + 1)
        #expect(child.handle(.timer, now: t0 + 9.9).isEmpty)
        let late = child.handle(.timer, now: t0 + 10)
        #expect(late.contains(.kill(pid: 100, signal: SIGKILL)))
        #expect(logLevels(late)["child did not stop in time, killing"] == .warning)
        #expect(child.handle(.timer, now: t0 + 11).isEmpty)
        _ = child.handle(.exited(.signal(SIGKILL)), now: t0 + 11)
        #expect(child.isStopped)
    }

    @Test func aStopDuringBackoffCancelsTheRestart() {
        var child = running()
        _ = child.handle(.exited(.exit(1)), now: t0 + 0.5)
        #expect(child.handle(.stop(restart: true, killAt: t0 + 10), now: t0 + 0.6).isEmpty, "a restart is already coming")
        #expect(child.handle(.stop(restart: false, killAt: t0 + 10), now: t0 + 0.7) == [.notify(.stopped)])
        #expect(child.isStopped)
        #expect(child.handle(.timer, now: t0 + 5).isEmpty, "the backoff's timer no longer spawns")
    }

    @Test func aStopForGoodWinsOverARestartInProgress() {
        var child = running()
        _ = child.handle(.stop(restart: true, killAt: t0 + 10), now: t0 + 1)
        #expect(child.handle(.stop(restart: false, killAt: t0 + 20), now: t0 + 2).isEmpty)
        #expect(child.state == .stopping(pid: 100, restart: false))
        _ = child.handle(.exited(.exit(0)), now: t0 + 3)
        #expect(child.isStopped)
    }

    @Test func aStopOfAHungChildRetriesItsSIGKILLAndCountsItsExitAsACrash() {
        var child = running()
        _ = child.handle(.timer, now: t0 + 11)
        #expect(child.state == .hung(pid: 100))
        #expect(child.handle(.stop(restart: false, killAt: t0 + 20), now: t0 + 11.5).isEmpty, "SIGKILL is already on its way")
        // A SIGKILL that did not take is sent again, with no grace: it was hung, not asked to go.
        #expect(child.handle(.timer, now: t0 + 11.75).contains(.kill(pid: 100, signal: SIGKILL)))
        #expect(child.handle(.timer, now: t0 + 12).isEmpty)
        let exited = child.handle(.exited(.signal(SIGKILL)), now: t0 + 12)
        #expect(logLevels(exited)["child exited"] == .warning)
        #expect(child.isStopped && child.predecessorFailed)
        #expect(child.restarts == 1 && child.quickExits == 0, "counted; it had lived past the quick-exit time")
    }

    @Test func aRollingRestartOfAHungChildIsACrashThatKeepsTheLoopCount() throws {
        // A hang timeout below the quick-exit time: a hang is then a quick exit too.
        var child = Child(policy: Child.Policy(hangTimeout: 1))
        var now = t0
        _ = child.handle(.start, now: now)
        // Four quick exits in a row.
        for pid in Int32(100)..<104 {
            _ = child.handle(.spawned(pid: pid), now: now)
            now += 2
            now = try #require(wake(child.handle(.exited(.exit(1)), now: now)))
        }
        _ = child.handle(.spawned(pid: 104), now: now)
        #expect(child.handle(.timer, now: now + 1.5).contains(.kill(pid: 104, signal: SIGKILL)))
        _ = child.handle(.stop(restart: true, killAt: now + 11.5), now: now + 1.5)
        let exited = child.handle(.exited(.signal(SIGKILL)), now: now + 1.6)
        #expect(child.quickExits == 5 && child.restarts == 5 && child.isCrashLooping, "not reset as after a planned restart")
        #expect(child.plannedRestarts == 0, "a crash, not a planned restart")
        #expect(logLevels(exited)["child is crash-looping"] == .error)
        #expect(wake(exited) == now + 1.6 + 2, "the backoff of a fifth quick exit")
        #expect(child.predecessorFailed)
    }

    @Test func aHandoverToASuccessorIsAPlannedRestartAPromotionIsNeither() {
        var frontend = running()
        let took = frontend.handle(.successorTookOver(child: "frontend.0"), now: t0 + 2)
        #expect(logLevels(took) == ["handover: successor took frontend.0 over": .info])
        #expect(frontend.plannedRestarts == 1 && frontend.restarts == 0)
        var standby = running()
        _ = standby.handle(.handedOver, now: t0 + 2)
        #expect(standby.plannedRestarts == 0 && standby.restarts == 0)
        // A stop for good (scaled away, shutting down) is no restart at all.
        var stopped = running()
        _ = stopped.handle(.stop(restart: false, killAt: t0 + 10), now: t0 + 1)
        _ = stopped.handle(.exited(.exit(0)), now: t0 + 2)
        #expect(stopped.plannedRestarts == 0 && stopped.restarts == 0)
    }

    @Test func timeIsWhatTheMachineIsGivenNotTheWallClock() {
        // Times near the clock's origin (just after boot) are nothing like
        // wall-clock dates: the machine backs off and kills on them alone.
        let boot = Uptime(seconds: 3)
        var child = Child()
        _ = child.handle(.start, now: boot)
        _ = child.handle(.spawned(pid: 100), now: boot)
        #expect(wake(child.handle(.exited(.exit(1)), now: boot + 0.25)) == boot + 1)
        #expect(child.handle(.timer, now: boot + 0.99).isEmpty)
        #expect(child.handle(.timer, now: boot + 1).last == .spawn(predecessorFailed: false))
        _ = child.handle(.spawned(pid: 101), now: boot + 1)
        #expect(child.handle(.stop(restart: false, killAt: boot + 11), now: boot + 1) == [.kill(pid: 101, signal: SIGTERM), .wake(at: boot + 11)])
        #expect(child.handle(.timer, now: boot + 11).contains(.kill(pid: 101, signal: SIGKILL)))
    }

    @Test func aFailedSpawnIsRetriedLikeAQuickExit() {
        var child = Child()
        _ = child.handle(.start, now: t0)
        let actions = child.handle(.spawnFailed("ENOENT"), now: t0)
        #expect(logLevels(actions)["child failed to start"] == .error)
        #expect(child.state == .backoff(until: t0 + 1) && child.restarts == 1 && child.quickExits == 1)
    }

    @Test func aStoppedChildIgnoresWhatComesLate() {
        var child = Child()
        #expect(child.handle(.reportedReady, now: t0).isEmpty)
        #expect(child.handle(.heartbeat, now: t0).isEmpty)
        #expect(child.handle(.exited(.exit(0)), now: t0).isEmpty)
        #expect(child.handle(.stop(restart: false, killAt: t0), now: t0).isEmpty)
        #expect(child.handle(.timer, now: t0 + 100).isEmpty)
        #expect(child.isStopped && child.restarts == 0)
    }
}

extension ChildTests {
    /// The supervisor's gauges are rendered from its children each time: a
    /// retired child's `chatd_child_up` and a drained queue's depth go away.
    @Test func childGaugesShowOnlyTheChildrenThereNow() {
        let store1 = ChildName.worker(WorkerName(.store, 1))
        let before = Supervisor.childGauges(
            [
                .init(name: .frontend(0), backoff: false, crashLooping: false, up: true),
                .init(name: store1, backoff: true, crashLooping: true, up: false),
            ],
            queueDepth: ["store-1": 4]
        )
        #expect(before.sum("chatd_child_up", matching: ["child": "frontend.0"]) == 1)
        #expect(before.samples("chatd_child_up", matching: ["child": store1.description]).count == 1)
        #expect(before.sum("chatd_child_crash_looping", matching: ["child": store1.description, "child_role": "store"]) == 1)
        #expect(before.sum("chatd_bus_queue_depth", matching: ["queue": "store-1"]) == 4)

        let after = Supervisor.childGauges([.init(name: .frontend(0), backoff: false, crashLooping: false, up: true)], queueDepth: [:])
        #expect(after.samples("chatd_child_up").count == 1)
        #expect(after.samples("chatd_child_up", matching: ["child": store1.description]).isEmpty)
        #expect(after.samples("chatd_child_backoff", matching: ["child": store1.description]).isEmpty)
        #expect(after.samples("chatd_bus_queue_depth").isEmpty)
    }
}
