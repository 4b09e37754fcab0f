/// How metrics cross the process tree (docs/metrics.md). Each child sends its
/// registry's Prometheus text to the supervisor once a second in an sd_notify
/// datagram (`CHATD_CHILD=<name>` and `CHATD_METRICS=<text>`); sd_notify's
/// fields are lines, so the text's newlines travel as `recordSeparator`
/// (U+001E, which no metric name, label or number contains). The supervisor
/// merges every child's text with its own, each series labelled with its
/// process, and its broker publishes the document on `ctl.metrics` every
/// 5 s; each frontend keeps the latest and answers `GET /metrics` with it.
public enum MetricsReport {
    /// The sd_notify field with a child's exposition text.
    public static let field = "CHATD_METRICS"

    /// Stands for a newline inside the field (U+001E).
    public static let recordSeparator: UInt8 = 0x1E

    /// A datagram's value never exceeds this (bytes): the supervisor's
    /// receive buffer holds it with the other fields. A process's text is a
    /// few KiB (a frontend's grows by ~0.6 KiB a store shard); one past the
    /// bound loses its largest families (`MetricsReporter.fitting`).
    public static let maxBytes = 60_000

    /// The field's value for an exposition text.
    public static func encode(_ text: String) -> String {
        // Byte by byte: both are ASCII, so UTF-8 sequences are left whole.
        String(decoding: text.utf8.map { $0 == UInt8(ascii: "\n") ? recordSeparator : $0 }, as: UTF8.self)
    }

    /// The exposition text of a field's value.
    public static func decode(_ value: String) -> String {
        String(decoding: value.utf8.map { $0 == recordSeparator ? UInt8(ascii: "\n") : $0 }, as: UTF8.self)
    }

    /// The merged document as the broker publishes it.
    public static func event(_ document: [UInt8]) -> Event {
        Event(topic: Topic.metrics, kind: .metrics, key: "", body: document)
    }

    /// The document of a metrics event; nil for any other event.
    public static func document(_ event: Event) -> [UInt8]? {
        event.kind == .metrics && event.topic == Topic.metrics ? event.body : nil
    }
}
