import ChatWire
import Foundation
import Logging
import ZeroMQ

/// The bus's fixed point, run by the supervisor (the longest-lived process):
/// it binds every endpoint, frontends and workers connect, so either side can
/// restart without the other noticing more than a reconnect.
///
/// Per queue (each store shard, the receipts role), a PULL (frontends push)
/// forwards to a PUSH (the queue's workers pull, round robin); a message for a
/// queue whose workers are all down waits in the broker until one connects. Events go XSUB → XPUB, with
/// subscriptions flowing back, so workers publish without knowing frontends.
public final class Broker: @unchecked Sendable {
    private let runtimeDir: String
    private let queues: [String]
    private let logger: Logger
    private let context: Context
    private let wakeup: Wakeup
    private var stopRequested = false
    private let lock = NSLock()

    /// - Parameter queues: command queue names (`Endpoints.queue`).
    public init(runtimeDir: String, queues: [String], logger: Logger) throws {
        self.runtimeDir = runtimeDir
        self.queues = queues
        self.logger = logger
        self.context = try Context()
        self.wakeup = try Wakeup()
    }

    public func stop() {
        lock.withLock { stopRequested = true }
        wakeup.signal()
    }

    /// Binds everything (so peers can connect once this returns) and then
    /// forwards on a thread of its own.
    public func start() throws {
        let sockets = try bindAll()
        let thread = Thread { [self] in
            do {
                try forward(sockets)
            } catch {
                logger.critical("broker failed", metadata: ["error": "\(error)"])
            }
        }
        thread.name = "chatd-broker"
        thread.start()
    }

    // Created on the caller's thread, then used only by the broker thread.
    struct Sockets: @unchecked Sendable {
        var eventsIn: Socket
        var eventsOut: Socket
        var queueIn: [Socket]
        var queueOut: [Socket]
    }

    private func bindAll() throws -> Sockets {
        func make(_ type: SocketType, _ endpoint: String) throws -> Socket {
            let socket = try Socket(context: context, type: type)
            try socket.setHighWaterMarks(send: 0, receive: 0)
            // A stale ipc file of a crashed run would make bind fail.
            if endpoint.hasPrefix("ipc://") { unlink(String(endpoint.dropFirst(6))) }
            try socket.bind(endpoint)
            return socket
        }
        return Sockets(
            eventsIn: try make(.xsub, Endpoints.eventsIn(runtimeDir)),
            eventsOut: try make(.xpub, Endpoints.eventsOut(runtimeDir)),
            queueIn: try queues.map { try make(.pull, Endpoints.queueIn(runtimeDir, $0)) },
            queueOut: try queues.map { try make(.push, Endpoints.queueOut(runtimeDir, $0)) }
        )
    }

    private func forward(_ s: Sockets) throws {
        defer {
            s.eventsIn.close(); s.eventsOut.close()
            s.queueIn.forEach { $0.close() }; s.queueOut.forEach { $0.close() }
        }
        while !lock.withLock({ stopRequested }) {
            var poller = Poller()
            poller.add(.socket(s.eventsIn))
            poller.add(.socket(s.eventsOut))
            poller.add(.fd(wakeup.fd))
            // Only read a queue when a worker can take the message: a PUSH
            // with no peer would block the whole broker.
            var queueIndex: [Int: Int] = [:]
            for queue in queues.indices where s.queueOut[queue].events & Int32(pollOut) != 0 {
                queueIndex[poller.add(.socket(s.queueIn[queue]))] = queue
            }
            for queue in queues.indices where s.queueOut[queue].events & Int32(pollOut) == 0 {
                // Wake when the queue's worker (re)connects.
                queueIndex[poller.add(.socket(s.queueOut[queue]), events: pollOut)] = -1
            }
            let ready = try poller.poll(timeoutMilliseconds: 1000)
            if ready[2] & pollIn != 0 { wakeup.drain() }
            if ready[0] & pollIn != 0 {
                while let frames = try s.eventsIn.receive(dontWait: true) { try s.eventsOut.send(frames) }
            }
            if ready[1] & pollIn != 0 {
                while let frames = try s.eventsOut.receive(dontWait: true) { try s.eventsIn.send(frames) }
            }
            for (index, queue) in queueIndex where queue >= 0 && ready[index] & pollIn != 0 {
                var moved = 0
                while moved < 4096, s.queueOut[queue].events & Int32(pollOut) != 0,
                    let frames = try s.queueIn[queue].receive(dontWait: true) {
                    try s.queueOut[queue].send(frames)
                    moved += 1
                }
            }
        }
    }
}
