import ChatWire
import Foundation

/// What the supervisor calls a child: a frontend by its slot (`frontend.0`),
/// a worker by its `WorkerName` (`store.0`), or a role's warm standby
/// (`standby.store`, `StandbyName`). Children say it in the `CHATD_CHILD`
/// field of their sd_notify datagrams; `ctl status` and the log show it. A
/// frontend's slot also names the sessions it holds, so that the next
/// process in the slot closes those its predecessor left open.
enum ChildName: Hashable, Sendable, CustomStringConvertible {
    /// One of the frontends sharing the listening socket, 0 up.
    case frontend(Int)
    case worker(WorkerName)
    case standby(Role)

    /// The role word of every frontend: `ctl restart frontend` rolls them all.
    static let frontendRole = FrontendSlot.role

    init?(_ text: String) {
        if let slot = Self.frontendSlot(text) {
            self = .frontend(slot)
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
        case .frontend(let slot): FrontendSlot(slot).description
        case .worker(let worker): worker.description
        case .standby(let role): StandbyName(role).description
        }
    }

    /// `frontend`, or the worker's (or standby's) role (`store`).
    var role: String {
        switch self {
        case .frontend: Self.frontendRole
        case .worker(let worker): worker.role.rawValue
        case .standby(let role): role.rawValue
        }
    }

    var isFrontend: Bool { if case .frontend = self { true } else { false } }

    /// `frontend.3` read back (`FrontendSlot`).
    static func frontendSlot(_ text: String) -> Int? {
        FrontendSlot(text)?.index
    }

    /// The signal that stops this child while the service goes on (a rolling
    /// restart, a scale-down): a frontend takes SIGUSR1 as "close WebSockets
    /// with 1012, service restart, and exit" (docs/protocol.md "Supervisor
    /// and children"); SIGTERM (1001, going away) stays for a full stop.
    var restartSignal: Int32 { isFrontend ? SIGUSR1 : SIGTERM }

    var isStandby: Bool {
        if case .standby = self { true } else { false }
    }

    var worker: WorkerName? {
        if case .worker(let worker) = self { worker } else { nil }
    }

    /// `ctl restart <word>`: the child of that name, or every child of that
    /// role (`frontend`, `store`; a role's standby is restarted alongside,
    /// not as one of them).
    func matches(_ word: String) -> Bool {
        description == word || (!isStandby && role == word)
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
    /// A frontend's open WebSockets (its heartbeats say).
    var webSockets: Int?
    /// Its last metrics report (Supervisor+Metrics.swift) and when it came.
    var metrics: String?
    var metricsAt = Uptime.distantPast

    init(spec: ChildSpec, policy: Child.Policy) {
        self.spec = spec
        self.machine = Child(policy: policy)
    }
}
