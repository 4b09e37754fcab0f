/// A frontend process's place among the supervisor's children, written
/// `frontend.0`: the same for every process that fills it. The supervisor
/// names the child with it (`CHATD_CHILD`), the frontend says it in its
/// sd_notify reports and writes it into each session's `frontend` column,
/// so that the slot's next process (or the supervisor, for a slot retired)
/// closes the sessions left active.
public struct FrontendSlot: Hashable, Sendable, LosslessStringConvertible {
    public var index: Int

    /// The role word of every frontend (`ctl restart frontend`), and the one
    /// frontend's whole name before there were several.
    public static let role = "frontend"

    /// The sd_notify field with a frontend's open WebSockets (`ctl status`).
    public static let webSocketsField = "CHATD_WEBSOCKETS"

    public init(_ index: Int) {
        precondition(index >= 0, "frontend slot \(index)")
        self.index = index
    }

    /// `frontend.3` read back: a slot number written as `description` writes
    /// it (no sign, no leading zero), below 1,000.
    public init?(_ description: String) {
        let prefix = Self.role + "."
        guard description.hasPrefix(prefix) else { return nil }
        let digits = description.dropFirst(prefix.count)
        guard let index = Int(digits), String(index) == digits, (0..<1000).contains(index) else { return nil }
        self.init(index)
    }

    public var description: String { "\(Self.role).\(index)" }
}
