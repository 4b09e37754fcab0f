/// Returns the heap to the kernel once a burst is over: the first whole
/// second with little traffic (heartbeats go on, a few per worker a second)
/// after one with a lot. glibc keeps what libzmq freed (the emptied queues)
/// in its arenas otherwise, and the supervisor stays at its peak size. At
/// most once per burst, so the cost (a walk of the free lists, milliseconds)
/// is not paid per message. Pure state: time is passed in.
public struct IdleTrim {
    /// Messages in a one-second window above which it was a burst.
    public static let busy = 2_000
    /// Messages in a one-second window below which the burst is over.
    public static let quiet = 200
    static let window: UInt64 = 1_000_000_000
    private var windowStart: UInt64 = 0
    private var inWindow = 0
    private var busySinceTrim = false

    public init() {}

    /// Counts messages moved; true when the heap should be trimmed now.
    public mutating func observe(moved: Int, now: UInt64) -> Bool {
        inWindow += moved
        guard now - windowStart >= Self.window else { return false }
        defer { windowStart = now; inWindow = 0 }
        if inWindow >= Self.busy { busySinceTrim = true; return false }
        if busySinceTrim && inWindow < Self.quiet {
            busySinceTrim = false
            return true
        }
        return false
    }
}
