import CZeroMQ

/// glibc's heap, where libzmq's messages live.
///
/// glibc keeps freed pages in its arenas (one per thread that allocated,
/// up to 8 per core): after a burst the broker's queues are empty but the
/// process keeps its peak size. `malloc_trim(0)` hands free pages of every
/// arena back to the kernel.
public enum Allocator {
    /// Returns free heap pages to the kernel. Costs a walk of the free lists
    /// (milliseconds after a large burst), so call it when idle, not per message.
    @discardableResult
    public static func trim() -> Bool {
        malloc_trim(0) != 0
    }

    /// Caps the number of malloc arenas (`M_ARENA_MAX`); call at start, before
    /// threads allocate.
    @discardableResult
    public static func limitArenas(_ count: Int32) -> Bool {
        mallopt(M_ARENA_MAX, count) == 1
    }

}
