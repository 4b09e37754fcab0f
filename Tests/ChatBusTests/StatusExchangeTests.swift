import ChatBus
import ChatWire
import Foundation
import Logging
import Testing
import ZeroMQ

/// The supervisors' host statuses (`StatusExchange`).
@Suite struct StatusExchangeTests {
    /// A status document is held whole before it is read: one over
    /// `HostStatus.maxDocumentBytes` is refused by the SUB, never handed on.
    /// libzmq drops that connection for good (a protocol error): the
    /// exchange makes the socket again once it stayed down `retryNanos`.
    @Test func aDocumentOverTheCapIsNeverTakenIn() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("status-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bus = BusAddress.ipc(directory: dir)
        let context = try Context()
        let broker = try Socket(context: context, type: .pub)
        defer { broker.close() }
        try broker.bind(bus.eventsOut)
        let exchange = try StatusExchange(publishTo: [], readFrom: [bus])
        defer { exchange.close() }
        let small = HostStatus(host: "fe-b", document: Array(#"{"run":"frontend"}"#.utf8))
        let big = HostStatus(host: "fe-c", document: Array(repeating: UInt8(ascii: " "), count: HostStatus.maxDocumentBytes + 1))
        /// Sends `small` until one arrives; every status that arrived.
        func untilSmallArrives() throws -> [HostStatus] {
            var got: [HostStatus] = []
            let deadline = Date().addingTimeInterval(10)
            while !got.contains(small), Date() < deadline {
                _ = try broker.send(small.event.encode())
                Thread.sleep(forTimeInterval: 0.02)
                got += try exchange.received()
                // The time passes here: what comes down now is remade at once.
                let now = monotonicNanos()
                exchange.checkConnections(logger: Logger(label: "test"), now: now)
                exchange.checkConnections(logger: Logger(label: "test"), now: now + StatusExchange.retryNanos)
            }
            #expect(got.contains(small), "the small status arrives")
            return got
        }
        _ = try untilSmallArrives()
        _ = try broker.send(big.event.encode())
        let after = try untilSmallArrives()
        #expect(!after.contains { $0.host == "fe-c" }, "the oversized document was taken in")
    }
}
