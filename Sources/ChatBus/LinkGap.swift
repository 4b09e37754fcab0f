import ChatWire

/// A worker's link to this frontend's broker dropped and is back: its
/// heartbeat came with another link generation under the same pid
/// (`Heartbeat.link`). The room events it published meanwhile never reached
/// this broker, so this host's sockets of those rooms missed them, and
/// nothing else would tell them.
public struct LinkGap: Sendable, Equatable {
    public var worker: WorkerName
    /// The store shard counts rooms may be routed by: the count, and the
    /// one being switched to while the count changes.
    public var shardCounts: [Int]

    public init(worker: WorkerName, shardCounts: [Int]) {
        self.worker = worker
        self.shardCounts = shardCounts
    }

    /// Whether `room`'s sockets may have missed events that `after` brings
    /// back: a store shard's rooms (its messages and their changes are in
    /// history). The receipts worker's events (typing, presence, read
    /// receipts) are not: closing sockets would not bring them back, as
    /// after a receipts worker's restart.
    public func affects(room: String) -> Bool {
        worker.role == .store && shardCounts.contains { Shard.of(room, count: $0) == worker.index }
    }
}
