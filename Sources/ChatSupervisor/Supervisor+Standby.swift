import ChatConfig
import ChatWire
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Which children stand by, and which one a spawn promotes: pure, so the
/// rules are unit-tested without processes (ChatSupervisorTests).
struct StandbyPlan: Equatable {
    /// `standbys` in the configuration.
    var enabled: Bool
    /// This host runs the workers (`run: all` or `workers`).
    var runsWorkers: Bool
    /// This host runs the files worker (`filesWorkers` is not 0).
    var runsFiles = true

    /// The roles that keep a standby: every worker role this host runs, or
    /// none. Not webhooks: nobody waits on a delivery the way a client waits
    /// on a command, and a restarted worker finds the outbox as it was.
    var roles: [Role] { enabled && runsWorkers ? Role.allCases.filter { ($0 != .files || runsFiles) && $0 != .webhooks } : [] }

    /// The standby that takes the place of a spawn of `name`, if any: only
    /// a worker's spawn promotes, only its role's standby, only once that
    /// says READY=1 (connected, echoed, waiting) and can still be told.
    /// A standby's own spawn never promotes another standby.
    func standby(replacing name: ChildName, stopping: Bool, isPromotable: (ChildName) -> Bool) -> ChildName? {
        guard enabled, runsWorkers, !stopping, case .worker(let worker) = name else { return nil }
        let standby = ChildName.standby(worker.role)
        return isPromotable(standby) ? standby : nil
    }
}

/// The supervisor's end of a standby's standard input: a Unix stream socket
/// pair rather than a pipe, so a write to a standby that has just died fails
/// with EPIPE (`MSG_NOSIGNAL`) instead of raising SIGPIPE in the supervisor.
/// Closed when dropped: the standby reads end of file and exits.
final class StandbyChannel {
    let fd: CInt

    private init(fd: CInt) { self.fd = fd }

    /// A new pair: the channel, and the end the child gets as its standard
    /// input (the caller closes it once the child is spawned).
    static func pair() throws -> (channel: StandbyChannel, childEnd: CInt) {
        var fds: [CInt] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        return (StandbyChannel(fd: fds[0]), fds[1])
    }

    /// Tells the standby what it becomes; false when it is gone. The line is
    /// far below the socket's buffer, so this never blocks.
    func send(_ assignment: StandbyAssignment) -> Bool {
        let bytes = Array(assignment.line.utf8)
        return bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    deinit { close(fd) }
}

extension Supervisor {
    var standbyPlan: StandbyPlan {
        StandbyPlan(enabled: config.standbys, runsWorkers: config.run.runsWorkers, runsFiles: config.runsFilesWorker)
    }

    /// A standby of `role`: `chatd worker --standby --role <role>` (no
    /// `--shard`: it learns its worker when promoted).
    func standbySpec(_ role: Role) -> ChildSpec {
        ChildSpec(name: .standby(role), arguments: ["worker", "--standby", "--role", role.rawValue])
    }

    /// Instead of spawning the worker `name`: hands the role's ready standby
    /// the worker's name on its channel, and the worker's record adopts its
    /// process (a spawn, to the state machine); the standby's record then
    /// starts a new standby. Returns false when no standby could take over
    /// (none ready, turned off, or it died a moment ago): spawn as usual.
    func promoteStandby(to name: ChildName, predecessorFailed: Bool) -> Bool {
        let promotable = { [unowned self] (standby: ChildName) in
            children[standby].map { $0.machine.isReady && $0.process?.assignment != nil } ?? false
        }
        guard let standby = standbyPlan.standby(replacing: name, stopping: stopping, isPromotable: promotable),
            case .worker(let worker) = name, let process = children[standby]?.process, let channel = process.assignment
        else { return false }
        guard channel.send(StandbyAssignment(worker: worker, predecessorFailed: predecessorFailed)) else {
            logger.warning("standby gone before its promotion; starting the worker cold", metadata: ["child": "\(name)", "pid": "\(process.pid)"])
            return false
        }
        // The channel has said all it will; the worker's end of file is not read.
        process.assignment = nil
        children[standby]?.process = nil
        children[name]?.process = process
        deliver(.spawned(pid: process.pid), to: .child(name))
        deliver(.handedOver, to: .child(standby))
        return true
    }

    /// Brings the standbys in line with the plan (start, a reload): starts
    /// the missing ones, retires those no longer wanted.
    func applyStandbyPlan() {
        let wanted = Set(standbyPlan.roles.map(ChildName.standby))
        for name in wanted.subtracting(children.keys).sorted(by: { $0.description < $1.description }) {
            add(standbySpec(name.standbyRole!))
        }
        retire(children.keys.filter { $0.isStandby && !wanted.contains($0) })
    }

    /// `ctl restart <role>`: that role's standby is restarted first, without
    /// waiting for it, so that no process started before the command (an
    /// older binary, say) is promoted during or after the restart. Until the
    /// new standby is ready, a worker restarts cold.
    func restartStandbys(for targets: [ChildName]) {
        let roles = Set(targets.compactMap(\.worker?.role))
        for role in Role.allCases where roles.contains(role) && children[.standby(role)]?.process != nil {
            deliver(.stop(restart: true, killAt: Uptime.now() + graceSeconds), to: .child(.standby(role)))
        }
    }
}

extension ChildName {
    /// The role of a standby; nil for any other child.
    var standbyRole: Role? {
        if case .standby(let role) = self { role } else { nil }
    }
}
