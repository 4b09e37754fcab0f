import ChatWire

/// What the supervisor calls a child: the frontend, a worker by its
/// `WorkerName` (`store.0`), or a role's warm standby (`standby.store`,
/// `StandbyName`). Children say it in the `CHATD_CHILD` field of their
/// sd_notify datagrams; `ctl status` and the log show it.
enum ChildName: Hashable, Sendable, CustomStringConvertible {
    case frontend
    case worker(WorkerName)
    case standby(Role)

    init?(_ text: String) {
        if text == "frontend" {
            self = .frontend
        } else if let worker = WorkerName(text) {
            self = .worker(worker)
        } else if let standby = StandbyName(text) {
            self = .standby(standby.role)
        } else {
            return nil
        }
    }

    var description: String {
        switch self {
        case .frontend: "frontend"
        case .worker(let worker): worker.description
        case .standby(let role): StandbyName(role).description
        }
    }

    /// `frontend`, or the worker's (or standby's) role (`store`).
    var role: String {
        switch self {
        case .frontend: "frontend"
        case .worker(let worker): worker.role.rawValue
        case .standby(let role): role.rawValue
        }
    }

    var isStandby: Bool {
        if case .standby = self { true } else { false }
    }

    var worker: WorkerName? {
        if case .worker(let worker) = self { worker } else { nil }
    }

    /// `ctl restart <word>`: the child of that name, or every worker of that
    /// role (a role's standby is restarted alongside, not as one of them).
    func matches(_ word: String) -> Bool {
        description == word || worker?.role.rawValue == word
    }
}

/// One child process the supervisor keeps running.
struct ChildSpec: Sendable {
    var name: ChildName
    var arguments: [String]
}

/// What the supervisor knows of one child: its state machine, its process,
/// and what its heartbeats last said.
struct ChildRecord {
    var spec: ChildSpec
    var machine: Child
    var process: ChildProcess?
    /// A frontend's commands awaiting an answer, per queue (its heartbeats say).
    var outstanding = QueueReport()
    /// The store shard count a frontend sends by (its heartbeats say); nil
    /// while it is changing.
    var storeShards: Int?

    init(spec: ChildSpec, policy: Child.Policy) {
        self.spec = spec
        self.machine = Child(policy: policy)
    }
}
