import Dispatch

/// A point on the monotonic clock (CLOCK_MONOTONIC, the one `DispatchTime`
/// reads), in seconds. The child state machines and the waiters measure
/// backoffs, hang timeouts and kill deadlines with it, never with `Date`: the
/// wall clock steps (NTP, a VM resumed), and a step back would leave a crashed
/// child down, or a SIGKILL unsent, for as long as the step.
struct Uptime: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// Seconds since an arbitrary origin (the boot, for `now()`).
    var seconds: Double

    init(seconds: Double) { self.seconds = seconds }

    static func now() -> Uptime { Uptime(DispatchTime.now()) }

    init(_ time: DispatchTime) { self.seconds = Double(time.uptimeNanoseconds) / 1e9 }

    /// Where `asyncAfter` should fire to come at this point.
    var dispatchTime: DispatchTime {
        let nanoseconds = max(1, seconds * 1e9)  // 0 would mean "now" to Dispatch; 1 is as good
        return nanoseconds < 9e18 ? DispatchTime(uptimeNanoseconds: UInt64(nanoseconds)) : .distantFuture
    }

    /// Long before any process: finite, so durations from it stay convertible to `Int`.
    static let distantPast = Uptime(seconds: -1e12)
    /// Never reached (some 30,000 years of uptime).
    static let distantFuture = Uptime(seconds: 1e12)

    static func < (a: Uptime, b: Uptime) -> Bool { a.seconds < b.seconds }
    static func + (a: Uptime, seconds: Double) -> Uptime { Uptime(seconds: a.seconds + seconds) }
    static func - (a: Uptime, seconds: Double) -> Uptime { Uptime(seconds: a.seconds - seconds) }
    static func += (a: inout Uptime, seconds: Double) { a.seconds += seconds }

    /// Seconds from `earlier` to this point.
    func seconds(since earlier: Uptime) -> Double { seconds - earlier.seconds }

    var description: String { "uptime \(seconds) s" }
}
