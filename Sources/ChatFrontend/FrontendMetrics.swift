import ChatBus
import ChatMetrics
import Foundation
import Logging
import Metrics
import Systemd

/// The frontend's metric points (docs/metrics.md). Each is made once, on
/// first use (after `ChatMetrics.bootstrap`); counting is an atomic add,
/// a message's delivery latency two (`BatchHistogram`, whatever the room's
/// size), and nothing allocates per message.
enum FrontendMetrics {
    static let messagesAccepted = Counter(label: "chatd_messages_accepted_total")
    /// Message frames (`m:<id>:new`) written to sockets: one per receiving socket.
    static let deliveries = Counter(label: "chatd_message_deliveries_total")
    /// From the accept (the message id's UUIDv7 time, milliseconds) to the
    /// write of the frame to a receiving socket, one sample per delivery.
    static let deliveryLatency = BatchHistogram(name: "chatd_message_delivery_latency_seconds")
    static let handshakesAccepted = Counter(label: "chatd_websocket_handshakes_total", dimensions: [("outcome", "accepted")])
    static let handshakesRefused = Counter(label: "chatd_websocket_handshakes_total", dimensions: [("outcome", "refused")])
    static let uploadBytes = Counter(label: "chatd_upload_bytes_total")

    /// Refusals by limit: `rest`, `socket_event`, `handshake`, `sockets_per_user`.
    enum Limit: String, CaseIterable {
        case rest, socketEvent = "socket_event", handshake, socketsPerUser = "sockets_per_user"
        var counter: Counter {
            switch self {
            case .rest: FrontendMetrics.restRefusals
            case .socketEvent: FrontendMetrics.eventRefusals
            case .handshake: FrontendMetrics.handshakeRefusals
            case .socketsPerUser: FrontendMetrics.socketRefusals
            }
        }
    }
    static let restRefusals = refusals(.rest)
    static let eventRefusals = refusals(.socketEvent)
    static let handshakeRefusals = refusals(.handshake)
    static let socketRefusals = refusals(.socketsPerUser)
    private static func refusals(_ limit: Limit) -> Counter {
        Counter(label: "chatd_rate_limit_refusals_total", dimensions: [("limit", limit.rawValue)])
    }

    static let webSockets = Gauge(label: "chatd_websocket_connections")

    /// Counts the deliveries of a room's new messages to `sockets` sockets,
    /// now: each message's latency since its accept, once per socket.
    static func delivered(acceptedMillis: [UInt64], sockets: Int) {
        guard sockets > 0, !acceptedMillis.isEmpty, ChatMetrics.isEnabled else { return }
        deliveries.increment(by: acceptedMillis.count * sockets)
        let nowNanos = UInt64(max(0, Date().timeIntervalSince1970 * 1e9))
        for millis in acceptedMillis {
            // 48 bits of milliseconds can overflow in nanoseconds (an id that is no UUIDv7 time):
            // that, a clock step back or another host's clock ahead reads as 0, not as a trap or a negative time.
            let (acceptedNanos, overflow) = millis.multipliedReportingOverflow(by: 1_000_000)
            let latency = overflow ? 0 : nowNanos - min(nowNanos, acceptedNanos)
            deliveryLatency.record(nanoseconds: Int64(clamping: latency), times: sockets)
        }
    }

    /// The accept time a message id carries (UUIDv7: the first 48 bits are
    /// Unix milliseconds), read off its first 13 characters; nil for another id.
    static func acceptedMillis(messageID id: Substring) -> UInt64? {
        let utf8 = id.utf8
        guard utf8.count == 36 else { return nil }
        var millis: UInt64 = 0
        var digits = 0
        for byte in utf8.prefix(13) where byte != UInt8(ascii: "-") {
            let value: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = byte - UInt8(ascii: "a") + 10
            default: return nil
            }
            millis = millis << 4 | UInt64(value)
            digits += 1
        }
        return digits == 12 ? millis : nil
    }

    /// Sends this frontend's metrics to the supervisor once a second, with
    /// the gauges read off its state first.
    static func reporter(slot: String, bus: BusClient, life: FrontendLife, logger: Logger) -> MetricsReporter {
        // Every series shows from the start, at 0: `rate()` needs the first sample.
        _ = (messagesAccepted, deliveries, deliveryLatency, handshakesAccepted, handshakesRefused, uploadBytes)
        _ = Limit.allCases.map(\.counter)
        return MetricsReporter(child: slot, logger: logger) {
            webSockets.record(life.webSockets)
            for (queue, count) in bus.outstanding() {
                Gauge(label: "chatd_bus_commands_in_flight", dimensions: [("queue", queue)]).record(count)
            }
        }
    }
}
