/// A warm standby of a worker role, written `standby.<role>` (`standby.store`):
/// a process that has done a worker's start-up (database open, bus connected,
/// its publisher echoed through the broker) and waits for the supervisor to
/// name the worker it becomes. It takes no commands and heartbeats on no
/// worker's topic until then. Its children's reports (`CHATD_CHILD`) and
/// `ctl status` name it so.
public struct StandbyName: Hashable, Sendable, CustomStringConvertible {
    public var role: Role

    public init(_ role: Role) { self.role = role }

    static let prefix = "standby."

    /// Parses `standby.<role>`; nil for anything else.
    public init?(_ description: String) {
        guard description.hasPrefix(Self.prefix), let role = Role(rawValue: String(description.dropFirst(Self.prefix.count))) else { return nil }
        self.role = role
    }

    public var description: String { Self.prefix + role.rawValue }

    /// What a standby publishes until its own copy comes back through the
    /// broker (so its publisher reaches every subscriber before it is
    /// promoted): on a topic of its own, `standby.<role>.<pid>`, which no
    /// frontend subscribes to (they take `hb.` for workers' heartbeats).
    public func echo(pid: Int32) -> Event {
        Event(topic: "\(description).\(pid)", kind: .heartbeat, key: "", body: [])
    }
}

/// The one line the supervisor writes to a standby (on its standard input)
/// to promote it: the worker it becomes, and ` failed` when the worker it
/// replaces crashed or hung (its bus heartbeats then say ` failed`, which
/// frontends count toward poison commands, as for a worker started with
/// `CHATD_PREDECESSOR_FAILED=1`).
///
///     store.3
///     receipts.0 failed
public struct StandbyAssignment: Sendable, Equatable {
    public var worker: WorkerName
    public var predecessorFailed: Bool

    public init(worker: WorkerName, predecessorFailed: Bool) {
        self.worker = worker
        self.predecessorFailed = predecessorFailed
    }

    /// The line, newline included.
    public var line: String { "\(worker)\(predecessorFailed ? " failed" : "")\n" }

    /// Reads one line (with or without its newline); nil when it is not an assignment.
    public init?(line: String) {
        let text = line.hasSuffix("\n") ? line.dropLast() : Substring(line)
        let fields = text.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 1 || (fields.count == 2 && fields[1] == "failed"), let worker = WorkerName(String(fields[0])) else { return nil }
        self.init(worker: worker, predecessorFailed: fields.count == 2)
    }

    /// Most bytes an assignment line takes; a standby reading more without a
    /// newline is not being spoken to by its supervisor.
    public static let maxLineBytes = 64
}
