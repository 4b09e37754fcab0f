import ChatBus
import ChatWire
import Logging
import Testing
import ZeroMQ

/// The broker's own commands (the supervisor's session reset of a retired
/// frontend slot): handed to a worker of the queue as a frontend's are, and
/// kept until one connects.
@Suite struct BrokerTests {
    @Test func aCommandOfTheBrokersOwnWaitsForAWorkerAndReachesIt() throws {
        let context = try Context()
        let bus = BusAddress.inproc(name: "broker-test-\(UInt32.random(in: 0...UInt32.max))")
        let queue = Endpoints.queue(.receipts)
        let broker = try Broker(bus: bus, queues: [queue], logger: Logger(label: "test"), context: context)
        try broker.start()
        defer { broker.stop() }
        let command = Command(kind: .sessionReset, requestID: "r-1", origin: "supervisor", user: [], body: Array(#"{"frontend":"frontend.2"}"#.utf8))
        // No worker yet: the broker keeps it.
        broker.send(command, toQueue: queue)
        let worker = try Socket(context: context, type: .pull)
        defer { worker.close() }
        try worker.connect(bus.queueOut(queue))
        var poller = Poller()
        poller.add(.socket(worker))
        let ready = try poller.poll(timeoutMilliseconds: 10_000)
        #expect(ready[0] & pollIn != 0, "the command reached the worker")
        let frames = try #require(try worker.receive(dontWait: true))
        #expect(try Command(frames: frames) == command)
    }
}
