/// How many messages each kind of bus socket may queue (ZeroMQ high-water
/// marks, per pipe, i.e. per connected peer), and what happens at the mark.
/// docs/protocol.md "Memory bounds" states the same policy for operators.
public enum HighWaterMarks {
    /// Command sockets (frontend PUSH, broker PULL and PUSH, worker PULL).
    /// Commands are never dropped: at the mark a PUSH refuses to queue
    /// (`ZMQ_DONTWAIT` gives EAGAIN), the broker stops reading the queue's
    /// input, and the frontend holds the command until its deadline (503).
    /// 1,000 per socket keeps a store shard's 512-command batches fed with
    /// four sockets between frontend and worker (~4,000 in flight per queue);
    /// at ~1 KB a command the supervisor holds at most ~2 MB per queue.
    public static let commands: Int32 = 1_000

    /// Event sockets (worker PUB, broker XSUB and XPUB, frontend SUB). PUB
    /// and XPUB drop at the mark for that one subscriber, never blocking the
    /// publisher or the other subscribers. 50,000 events (~1 KB each with
    /// ZeroMQ's per-frame overhead, so ~50 MB) is several seconds of the
    /// heaviest measured load (~16,000 replies and room events a second), so
    /// only a subscriber that stopped reading reaches it.
    public static let events: Int32 = 50_000

    /// A worker's SUB for its own heartbeat echo: a few a second.
    public static let echo: Int32 = 1_000
}
