import Foundation
import Logging

/// One child's life as the supervisor sees it: a pure state machine. Events
/// go in with the time they happen at, on the monotonic clock (`Uptime`);
/// what to do comes out as actions (spawn, signal, wake me at, tell). It
/// touches no process, clock or timer, so every transition is unit-tested
/// (ChatSupervisorTests) without starting any.
///
///     STOPPED  --start-->            (spawn)   --spawned-->   STARTING
///     STARTING --READY=1-->          READY
///     STARTING, READY --silent past the hang timeout--> HUNG (SIGKILL)
///     STARTING, READY, HUNG --exited--> BACKOFF (a crash: counted, maybe slowed)
///     STARTING, READY --stop-->      STOPPING (SIGTERM or the stop's signal; SIGKILL at the deadline)
///     HUNG     --stop-->             STOPPING (SIGKILL again at once if it lingers)
///     STOPPING --exited-->           BACKOFF (a planned restart: counted apart) or STOPPED;
///                                    counted as a crash if it was killed for hanging
///     BACKOFF  --timer due-->        (spawn)   --spawned-->   STARTING
///     BACKOFF  --stop-->             STOPPED
///     READY    --handed over-->      BACKOFF (a standby promoted: its process
///                                    serves as a worker now; not counted)
struct Child: Equatable {
    enum State: Equatable {
        /// Not running and not to be restarted: before its first start, after a stop.
        case stopped
        /// Spawned; has not said READY=1 yet.
        case starting(pid: Int32)
        /// Said READY=1 since it started.
        case ready(pid: Int32)
        /// Went silent for longer than the hang timeout and was sent SIGKILL; its exit is awaited.
        case hung(pid: Int32)
        /// Sent SIGTERM on request; after its exit it restarts (`restart`) or stays stopped.
        case stopping(pid: Int32, restart: Bool)
        /// Not running; spawned again at `until`.
        case backoff(until: Uptime)
    }

    enum Event: Equatable {
        /// The supervisor wants it running (first start, scaled up).
        case start
        /// The spawn the machine asked for succeeded.
        case spawned(pid: Int32)
        /// The spawn failed (`posix_spawn`'s error).
        case spawnFailed(String)
        /// `READY=1` from the child.
        case reportedReady
        /// `WATCHDOG=1` from the child.
        case heartbeat
        /// The process was reaped.
        case exited(ChildProcess.Termination)
        /// Stop it with `signal` (SIGTERM; a frontend that is to close its
        /// WebSockets with 1012 gets SIGUSR1), SIGKILL at `killAt`; then start
        /// it again (a rolling restart) or leave it stopped (scaled away,
        /// shutting down).
        case stop(restart: Bool, killAt: Uptime, signal: Int32 = SIGTERM)
        /// A timer fired: one the machine asked for (`wake`), or the
        /// supervisor's liveness tick, which must come often (every 250 ms):
        /// hang detection and the SIGKILL deadline of a stop rely on it.
        case timer
        /// A ready standby's process was promoted: it now belongs to the
        /// worker it became, and this child starts a new one.
        case handedOver
        /// A frontend's successor took the process's WebSockets over
        /// (Supervisor+Handover.swift): the same departure as `handedOver`,
        /// logged as what it is.
        case successorTookOver(child: String)
    }

    /// What the machine tells the supervisor to do, in order.
    enum Action: Equatable {
        /// Spawn a process; `predecessorFailed` goes to it as `CHATD_PREDECESSOR_FAILED=1`.
        case spawn(predecessorFailed: Bool)
        case kill(pid: Int32, signal: Int32)
        /// Send `.timer` at this time (earlier or extra timers are harmless).
        case wake(at: Uptime)
        /// Its readiness changed (it said READY=1, or it reached `stopped`):
        /// the supervisor tells systemd and resumes what waits on it.
        case notify(Notice)
        case log(Logger.Level, String, [String: String])
    }

    enum Notice: Equatable { case ready, stopped }

    /// Timing rules, from the configuration.
    struct Policy: Equatable {
        /// Silence (no READY=1, no WATCHDOG=1) after which a child is hung.
        var hangTimeout: TimeInterval = 10
        /// A child that lived less than this had a quick exit (counts towards backoff).
        var quickExit: TimeInterval = 5
        /// Backoff between restarts of a crash-looping child tops out here.
        var maxBackoff: TimeInterval = 30
        /// At most one start a second, like runsv: a child that exits at once is not spun.
        var minimumLifetime: TimeInterval = 1
        /// Quick exits in a row restarted at once; from the next one on, the
        /// child is crash-looping and waits 1, 2, 4 ... `maxBackoff` seconds.
        /// An operator's or the OOM killer's kill should be back within a second.
        var immediateRestarts = 3
        /// Quick exits in a row from which the child is reported as crash-looping.
        var crashLoopAfter = 5
        /// A promoted standby's successor starts this long after the
        /// promotion, not at once: loading a new process (the binary's pages,
        /// its configuration and database) would take the CPU the promoted
        /// worker needs for its first batches, the very milliseconds a
        /// standby exists to save. A cold start took ~40 ms here
        /// (docs/benchmarks.md §6); a quarter second clears it.
        var standbySuccessorDelay: TimeInterval = 0.25

        /// How long to wait before the next start, after `quickExits` quick
        /// exits in a row, the last process having lived `lived` seconds.
        func delay(quickExits: Int, lived: TimeInterval) -> TimeInterval {
            let backoff = quickExits > immediateRestarts ? min(maxBackoff, pow(2, Double(quickExits - immediateRestarts - 1))) : 0
            return max(minimumLifetime - lived, backoff)
        }
    }

    /// A reload may change it (the hang timeout).
    var policy: Policy
    private(set) var state = State.stopped
    /// When the current (or last) process was spawned.
    private(set) var lastStart = Uptime.distantPast
    /// Its last READY=1 or WATCHDOG=1 (or its start, before the first).
    private(set) var lastHeartbeat = Uptime.distantPast
    /// Unplanned exits: crashes, kills from outside, hangs. Not rolling restarts.
    private(set) var restarts = 0
    /// Planned restarts: rolling restarts (`ctl restart`, `ctl upgrade`, a
    /// reload's) and a frontend's handover to its successor. Counted apart
    /// from `restarts` so a crash count stays an alarm.
    private(set) var plannedRestarts = 0
    /// Unplanned exits in a row that came soon after a start (a crash loop).
    private(set) var quickExits = 0
    /// The last process crashed (a signal such as a Swift trap's SIGILL or
    /// SIGTRAP, SIGSEGV, SIGABRT) or hung and was killed; not an operator's or
    /// the OOM killer's SIGKILL, nor a clean exit. Its replacement says so in
    /// its bus heartbeats, and frontends count it toward poison commands.
    private(set) var predecessorFailed = false
    /// The current process was killed for hanging (it may be stopping by now).
    private var killedAsHung = false
    /// The current process was asked to stop and got SIGKILL at the deadline.
    private var killedAtDeadline = false
    /// When a stopping child gets SIGKILL; nil once sent.
    private var killAt: Uptime?

    init(policy: Policy = Policy()) {
        self.policy = policy
    }

    var pid: Int32? {
        switch state {
        case .starting(let pid), .ready(let pid), .hung(let pid), .stopping(let pid, _): pid
        case .stopped, .backoff: nil
        }
    }

    var isReady: Bool { if case .ready = state { true } else { false } }
    var isStopped: Bool { state == .stopped }
    var isInBackoff: Bool { if case .backoff = state { true } else { false } }
    var isCrashLooping: Bool { quickExits >= policy.crashLoopAfter }

    /// Applies one event that happened at `now`; returns what to do.
    mutating func handle(_ event: Event, now: Uptime) -> [Action] {
        switch event {
        case .start: start()
        case .spawned(let pid): spawned(pid, now: now)
        case .spawnFailed(let error): spawnFailed(error, now: now)
        case .reportedReady: reportedReady(now: now)
        case .heartbeat: heartbeat(now: now)
        case .exited(let termination): exited(termination, now: now)
        case .stop(let restart, let killAt, let signal): stop(restart: restart, killAt: killAt, signal: signal, now: now)
        case .timer: timer(now: now)
        case .handedOver: handedOver(now: now, log: "standby promoted")
        case .successorTookOver(let child): handedOver(now: now, log: "handover: successor took \(child) over", planned: true)
        }
    }

    private func start() -> [Action] {
        // STOPPED -> (spawn); anything else is running or about to.
        state == .stopped ? [.spawn(predecessorFailed: predecessorFailed)] : []
    }

    private mutating func spawned(_ pid: Int32, now: Uptime) -> [Action] {
        // STOPPED, BACKOFF -> STARTING
        state = .starting(pid: pid)
        lastStart = now
        lastHeartbeat = now
        killedAsHung = false
        killedAtDeadline = false
        killAt = nil
        return [.log(.info, "child started", ["pid": "\(pid)"])]
    }

    private mutating func spawnFailed(_ error: String, now: Uptime) -> [Action] {
        lastStart = now
        return [.log(.error, "child failed to start", ["error": error])] + crashed(lived: 0, now: now)
    }

    private mutating func reportedReady(now: Uptime) -> [Action] {
        guard case .starting(let pid) = state else { return heartbeat(now: now) }
        // STARTING -> READY
        state = .ready(pid: pid)
        lastHeartbeat = now
        return [.log(.info, "child ready", [:]), .notify(.ready)]
    }

    private mutating func heartbeat(now: Uptime) -> [Action] {
        switch state {
        case .starting, .ready, .stopping: lastHeartbeat = now
        case .stopped, .backoff, .hung: break
        }
        return []
    }

    private mutating func exited(_ termination: ChildProcess.Termination, now: Uptime) -> [Action] {
        let status = ["pid": pid.map { "\($0)" } ?? "?", "status": "\(termination)"]
        let failed = killedAsHung || ChildProcess.isCrash(termination)
        switch state {
        case .starting, .ready, .hung:
            // STARTING, READY, HUNG -> BACKOFF: it was not asked to go.
            predecessorFailed = failed
            return [.log(.warning, "child exited", status)] + crashed(lived: now.seconds(since: lastStart), now: now)
        case .stopping(_, let restart):
            predecessorFailed = failed
            let lived = now.seconds(since: lastStart)
            // Killed for hanging before the stop came, or, in a restart, a
            // crash or a SIGTERM not obeyed by the deadline: a crash all the
            // same, so RESTARTS stays the alarm and a loop is slowed down.
            if killedAsHung || (restart && (failed || killedAtDeadline)) {
                let exited = Action.log(.warning, "child exited", status)
                guard restart else {
                    _ = countCrash(lived: lived)
                    state = .stopped
                    return [exited, .notify(.stopped)]
                }
                return [exited] + crashed(lived: lived, now: now)
            }
            guard restart else {
                // STOPPING -> STOPPED
                state = .stopped
                return [.log(.info, "child exited", status), .notify(.stopped)]
            }
            // STOPPING -> BACKOFF: a restart that went as asked (a clean exit
            // or its signal, in time) counts as planned, not as a crash, and
            // slows the next start no more than to one a second.
            quickExits = 0
            plannedRestarts += 1
            let until = now + policy.delay(quickExits: 0, lived: lived)
            state = .backoff(until: until)
            return [.log(.info, "child exited", status), .wake(at: until)]
        case .stopped, .backoff:
            return []
        }
    }

    /// An exit nobody asked for, or a failed spawn: counted, and slowed down
    /// once it keeps happening soon after starting.
    private mutating func crashed(lived: TimeInterval, now: Uptime) -> [Action] {
        let delay = countCrash(lived: lived)
        state = .backoff(until: now + delay)
        var actions: [Action] = [.wake(at: now + delay)]
        if isCrashLooping {
            actions.insert(.log(.error, "child is crash-looping", ["quick.exits": "\(quickExits)", "next.attempt.seconds": "\(Int(delay))"]), at: 0)
        }
        return actions
    }

    /// Counts an unplanned exit; returns how long to wait before the next start.
    private mutating func countCrash(lived: TimeInterval) -> TimeInterval {
        quickExits = lived < policy.quickExit ? quickExits + 1 : 0
        restarts += 1
        return policy.delay(quickExits: quickExits, lived: lived)
    }

    private mutating func stop(restart: Bool, killAt: Uptime, signal: Int32, now: Uptime) -> [Action] {
        switch state {
        case .starting(let pid), .ready(let pid):
            // STARTING, READY -> STOPPING
            state = .stopping(pid: pid, restart: restart)
            self.killAt = killAt
            return [.kill(pid: pid, signal: signal), .wake(at: killAt)]
        case .hung(let pid):
            // HUNG -> STOPPING: SIGKILL is already on its way; if it did not
            // take, the next timer sends it again (a hung child gets no grace).
            state = .stopping(pid: pid, restart: restart)
            self.killAt = now
            return []
        case .stopping(let pid, let restarting):
            // A stop for good overrides a restart; the deadline stays.
            state = .stopping(pid: pid, restart: restarting && restart)
            return []
        case .backoff:
            // BACKOFF -> STOPPED, unless it is to come back anyway.
            guard !restart else { return [] }
            state = .stopped
            return [.notify(.stopped)]
        case .stopped:
            return []
        }
    }

    /// `planned`: a restart of this child (a frontend's handover), counted
    /// in `plannedRestarts`; a standby's promotion is its process moving on.
    private mutating func handedOver(now: Uptime, log: String, planned: Bool = false) -> [Action] {
        // Only a ready standby is promoted (a ready frontend handed over); its process is no longer ours to watch.
        guard case .ready(let pid) = state else { return [] }
        if planned { plannedRestarts += 1 }
        // READY -> BACKOFF: a planned departure, never a crash (a handover
        // counts in plannedRestarts, a promotion nowhere), slowed no more
        // than to one start a second.
        let lived = now.seconds(since: lastStart)
        let until = now + max(policy.standbySuccessorDelay, policy.delay(quickExits: 0, lived: lived))
        state = .backoff(until: until)
        return [.log(.info, log, ["pid": "\(pid)"]), .wake(at: until)]
    }

    private mutating func timer(now: Uptime) -> [Action] {
        switch state {
        case .starting(let pid), .ready(let pid):
            // A child gets the hang timeout from its start, and then between
            // heartbeats (one every 500 ms, READY=1 or not: a worker waiting
            // for the bus of another host is alive, not hung).
            let silent = now.seconds(since: lastHeartbeat)
            guard silent > policy.hangTimeout else { return [] }
            // STARTING, READY -> HUNG
            return hang(pid, silent: silent, now: now)
        case .hung(let pid):
            // SIGKILL again if the first did not take (one a hang timeout).
            let silent = now.seconds(since: lastHeartbeat)
            return silent > policy.hangTimeout ? hang(pid, silent: silent, now: now) : []
        case .stopping(let pid, _):
            guard let killAt, now >= killAt else { return [] }
            self.killAt = nil
            killedAtDeadline = true
            return [.log(.warning, "child did not stop in time, killing", [:]), .kill(pid: pid, signal: SIGKILL)]
        case .backoff(let until):
            guard now >= until else { return [] }
            // BACKOFF -> (spawn)
            return [.log(.info, "restarting child", ["restarts": "\(restarts)"]), .spawn(predecessorFailed: predecessorFailed)]
        case .stopped:
            return []
        }
    }

    private mutating func hang(_ pid: Int32, silent: TimeInterval, now: Uptime) -> [Action] {
        state = .hung(pid: pid)
        killedAsHung = true
        lastHeartbeat = now  // one kill per hang timeout
        return [
            .log(.error, "child stopped sending heartbeats, killing it", ["pid": "\(pid)", "silent.seconds": "\(Int(silent))"]),
            .kill(pid: pid, signal: SIGKILL),
        ]
    }
}
