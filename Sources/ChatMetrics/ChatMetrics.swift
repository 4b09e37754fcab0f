import ChatWire
import CoreMetrics
import Dispatch
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

    /// Makes `MetricsSystem` count into `registry`. Once per process, first thing.
    public static func bootstrap() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = latencyBuckets
        MetricsSystem.bootstrap(factory)
    }

    /// This process's text, for its own report.
    public static func text() -> String { registry.emitToString() }
}

/// Sends this process's metrics to the supervisor once a second
/// (`MetricsReport`): a child's part of the tree's `/metrics`.
public final class MetricsReporter: @unchecked Sendable {
    // The timer is only resumed and cancelled; `child` is under its lock.
    private let timer: any DispatchSourceTimer
    private let child: Mutex<String>
    private let notifier: Notifier
    private let update: @Sendable () -> Void

    /// - Parameters:
    ///   - child: the name the supervisor knows this process by (`CHATD_CHILD`).
    ///   - update: sets the gauges read off state just before each report.
    public init(child: String, notifier: Notifier = Notifier(), update: @escaping @Sendable () -> Void = {}) {
        self.child = Mutex(child)
        self.notifier = notifier
        self.update = update
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
        let value = MetricsReport.encode(ChatMetrics.text())
        guard value.utf8.count <= MetricsReport.maxBytes else { return }
        notifier.send(["CHATD_CHILD": child.withLock { $0 }, MetricsReport.field: value])
    }
}
