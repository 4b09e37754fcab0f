import ChatMetrics
import ChatWire
import Metrics

/// The tree's `/metrics` (docs/metrics.md): every child sends its text in an
/// sd_notify datagram once a second (`MetricsReport`); every
/// `metricsPublishSeconds` the supervisor merges the latest of each with its
/// own, each series labelled `role` and `process`, and its broker publishes
/// the document to every frontend. Sums across processes are PromQL's (`sum by (role)`); a
/// restarted process's counters start again from 0 under the same labels,
/// which `rate()` reads as a counter reset.
extension Supervisor {
    /// A child's report older than this is left out: the child is gone (in
    /// backoff, stopped, or silent long enough to be killed as hung).
    static let metricsStaleSeconds = 10.0

    /// Every frontend gets every document, so the bus carries frontends ×
    /// (every process's text, which grows with the shards) each time: 5 s
    /// keeps that a fifth of a per-second publish, still three documents in
    /// Prometheus' default 15 s scrape interval.
    static let metricsPublishSeconds = 5.0

    /// The supervisor's counters, at 0 from its start: `rate()` and
    /// `increase()` see a first event only against an earlier sample.
    func countersAtZero() {
        for outcome in ["done", "refused"] { Counter(label: "chatd_handovers_total", dimensions: [("outcome", outcome)]).increment(by: 0) }
        Counter(label: "chatd_handover_sockets_total").increment(by: 0)
    }

    /// A new child's restart counters, at 0 (`countersAtZero`).
    func countersAtZero(_ name: ChildName) {
        for reason in ["crash", "planned"] {
            Counter(label: "chatd_child_restarts_total", dimensions: [("child", name.description), ("child_role", name.role), ("reason", reason)])
                .increment(by: 0)
        }
    }

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

    /// A child's state as its gauges show it.
    struct ChildGauges {
        var name: ChildName
        var backoff: Bool
        var crashLooping: Bool
        var up: Bool
    }

    /// The gauges read off the children, rendered afresh each time (not
    /// kept in the registry): a retired child's series, or a queue no
    /// longer waited on, is gone from the next document instead of
    /// showing its last value for ever.
    static func childGauges(_ children: [ChildGauges], queueDepth: [String: Int]) -> Exposition {
        func flag(_ value: Bool) -> String { value ? "1" : "0" }
        func family(_ name: String, _ value: (ChildGauges) -> Bool) -> Exposition.Family {
            let samples = children.sorted { $0.name.description < $1.name.description }.map { child in
                Exposition.Sample(
                    name: name, labels: [.init("child", child.name.description), .init("child_role", child.name.role)], value: flag(value(child))
                )
            }
            return Exposition.Family(name: name, type: "gauge", samples: samples)
        }
        var gauges = Exposition()
        gauges.add(family("chatd_child_backoff", \.backoff))
        gauges.add(family("chatd_child_crash_looping", \.crashLooping))
        gauges.add(family("chatd_child_up", \.up))
        let depth = queueDepth.sorted { $0.key < $1.key }.map { queue, count in
            Exposition.Sample(name: "chatd_bus_queue_depth", labels: [.init("queue", queue)], value: "\(count)")
        }
        if !depth.isEmpty { gauges.add(Exposition.Family(name: "chatd_bus_queue_depth", type: "gauge", samples: depth)) }
        return gauges
    }

    /// Merges every process's text with the children's gauges, publishes.
    func publishMetrics() {
        guard let broker else { return }
        var depth: [String: Int] = [:]
        for record in children.values {
            for (queue, count) in record.outstanding.outstanding { depth[queue, default: 0] += count }
        }
        let gauges = children.map { name, record in
            ChildGauges(name: name, backoff: record.machine.isInBackoff, crashLooping: record.machine.isCrashLooping, up: record.machine.isReady)
        }
        let supervisor: [Exposition.Label] = [.init("role", "supervisor"), .init("process", "supervisor")]
        var merged = Exposition()
        merged.merge(Exposition(parsing: ChatMetrics.text()), labelledWith: supervisor)
        merged.merge(Self.childGauges(gauges, queueDepth: depth), labelledWith: supervisor)
        let now = Uptime.now()
        for (name, record) in children.sorted(by: { $0.key.description < $1.key.description }) {
            guard let text = record.metrics, now.seconds(since: record.metricsAt) < Self.metricsStaleSeconds else { continue }
            merged.merge(Exposition(parsing: text), labelledWith: [.init("role", name.role), .init("process", name.description)])
        }
        broker.publish(metrics: Array(merged.rendered().utf8))
    }
}
