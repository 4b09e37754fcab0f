import ChatWire
import Prometheus
import Testing

@testable import ChatMetrics

@Suite struct ExpositionTests {
    /// What swift-prometheus emits for a counter, a gauge and a histogram.
    static let store = """
        # TYPE chatd_messages_stored_total counter
        chatd_messages_stored_total 12
        # TYPE chatd_bus_commands_in_flight gauge
        chatd_bus_commands_in_flight{queue="store-0"} 3
        # TYPE chatd_message_delivery_latency_seconds histogram
        chatd_message_delivery_latency_seconds_bucket{le="0.001"} 4
        chatd_message_delivery_latency_seconds_bucket{le="+Inf"} 5
        chatd_message_delivery_latency_seconds_sum 0.0125
        chatd_message_delivery_latency_seconds_count 5

        """

    @Test func parsesFamiliesTypesLabelsAndValues() {
        let exposition = Exposition(parsing: Self.store)
        #expect(exposition.families.map(\.name) == [
            "chatd_bus_commands_in_flight", "chatd_message_delivery_latency_seconds", "chatd_messages_stored_total",
        ])
        #expect(exposition.families.map(\.type) == ["gauge", "histogram", "counter"])
        #expect(exposition.sum("chatd_messages_stored_total") == 12)
        #expect(exposition.sum("chatd_bus_commands_in_flight", matching: ["queue": "store-0"]) == 3)
        #expect(exposition.sum("chatd_message_delivery_latency_seconds_bucket", matching: ["le": "+Inf"]) == 5)
        #expect(exposition.sum("chatd_message_delivery_latency_seconds_count") == 5)
        #expect(exposition.samples("chatd_message_delivery_latency_seconds_sum").first?.value == "0.0125")
    }

    @Test func mergesProcessesIntoOneFamilyEachLabelledByProcess() {
        var merged = Exposition()
        merged.merge(Exposition(parsing: Self.store), labelledWith: [.init("role", "store"), .init("process", "store.0")])
        merged.merge(Exposition(parsing: Self.store), labelledWith: [.init("role", "store"), .init("process", "store.1")])
        let text = merged.rendered()
        // One TYPE line per family, whatever the number of processes (Prometheus refuses a second).
        #expect(text.components(separatedBy: "# TYPE chatd_messages_stored_total counter").count == 2)
        #expect(text.contains(#"chatd_messages_stored_total{role="store",process="store.1"} 12"#))
        #expect(text.contains(#"chatd_bus_commands_in_flight{role="store",process="store.0",queue="store-0"} 3"#))
        #expect(text.contains(#"chatd_message_delivery_latency_seconds_bucket{role="store",process="store.1",le="+Inf"} 5"#))
        let reread = Exposition(parsing: text)
        #expect(reread == merged)
        #expect(reread.sum("chatd_messages_stored_total") == 24)
        #expect(reread.sum("chatd_messages_stored_total", matching: ["process": "store.0"]) == 12)
        // A family's samples stay together: a histogram's series are contiguous.
        let names = reread.families.flatMap { $0.samples.map(\.name) }
        #expect(names.firstIndex(of: "chatd_messages_stored_total") == names.count - 2)
    }

    @Test func aLabelTheSampleHasIsNotReplaced() {
        var merged = Exposition()
        merged.merge(
            Exposition(parsing: "# TYPE chatd_child_up gauge\nchatd_child_up{role=\"x\"} 1\n"),
            labelledWith: [.init("role", "supervisor"), .init("process", "supervisor")]
        )
        #expect(merged.rendered() == "# TYPE chatd_child_up gauge\nchatd_child_up{process=\"supervisor\",role=\"x\"} 1\n")
    }

    @Test func escapesAndBadLines() {
        let text = """
            # HELP x some help
            # TYPE x counter
            x{path="a\\"b\\\\c\\nd"} 1
            x{broken="} 2
            not a sample at all
            y 1.5e3 1700000000000
            """
        let exposition = Exposition(parsing: text)
        #expect(exposition.samples("x").map { $0.label("path") } == [#"a"b\c"# + "\nd"])
        #expect(exposition.sum("y") == 1500)
        #expect(exposition.families.first { $0.name == "y" }?.type == "untyped")
        #expect(Exposition(parsing: exposition.rendered()) == exposition)
    }

    @Test func theNotifyFieldCarriesTheTextWithoutNewlines() throws {
        let value = MetricsReport.encode(Self.store)
        #expect(!value.contains("\n"))
        #expect(MetricsReport.decode(value) == Self.store)
        let event = MetricsReport.event(Array("a 1\n".utf8))
        #expect(try MetricsReport.document(Event(frames: event.encode())) == Array("a 1\n".utf8))
        #expect(MetricsReport.document(Event(topic: Topic.storeShards, kind: .storeShards, key: "", body: [])) == nil)
    }
}

/// A child's report must fit one sd_notify datagram, or it is cut down, never dropped whole.
@Suite struct ReportSizeTests {
    /// A frontend's per-queue series with `storeShards` store queues, as swift-prometheus writes them.
    static func frontendQueues(storeShards: Int, buckets: [Duration]) -> String {
        let registry = PrometheusCollectorRegistry()
        let queues = (0..<storeShards).map { "store-\($0)" } + ["receipts", "files", "search", "sessions"]
        func named(_ name: String, _ unit: String) -> MetricNameDescriptor { MetricNameDescriptor(metricName: name, unitName: unit, helpText: "") }
        for queue in queues {
            registry.makeDurationHistogram(descriptor: named("chatd_bus_command_duration", "seconds"), labels: [("queue", queue)], buckets: buckets)
                .record(.milliseconds(3))
            registry.makeGauge(descriptor: named("chatd_bus_commands_in", "flight"), labels: [("queue", queue)]).set(to: 12)
        }
        registry.makeCounter(descriptor: named("chatd_metrics_report_drops", "total"), labels: [("reason", "size")]).increment()
        return registry.emitToString()
    }

    @Test func aFrontendReportAt64ShardsFitsOneDatagram() {
        let text = Self.frontendQueues(storeShards: 64, buckets: ChatMetrics.commandBuckets)
        let (value, dropped) = MetricsReporter.fitting(text, maxBytes: MetricsReport.maxBytes)
        #expect(dropped.isEmpty)
        #expect(MetricsReport.decode(value) == text)
        // Room left for the frontend's other series (a few KiB: its counters, the latency histogram).
        #expect(value.utf8.count < MetricsReport.maxBytes - 10_000)
    }

    @Test func anOversizedReportLosesItsLargestFamilyOnly() {
        // The latency buckets per queue were over the bound at 38 shards and more.
        let text = Self.frontendQueues(storeShards: 64, buckets: ChatMetrics.latencyBuckets)
        #expect(MetricsReport.encode(text).utf8.count > MetricsReport.maxBytes)
        let (value, dropped) = MetricsReporter.fitting(text, maxBytes: MetricsReport.maxBytes)
        #expect(dropped == ["chatd_bus_command_duration_seconds"])
        #expect(value.utf8.count <= MetricsReport.maxBytes)
        let sent = Exposition(parsing: MetricsReport.decode(value))
        #expect(sent.samples("chatd_bus_commands_in_flight").count == 68)
        #expect(sent.sum("chatd_metrics_report_drops_total", matching: ["reason": "size"]) == 1)
        #expect(sent.samples("chatd_bus_command_duration_seconds_count").isEmpty)
    }
}

@Suite struct BatchHistogramTests {
    @Test func manySamplesAtOnceCountEachAndRenderCumulative() {
        let histogram = BatchHistogram(name: "test_batch_seconds", buckets: [.milliseconds(1), .milliseconds(10)])
        histogram.add(nanoseconds: 500_000, times: 5000)
        histogram.add(nanoseconds: 2_000_000, times: 3)
        histogram.add(nanoseconds: 20_000_000_000, times: 2)
        histogram.add(nanoseconds: 1_000_000, times: 0)
        var text = ""
        histogram.render(into: &text)
        let exposition = Exposition(parsing: text)
        #expect(exposition.families.map(\.type) == ["histogram"])
        #expect(exposition.sum("test_batch_seconds_bucket", matching: ["le": "0.001"]) == 5000)
        #expect(exposition.sum("test_batch_seconds_bucket", matching: ["le": "0.01"]) == 5003)
        #expect(exposition.sum("test_batch_seconds_bucket", matching: ["le": "+Inf"]) == 5005)
        #expect(exposition.sum("test_batch_seconds_count") == 5005)
        #expect(abs(exposition.sum("test_batch_seconds_sum") - (2.5 + 0.006 + 40)) < 1e-9)
    }
}
