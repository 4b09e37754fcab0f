/// What a frontend tells the supervisor in each heartbeat (sd_notify field
/// `CHATD_QUEUES`): how many commands it sent to each queue and has had no
/// answer for yet. The supervisor sums the reports into `ctl status`'s
/// queue depths. Written `<queue>:<count>` pairs separated by spaces, in
/// queue order: `receipts:0 store-0:3`; empty for no queue.
public struct QueueReport: Equatable, Sendable {
    /// The sd_notify field that carries it.
    public static let field = "CHATD_QUEUES"

    /// Unanswered commands per queue (`store-0`, `receipts`).
    public var outstanding: [String: Int]

    public init(_ outstanding: [String: Int] = [:]) {
        self.outstanding = outstanding
    }

    /// The field's value.
    public var encoded: String {
        outstanding.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: " ")
    }

    /// Parses a field's value. A pair that is not `<queue>:<count>` with a
    /// count of 0 or more is skipped, so one bad pair costs only its queue.
    public init(decoding value: String) {
        var outstanding: [String: Int] = [:]
        for pair in value.split(separator: " ") {
            let parts = pair.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, let count = Int(parts[1]), count >= 0 else { continue }
            // Capped: the supervisor sums reports, and an absurd count must
            // not overflow the sum (a trap) in `ctl status`.
            outstanding[String(parts[0])] = min(count, Self.maxCount)
        }
        self.init(outstanding)
    }

    /// More than any frontend can have outstanding (its pending table is
    /// bounded by memory long before); far below an overflow when summed.
    public static let maxCount = 1 << 32

    /// All of the queues' counts together.
    public var total: Int { outstanding.values.reduce(0, +) }
}
