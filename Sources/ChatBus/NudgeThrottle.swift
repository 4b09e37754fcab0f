/// When a store worker tells the search worker the database has news: at
/// once after a quiet spell, then at most once per `gap`. A write inside the
/// gap is told when the gap ends, so the last one of a burst is never left
/// untold. The search worker reads the database, not the nudges, and catches
/// up at most every 200 ms anyway: a nudge per batch (one per message at low
/// load) only woke it, and the broker, for nothing. Pure state: time is passed in.
public struct NudgeThrottle: Sendable {
    /// Nanoseconds between nudges: half the search worker's own pace.
    public static let gap: UInt64 = 100_000_000
    private var last: UInt64?
    /// A write happened since the last nudge went.
    public private(set) var owed = false

    public init() {}

    /// A batch wrote. True: nudge now.
    public mutating func wrote(now: UInt64) -> Bool {
        if let last, now - last < Self.gap {
            owed = true
            return false
        }
        last = now
        owed = false
        return true
    }

    /// True when an owed nudge is due now (it then counts as sent).
    public mutating func due(now: UInt64) -> Bool {
        guard owed, let last, now - last >= Self.gap else { return false }
        self.last = now
        owed = false
        return true
    }

    /// When the owed nudge comes due; nil when none is owed.
    public var deadline: UInt64? {
        guard owed, let last else { return nil }
        return last + Self.gap
    }
}
