import ChatWire
import CoreMetrics
import Dispatch
import Logging
import Prometheus
import Synchronization
import Systemd

/// This process's metrics (docs/metrics.md): swift-metrics' points backed by
/// one swift-prometheus registry, bootstrapped once at the process's start.
/// The points themselves (`Counter`, `Gauge`, `Timer`) are made once where
/// they are counted and kept; an increment is then an atomic add, no lookup.
/// In a process that never bootstraps (in-process tests) they do nothing.
public enum ChatMetrics {
    /// Everything this process counts.
    public static let registry = PrometheusCollectorRegistry()

    /// Latencies here are sub-millisecond to seconds: swift-prometheus's
    /// default buckets start at 5 ms, too coarse for a local delivery.
    public static let latencyBuckets: [Duration] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// `chatd_bus_command_duration_seconds`, one histogram per queue: a
    /// frontend has one per store shard, so its report at 64 shards must
    /// stay well inside one datagram (`MetricsReport.maxBytes`, tested).
    /// Seven lines a queue instead of the latency buckets' seventeen.
    public static let commandBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(500),
    ]

    private static let enabled = Atomic<Bool>(false)
    /// Bootstrapped (`metrics: true`): hot paths skip their timing otherwise.
    public static var isEnabled: Bool { enabled.load(ordering: .relaxed) }

    /// Makes `MetricsSystem` count into `registry`. Once per process, first
    /// thing; not at all with `metrics: false` (every point is then a no-op).
    public static func bootstrap() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = latencyBuckets
        factory.durationHistogramBuckets["chatd_bus_command_duration_seconds"] = commandBuckets
        MetricsSystem.bootstrap(factory)
        enabled.store(true, ordering: .relaxed)
    }

    static let batchHistograms = Mutex<[BatchHistogram]>([])

    /// This process's text, for its own report.
    public static func text() -> String {
        var text = registry.emitToString()
        for histogram in batchHistograms.withLock({ $0 }) { histogram.render(into: &text) }
        return text
    }
}

/// A histogram of durations counted with atomic adds and no lock, for a hot
/// path that records one duration for many events at once (a message's
/// latency for each of a room's sockets): two adds whatever their number,
/// where swift-prometheus's histogram takes its lock once per sample.
/// Rendered after the registry's text (`ChatMetrics.text()`).
public final class BatchHistogram: @unchecked Sendable {
    public let name: String
    /// Each bucket's upper bound, nanoseconds.
    private let bounds: [Int64]
    private let les: [String]
    // One per bound, then +Inf; not cumulative (rendering sums them). The
    // count is their sum, so `_count` always equals the +Inf bucket.
    private let counts: UnsafeMutablePointer<Atomic<UInt64>>
    private let sumNanos = Atomic<UInt64>(0)

    /// Made once per process; kept by `ChatMetrics` for its text.
    public init(name: String, buckets: [Duration] = ChatMetrics.latencyBuckets) {
        self.name = name
        bounds = buckets.map { $0.components.seconds * 1_000_000_000 + $0.components.attoseconds / 1_000_000_000 }
        les = buckets.map(\.bucketRepresentation)
        counts = .allocate(capacity: buckets.count + 1)
        for i in 0...buckets.count { (counts + i).initialize(to: Atomic(0)) }
        ChatMetrics.batchHistograms.withLock { $0.append(self) }
    }

    deinit {
        counts.deinitialize(count: bounds.count + 1)
        counts.deallocate()
    }

    /// `times` samples of `nanoseconds` (none when metrics are off).
    public func record(nanoseconds: Int64, times: Int) {
        guard ChatMetrics.isEnabled else { return }
        add(nanoseconds: nanoseconds, times: times)
    }

    func add(nanoseconds: Int64, times: Int) {
        guard times > 0 else { return }
        let value = max(0, nanoseconds)
        let bucket = bounds.firstIndex { value <= $0 } ?? bounds.count
        (counts + bucket).pointee.wrappingAdd(UInt64(times), ordering: .relaxed)
        sumNanos.wrappingAdd(UInt64(value) &* UInt64(times), ordering: .relaxed)
    }

    func render(into out: inout String) {
        out += "# TYPE \(name) histogram\n"
        var cumulative: UInt64 = 0
        for (i, le) in les.enumerated() {
            cumulative &+= (counts + i).pointee.load(ordering: .relaxed)
            out += "\(name)_bucket{le=\"\(le)\"} \(cumulative)\n"
        }
        cumulative &+= (counts + bounds.count).pointee.load(ordering: .relaxed)
        out += "\(name)_bucket{le=\"+Inf\"} \(cumulative)\n"
        out += "\(name)_sum \(Double(sumNanos.load(ordering: .relaxed)) / 1e9)\n"
        out += "\(name)_count \(cumulative)\n"
    }
}

/// Sends this process's metrics to the supervisor once a second
/// (`MetricsReport`): a child's part of the tree's `/metrics`. Never blocks
/// on a busy supervisor (its queue holds 10 datagrams, and the heartbeats
/// share it): a report that does not go is dropped, counted, and the next
/// one carries the counts anyway.
public final class MetricsReporter: @unchecked Sendable {
    // The timer is only resumed and cancelled; `child` and `warned` are under their locks.
    private let timer: any DispatchSourceTimer
    private let child: Mutex<String>
    private let notifier: Notifier
    private let update: @Sendable () -> Void
    private let logger: Logger
    private let warned = Mutex<Set<String>>([])
    private let oversized = Counter(label: "chatd_metrics_report_drops_total", dimensions: [("reason", "size")])
    private let unsent = Counter(label: "chatd_metrics_report_drops_total", dimensions: [("reason", "unsent")])

    /// - Parameters:
    ///   - child: the name the supervisor knows this process by (`CHATD_CHILD`).
    ///   - update: sets the gauges read off state just before each report.
    public init(
        child: String, notifier: Notifier = Notifier(), logger: Logger = Logger(label: "chatd.metrics"),
        update: @escaping @Sendable () -> Void = {}
    ) {
        self.child = Mutex(child)
        self.notifier = notifier
        self.logger = logger
        self.update = update
        // Every series shows from the start, at 0: `rate()` needs the first sample.
        oversized.increment(by: 0)
        unsent.increment(by: 0)
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "chatd.metrics"))
        // A second: fresh enough for a 15 s scrape interval, cheap (a few KiB, one datagram).
        timer.schedule(deadline: .now() + 0.2, repeating: 1.0)
        timer.setEventHandler { [weak self] in self?.report() }
        timer.resume()
    }

    deinit { timer.cancel() }

    /// Reports under another name from now on (a promoted standby).
    public func rename(_ child: String) {
        self.child.withLock { $0 = child }
    }

    private func report() {
        update()
        let (value, dropped) = Self.fitting(ChatMetrics.text(), maxBytes: MetricsReport.maxBytes)
        if !dropped.isEmpty {
            oversized.increment()
            let new = warned.withLock { warned in dropped.filter { warned.insert($0).inserted } }
            if !new.isEmpty {
                logger.warning("metrics report over its datagram's size: series left out", metadata: ["families": "\(new.joined(separator: ","))"])
            }
        }
        let sent = notifier.send(["CHATD_CHILD": child.withLock { $0 }, MetricsReport.field: value], blocking: false)
        if !sent, notifier.isEnabled { unsent.increment() }
    }

    /// The field's value for `text`, at most `maxBytes`: whole when it fits,
    /// else without its largest families (the fewest series lost; named in
    /// `dropped`), so the rest, the drop counter included, still arrive.
    public static func fitting(_ text: String, maxBytes: Int) -> (value: String, dropped: [String]) {
        let value = MetricsReport.encode(text)
        guard value.utf8.count > maxBytes else { return (value, []) }
        var kept = Exposition(parsing: text).families.map { family in
            var one = Exposition()
            one.add(family)
            return (family: family, bytes: one.rendered().utf8.count)
        }
        var total = kept.reduce(0) { $0 + $1.bytes }
        var dropped: [String] = []
        while total > maxBytes, let largest = kept.indices.max(by: { kept[$0].bytes < kept[$1].bytes }) {
            total -= kept[largest].bytes
            dropped.append(kept.remove(at: largest).family.name)
        }
        var fitted = Exposition()
        for (family, _) in kept { fitted.add(family) }
        return (MetricsReport.encode(fitted.rendered()), dropped)
    }
}
