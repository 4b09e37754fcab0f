import Foundation
import Testing
import ZeroMQ

@Suite struct ZeroMQTests {
    func endpoint(_ name: String) -> String { "inproc://\(name)-\(UInt32.random(in: 0...UInt32.max))" }

    @Test func pushPullCarriesMultipartMessagesInOrder() throws {
        let context = try Context()
        let pull = try Socket(context: context, type: .pull)
        let push = try Socket(context: context, type: .push)
        let name = endpoint("pushpull")
        try pull.bind(name)
        try push.connect(name)
        for i in 0..<100 {
            try push.send([Array("frame-a-\(i)".utf8), [], Array(repeating: UInt8(i), count: i * 10)])
        }
        for i in 0..<100 {
            let frames = try #require(try pull.receive())
            #expect(frames.count == 3)
            #expect(frames[0] == Array("frame-a-\(i)".utf8))
            #expect(frames[1].isEmpty)
            #expect(frames[2] == Array(repeating: UInt8(i), count: i * 10))
        }
        #expect(try pull.receive(dontWait: true) == nil)
    }

    @Test func forwardMovesWholeMultipartMessages() throws {
        let context = try Context()
        let (source, middleIn, middleOut, sink) = (
            try Socket(context: context, type: .push), try Socket(context: context, type: .pull),
            try Socket(context: context, type: .push), try Socket(context: context, type: .pull)
        )
        let a = endpoint("fwd-in"), b = endpoint("fwd-out")
        try middleIn.bind(a)
        try middleOut.bind(b)
        try source.connect(a)
        try sink.connect(b)
        #expect(try middleIn.forward(to: middleOut) == false)
        let big = Array(repeating: UInt8(7), count: 100_000)
        for i in 0..<50 { try source.send([Array("t\(i)".utf8), [], big, Array("end".utf8)]) }
        var poller = Poller()
        poller.add(.socket(middleIn))
        var moved = 0
        while moved < 50, try poller.poll(timeoutMilliseconds: 5000)[0] & pollIn != 0 {
            while try middleIn.forward(to: middleOut) { moved += 1 }
        }
        #expect(moved == 50)
        for i in 0..<50 {
            let frames = try #require(try sink.receive())
            #expect(frames == [Array("t\(i)".utf8), [], big, Array("end".utf8)])
        }
    }

    @Test func forwardToNoPeerDropsTheWholeMessageInsteadOfBlocking() throws {
        let context = try Context()
        let (source, middleIn, middleOut) = (
            try Socket(context: context, type: .push), try Socket(context: context, type: .pull), try Socket(context: context, type: .push)
        )
        let a = endpoint("drop-in"), b = endpoint("drop-out")
        try middleIn.bind(a)
        try middleOut.bind(b)  // nobody connects: a send would block
        try source.connect(a)
        try source.send([Array("first".utf8), Array("second".utf8)])
        try source.send([Array("third".utf8)])
        var poller = Poller()
        poller.add(.socket(middleIn))
        var dropped = 0
        var taken = 0
        while taken < 2, try poller.poll(timeoutMilliseconds: 5000)[0] & pollIn != 0 {
            while try middleIn.forward(to: middleOut, dropped: &dropped) { taken += 1 }
        }
        // Both messages were taken and dropped whole: no frame of the first is left behind.
        #expect(taken == 2)
        #expect(dropped == 2)
        #expect(try middleIn.receive(dontWait: true) == nil)
    }

    @Test func aFullPushRefusesWithoutBlocking() throws {
        let context = try Context()
        let push = try Socket(context: context, type: .push)
        try push.setHighWaterMarks(send: 10, receive: 10)
        // Connected to nobody: the pipe exists and fills to its mark.
        try push.connect(endpoint("nobody"))
        var queued = 0
        while try push.send([Array("c".utf8), [1]], dontWait: true) {
            queued += 1
            if queued > 1000 { break }
        }
        #expect(queued == 10)
    }

    @Test func aMonitorReportsTheConnectionAndItsLoss() throws {
        let context = try Context()
        let path = NSTemporaryDirectory() + "zmq-monitor-\(UInt32.random(in: 0...UInt32.max)).ipc"
        defer { unlink(path) }
        var server: Socket? = try Socket(context: context, type: .pull)
        try server!.bind("ipc://" + path)
        let client = try Socket(context: context, type: .push)
        let monitor = try client.monitor(name: "mon-\(UInt32.random(in: 0...UInt32.max))", events: MonitorEvent.handshakeSucceeded | MonitorEvent.disconnected)
        try client.connect("ipc://" + path)
        var poller = Poller()
        poller.add(.socket(monitor))
        func next() throws -> MonitorEvent? {
            guard try poller.poll(timeoutMilliseconds: 5000)[0] & pollIn != 0, let frames = try monitor.receive(dontWait: true) else { return nil }
            return MonitorEvent(frames: frames)
        }
        #expect(try next()?.event == MonitorEvent.handshakeSucceeded)
        server?.close()
        server = nil
        #expect(try next()?.event == MonitorEvent.disconnected)
    }

    @Test func pubSubDeliversOnlySubscribedTopics() throws {
        let context = try Context()
        let pub = try Socket(context: context, type: .pub)
        let sub = try Socket(context: context, type: .sub)
        let name = endpoint("pubsub")
        try pub.bind(name)
        try sub.connect(name)
        try sub.subscribe("room.")
        // Subscriptions reach the publisher asynchronously (slow joiner):
        // publish probes until one arrives.
        var poller = Poller()
        poller.add(.socket(sub))
        var joined = false
        for _ in 0..<200 where !joined {
            try pub.send([Array("room.probe".utf8)])
            joined = try poller.poll(timeoutMilliseconds: 10)[0] & pollIn != 0
        }
        #expect(joined)
        while try sub.receive(dontWait: true) != nil {}

        try pub.send([Array("reply.fe1".utf8), Array("not for us".utf8)])
        try pub.send([Array("room.42".utf8), Array("hello".utf8)])
        let frames = try #require(try sub.receive())
        #expect(frames == [Array("room.42".utf8), Array("hello".utf8)])
        #expect(try poller.poll(timeoutMilliseconds: 50)[0] == 0)
    }

    @Test func pollTimesOutWhenNothingArrives() throws {
        let context = try Context()
        let pull = try Socket(context: context, type: .pull)
        try pull.bind(endpoint("idle"))
        var poller = Poller()
        poller.add(.socket(pull))
        let start = Date()
        let ready = try poller.poll(timeoutMilliseconds: 100)
        let elapsed = Date().timeIntervalSince(start)
        #expect(ready == [0])
        #expect(elapsed >= 0.09)
    }

    @Test func wakeupFileDescriptorInterruptsPoll() throws {
        let context = try Context()
        let pull = try Socket(context: context, type: .pull)
        try pull.bind(endpoint("wake"))
        let wakeup = try Wakeup()
        var poller = Poller()
        poller.add(.socket(pull))
        poller.add(.fd(wakeup.fd))
        wakeup.signal()
        let ready = try poller.poll(timeoutMilliseconds: 5000)
        #expect(ready[1] & pollIn != 0)
        wakeup.drain()
        #expect(try poller.poll(timeoutMilliseconds: 0)[1] == 0)
    }

    @Test func sendWithoutPeerDoesNotBlockWhenAskedNotTo() throws {
        let context = try Context()
        let push = try Socket(context: context, type: .push)
        try push.bind(endpoint("lonely"))
        #expect(try push.send([[1]], dontWait: true) == false)
    }

    @Test func errorsCarryErrno() throws {
        let context = try Context()
        let socket = try Socket(context: context, type: .pull)
        #expect(throws: ZMQError.self) { try socket.bind("nonsense://x") }
        socket.close()
        // A closed socket reports ENOTSOCK rather than touching freed memory.
        #expect(throws: ZMQError.self) { try socket.receive(dontWait: true) }
    }

    @Test func terminatedContextUnblocksAReceiverAndDoesNotHang() async throws {
        let context = try Context()
        let finished = DispatchSemaphore(value: 0)
        let outcome = Outcome()
        let thread = Thread {
            do {
                let pull = try Socket(context: context, type: .pull)
                try pull.bind("inproc://blocked")
                _ = try pull.receive()
            } catch let error as ZMQError {
                outcome.set(error.isTerminated)
            } catch {}
            finished.signal()
        }
        thread.start()
        try await Task.sleep(for: .milliseconds(50))
        context.shutdown()
        #expect(finished.wait(timeout: .now() + 5) == .success)
        #expect(outcome.value)
    }

    @Test func closingWithQueuedMessagesDoesNotHang() throws {
        let finished = DispatchSemaphore(value: 0)
        Thread {
            do {
                let context = try Context()
                let push = try Socket(context: context, type: .push)
                // Nobody will ever connect to this endpoint.
                try push.connect("tcp://127.0.0.1:9")
                for _ in 0..<10 { try push.send([Array("x".utf8)], dontWait: true) }
                push.close()
            } catch {}
            finished.signal()
        }.start()
        #expect(finished.wait(timeout: .now() + 5) == .success)
    }
}

final class Outcome: @unchecked Sendable {
    private let lock = NSLock()
    private var stored = false
    func set(_ value: Bool) { lock.withLock { stored = value } }
    var value: Bool { lock.withLock { stored } }
}
