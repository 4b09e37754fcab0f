import Foundation

/// One spawned child. Touched only on the supervisor's queue.
final class ChildProcess: @unchecked Sendable {
    enum Termination: Equatable, CustomStringConvertible {
        case exit(Int32)
        case signal(Int32)

        var description: String {
            switch self {
            case .exit(let status): "exit \(status)"
            case .signal(let signal): "signal \(signal)"
            }
        }
    }

    /// Killed by a signal that means the program failed by itself: a Swift
    /// runtime trap (SIGILL, SIGTRAP), a fault (SIGSEGV, SIGBUS, SIGFPE), an
    /// abort. Not SIGKILL or SIGTERM, which come from outside.
    static func isCrash(_ termination: Termination) -> Bool {
        guard case .signal(let signal) = termination else { return false }
        return [SIGILL, SIGTRAP, SIGABRT, SIGSEGV, SIGBUS, SIGFPE].contains(signal)
    }

    let pid: pid_t
    /// A standby's channel: the supervisor's end of its standard input.
    var assignment: StandbyChannel?
    /// Called on the supervisor's queue once the child has been reaped.
    var onExit: ((ChildProcess) -> Void)?
    private(set) var termination: Termination?

    fileprivate init(pid: pid_t) { self.pid = pid }

    fileprivate func reaped(_ status: Int32) {
        // WIFSIGNALED/WEXITSTATUS are macros Swift does not import.
        let signal = status & 0x7f
        termination = signal == 0 ? .exit((status >> 8) & 0xff) : .signal(signal)
        onExit?(self)
    }
}

/// Spawns the supervisor's children with posix_spawn and reaps them on
/// SIGCHLD. Not Foundation's `Process`: it closes every descriptor above 2 in
/// the child, and the frontend must inherit the listening socket systemd
/// passed to the supervisor (socket activation).
final class ChildSpawner: @unchecked Sendable {
    private let queue: DispatchQueue
    private var running: [pid_t: ChildProcess] = [:]
    private var source: (any DispatchSourceSignal)?

    /// - Parameter queue: the supervisor's queue; every call is made on it.
    init(queue: DispatchQueue) {
        self.queue = queue
        let source = DispatchSource.makeSignalSource(signal: SIGCHLD, queue: queue)
        // SIGCHLDs coalesce: every exit since the last one is collected.
        source.setEventHandler { [weak self] in self?.reap() }
        source.resume()
        self.source = source
    }

    /// Starts `executable` with these arguments and environment, stdio
    /// inherited (standard input replaced by `standardInput` if given),
    /// signals at their defaults, and of the other descriptors only
    /// `inherit` left open.
    func spawn(
        executable: String, arguments: [String], environment: [String: String], inherit: [CInt] = [], standardInput: CInt? = nil
    ) throws -> ChildProcess {
        dispatchPrecondition(condition: .onQueue(queue))
        Self.markCloseOnExec(except: Set(inherit))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2 clears close-on-exec on the copy; the original closes at exec.
        if let standardInput { posix_spawn_file_actions_adddup2(&actions, standardInput, STDIN_FILENO) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The supervisor ignores SIGTERM/SIGINT/SIGHUP (it takes them from a
        // dispatch source) and its threads may block signals: neither is
        // meant for the child, whose own handlers expect the defaults.
        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid = pid_t()
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else { throw POSIXError(POSIXErrorCode(rawValue: result) ?? .EINVAL) }
        let child = ChildProcess(pid: pid)
        running[pid] = child
        return child
    }

    /// Collects every child that has exited (also called from the liveness
    /// timer: a missed SIGCHLD must not leave a dead child looking alive).
    func reap() {
        for (pid, child) in running {
            var status: Int32 = 0
            guard waitpid(pid, &status, WNOHANG) == pid else { continue }
            running[pid] = nil
            child.reaped(status)
        }
    }

    /// Descriptors opened without O_CLOEXEC (by us or by a library) would
    /// leak into every child; the ones to inherit lose the flag instead.
    private static func markCloseOnExec(except inherit: Set<CInt>) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for fd in entries.compactMap({ CInt($0) }) where fd > 2 {
            let flags = fcntl(fd, F_GETFD)
            guard flags >= 0 else { continue }  // the directory listing's own descriptor
            _ = fcntl(fd, F_SETFD, inherit.contains(fd) ? flags & ~FD_CLOEXEC : flags | FD_CLOEXEC)
        }
    }
}
