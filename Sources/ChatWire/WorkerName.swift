/// A worker process's name: its role and its index within the role,
/// written `store.0`, `receipts.1`. The supervisor names its children with
/// it, workers put it in their heartbeat topic, frontends map it to the
/// queue the worker takes commands from, and `ctl status` shows it.
public struct WorkerName: Hashable, Sendable, Comparable, LosslessStringConvertible {
    public var role: Role
    /// The store shard for `store`; a replica number for the other roles,
    /// which share one queue.
    public var index: Int

    public init(_ role: Role, _ index: Int) {
        precondition(index >= 0, "worker index \(index)")
        self.role = role
        self.index = index
    }

    /// Parses `<role>.<index>`; nil for anything else (the frontend's `frontend.0`
    /// is not a worker).
    public init?(_ description: String) {
        let parts = description.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let role = Role(rawValue: String(parts[0])),
            let index = Int(parts[1]), index >= 0, String(index) == parts[1]
        else { return nil }
        self.init(role, index)
    }

    public var description: String { "\(role.rawValue).\(index)" }

    /// The queue this worker pulls from: its own shard's for a store worker,
    /// the role's shared queue otherwise.
    public var queue: String { Endpoints.queue(role, shard: role == .store ? index : 0) }

    /// Role order of `Role.allCases`, then index: the order `ctl status` lists them in.
    public static func < (a: WorkerName, b: WorkerName) -> Bool {
        let ra = Role.allCases.firstIndex(of: a.role)!, rb = Role.allCases.firstIndex(of: b.role)!
        return ra != rb ? ra < rb : a.index < b.index
    }
}
