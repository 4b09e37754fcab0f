import ChatMetrics
import ChatWire
import Metrics

/// The tree's `/metrics` (docs/metrics.md): every child sends its text in an
/// sd_notify datagram once a second (`MetricsReport`); once a second the
/// supervisor merges the latest of each with its own, each series labelled
/// `role` and `process`, and its broker publishes the document to every
/// frontend. Sums across processes are PromQL's (`sum by (role)`); a
/// restarted process's counters start again from 0 under the same labels,
/// which `rate()` reads as a counter reset.
extension Supervisor {
    /// A child's report older than this is left out: the child is gone (in
    /// backoff, stopped, or silent long enough to be killed as hung).
    static let metricsStaleSeconds = 10.0

    /// Keeps a child's latest text (from its current process only: the caller checked).
    func recordMetrics(_ fields: [String: String], into record: inout ChildRecord) {
        guard let value = fields[MetricsReport.field] else { return }
        record.metrics = MetricsReport.decode(value)
        record.metricsAt = Uptime.now()
    }

    /// Counts a child's exits by what its machine counted in one event.
    func countRestarts(_ name: ChildName, crashesBefore: Int, plannedBefore: Int, machine: Child) {
        if machine.restarts > crashesBefore {
            Counter(label: "chatd_child_restarts_total", dimensions: [("child", name.description), ("child_role", name.role), ("reason", "crash")])
                .increment(by: machine.restarts - crashesBefore)
        }
        if machine.plannedRestarts > plannedBefore {
            Counter(label: "chatd_child_restarts_total", dimensions: [("child", name.description), ("child_role", name.role), ("reason", "planned")])
                .increment(by: machine.plannedRestarts - plannedBefore)
        }
    }

    /// A handover's report, counted (`HandoverReport`).
    func countHandover(_ report: HandoverReport) {
        Counter(label: "chatd_handovers_total", dimensions: [("outcome", report.refused == nil ? "done" : "refused")]).increment()
        guard report.refused == nil else { return }
        Counter(label: "chatd_handover_sockets_total").increment(by: report.adopted)
        CoreMetrics.Timer(label: "chatd_handover_pause_max_seconds").recordMicroseconds(report.pauseMaxMicros)
    }

    /// Sets the gauges read off the children, merges, publishes.
    func publishMetrics() {
        guard let broker else { return }
        var depth: [String: Int] = [:]
        for record in children.values {
            for (queue, count) in record.outstanding.outstanding { depth[queue, default: 0] += count }
        }
        for (queue, count) in depth { Gauge(label: "chatd_bus_queue_depth", dimensions: [("queue", queue)]).record(count) }
        for (name, record) in children {
            let dimensions = [("child", name.description), ("child_role", name.role)]
            Gauge(label: "chatd_child_backoff", dimensions: dimensions).record(record.machine.isInBackoff ? 1 : 0)
            Gauge(label: "chatd_child_crash_looping", dimensions: dimensions).record(record.machine.isCrashLooping ? 1 : 0)
            Gauge(label: "chatd_child_up", dimensions: dimensions).record(record.machine.isReady ? 1 : 0)
        }
        var merged = Exposition()
        merged.merge(Exposition(parsing: ChatMetrics.text()), labelledWith: [.init("role", "supervisor"), .init("process", "supervisor")])
        let now = Uptime.now()
        for (name, record) in children.sorted(by: { $0.key.description < $1.key.description }) {
            guard let text = record.metrics, now.seconds(since: record.metricsAt) < Self.metricsStaleSeconds else { continue }
            merged.merge(Exposition(parsing: text), labelledWith: [.init("role", name.role), .init("process", name.description)])
        }
        broker.publish(metrics: Array(merged.rendered().utf8))
    }
}
