import ChatBus
import ChatWire
import Foundation
import Synchronization
import Testing
import ZeroMQ

@testable import ChatFrontend

/// A number several tasks and the bus thread read and write.
final class Counter: Sendable {
    private let value: Atomic<Int>
    init(_ start: Int) { value = Atomic(start) }
    var current: Int {
        get { value.load(ordering: .sequentiallyConsistent) }
        set { value.store(newValue, ordering: .sequentiallyConsistent) }
    }
}

/// Several frontends on one broker, each subscribed to the rooms of its
/// sockets (`RoomSubscriptions`): real broker and workers in process, the
/// frontends' bus clients talking to them as `chatd frontend` does.
@Suite struct RoomSubscriptionTests {
    /// The contents of the `message` events of `room` in `log`, in arrival order.
    static func contents(_ log: EventLog, room: String) -> [String] {
        log.events.withLock { $0 }.filter { $0.roomID == room }.compactMap { event in
            let object = try? JSONSerialization.jsonObject(with: Data(event.body)) as? [String: Any]
            guard object?["type"] as? String == "message" else { return nil }
            return (object?["message"] as? [String: Any])?["content"] as? String
        }
    }

    /// Waits (bounded) until `log` holds the message `content` of `room`.
    static func waitFor(_ content: String, room: String, in log: EventLog) async throws {
        let deadline = Date().addingTimeInterval(10)
        while !contents(log, room: room).contains(content) {
            guard Date() < deadline else { throw TestFailure("\(content) never reached the frontend") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    static func post(_ server: InProcessServer, token: String, room: String, _ content: String) async throws {
        let response = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: token, json: ["content": content])
        #expect(response.status == 201, "\(response.text)")
    }

    static func send(_ count: Int, server: InProcessServer, token: String, room: String, issued: Counter) async throws {
        for i in 1...count {
            issued.current = i
            try await post(server, token: token, room: room, "m\(i)")
        }
    }

    @Test func eachFrontendReceivesOnlyTheEventsOfItsRooms() async throws {
        try await InProcessServer.run(configure: Steps.noRateLimits) { server in
            let t = try await Steps.users(server, "alice", "bob")
            let x = try await Steps.room(server, token: t[0], members: ["bob"], name: "x")
            let y = try await Steps.room(server, token: t[0], members: ["bob"], name: "y")
            let (logA, logB) = (EventLog(), EventLog())
            let a = try server.cluster.otherFrontend(events: logA)
            let b = try server.cluster.otherFrontend(events: logB)
            guard case .success = await a.subscribe(room: x), case .success = await b.subscribe(room: y) else {
                throw TestFailure("no subscription")
            }
            for i in 0..<20 {
                try await Self.post(server, token: t[0], room: x, "x\(i)")
                try await Self.post(server, token: t[1], room: y, "y\(i)")
            }
            // The broker forwards in order: once the last event of its own
            // room reached a frontend, any of the other room would have too.
            try await Self.post(server, token: t[0], room: x, "x-last")
            try await Self.post(server, token: t[0], room: y, "y-last")
            try await Self.waitFor("x-last", room: x, in: logA)
            try await Self.waitFor("y-last", room: y, in: logB)
            #expect(Self.contents(logA, room: x) == (0..<20).map { "x\($0)" } + ["x-last"])
            #expect(Self.contents(logB, room: y) == (0..<20).map { "y\($0)" } + ["y-last"])
            #expect(logA.events.withLock { $0 }.allSatisfy { $0.roomID == x })
            #expect(logB.events.withLock { $0 }.allSatisfy { $0.roomID == y })
            // The server's own frontend holds no room: it received nothing.
            #expect(server.roomEvents.isEmpty)
        }
    }

    /// With no linger every release unsubscribes at once, so each round
    /// subscribes anew while the last round's sync topic and unsubscribe
    /// may still be on their way: each subscription is still confirmed,
    /// and the message sent after it arrives.
    @Test func aRoomUnsubscribedAndSubscribedAgainGetsItsEventsAgain() async throws {
        try await InProcessServer.run(configure: Steps.noRateLimits) { server in
            let t = try await Steps.users(server, "alice")
            let x = try await Steps.room(server, token: t[0], members: [], name: "x")
            let log = EventLog()
            let frontend = try server.cluster.otherFrontend(events: log, roomLinger: 0)
            for round in 0..<20 {
                guard case .success = await frontend.subscribe(room: x) else { throw TestFailure("no subscription in round \(round)") }
                try await Self.post(server, token: t[0], room: x, "m\(round)")
                try await Self.waitFor("m\(round)", room: x, in: log)
                frontend.unsubscribe(room: x)
            }
            #expect(Self.contents(log, room: x) == (0..<20).map { "m\($0)" })
        }
    }

    /// What crosses the wire to a subscriber, read with an XSUB (which,
    /// unlike a SUB, does not filter on its side): subscribed to one room,
    /// only that room's events (and its sync answer) are sent to it; on the
    /// whole `room.` prefix, as every frontend was before, all of them.
    @Test func theBrokerSendsEachSubscriberOnlyItsRooms() async throws {
        try await InProcessServer.run(configure: Steps.noRateLimits) { server in
            let t = try await Steps.users(server, "alice")
            let x = try await Steps.room(server, token: t[0], members: [], name: "x")
            let y = try await Steps.room(server, token: t[0], members: [], name: "y")
            let one = try Self.rawSubscriber(server, to: Topic.room(x), sync: 1)
            let all = try Self.rawSubscriber(server, to: Topic.roomPrefix, sync: 2)
            defer { one.close(); all.close() }
            try await Self.waitForSync(one, number: 1)
            try await Self.waitForSync(all, number: 2)
            for i in 0..<10 {
                try await Self.post(server, token: t[0], room: x, "x\(i)")
                try await Self.post(server, token: t[0], room: y, "y\(i)")
            }
            try await Self.post(server, token: t[0], room: x, "x-last")
            let toOne = try await Self.topics(one, until: Topic.room(x), count: 11)
            let toAll = try await Self.topics(all, until: Topic.room(x), count: 11)
            #expect(toOne == Array(repeating: Topic.room(x), count: 11))
            #expect(toAll.count == 21 && toAll.filter { $0 == Topic.room(y) }.count == 10)
        }
    }

    /// An XSUB on the broker's events with one subscription and a sync
    /// request after it, as `BusClient` makes them.
    static func rawSubscriber(_ server: InProcessServer, to topic: String, sync number: UInt64) throws -> Socket {
        let socket = try Socket(context: server.cluster.context, type: .xsub)
        try socket.connect(server.cluster.address.eventsOut)
        try socket.send([[1] + Array(topic.utf8)])
        try socket.send([[1] + Array(SubscriptionSync(frontendID: "raw", number: number).topic.utf8)])
        return socket
    }

    static func waitForSync(_ socket: Socket, number: UInt64) async throws {
        let deadline = Date().addingTimeInterval(10)
        while true {
            if let frames = try socket.receive(dontWait: true), let event = try? Event(frames: frames),
                SubscriptionSync(event) == SubscriptionSync(frontendID: "raw", number: number) {
                return
            }
            guard Date() < deadline else { throw TestFailure("no answer to sync \(number)") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// The topics of what arrives, until `count` messages of `topic` came.
    static func topics(_ socket: Socket, until topic: String, count: Int) async throws -> [String] {
        var topics: [String] = []
        let deadline = Date().addingTimeInterval(10)
        while topics.filter({ $0 == topic }).count < count {
            if let frames = try socket.receive(dontWait: true) {
                topics.append(String(decoding: frames[0], as: UTF8.self))
                continue
            }
            guard Date() < deadline else { throw TestFailure("only \(topics.count) messages came") }
            try await Task.sleep(for: .milliseconds(2))
        }
        return topics
    }

    /// The guarantee a WebSocket handshake relies on: subscribed while the
    /// room's events are being published, a frontend receives, in order,
    /// every one published after its subscription was confirmed.
    @Test func aFrontendSubscribingDuringAStreamMissesNothingPublishedAfterItsSync() async throws {
        try await InProcessServer.run(configure: Steps.noRateLimits) { server in
            let t = try await Steps.users(server, "alice")
            let x = try await Steps.room(server, token: t[0], members: [], name: "x")
            let log = EventLog()
            let frontend = try server.cluster.otherFrontend(events: log)
            let count = 300
            // How many messages were sent (their POST begun) so far, and when
            // the subscription was confirmed.
            let issued = Counter(0)
            let sentAtSync = Counter(-1)
            async let sending: Void = Self.send(count, server: server, token: t[0], room: x, issued: issued)
            while issued.current < 30 { try await Task.sleep(for: .milliseconds(1)) }
            let subscribed = await withCheckedContinuation { continuation in
                frontend.subscribe(room: x) { result in
                    // On the bus thread, as the sync is handled.
                    sentAtSync.current = issued.current
                    continuation.resume(returning: result)
                }
            }
            guard case .success = subscribed else { throw TestFailure("no subscription") }
            try await sending
            let first = sentAtSync.current + 1
            #expect(first > 1 && first <= count, "the subscription came during the stream")
            try await Self.waitFor("m\(count)", room: x, in: log)
            let received = Self.contents(log, room: x)
            // Before the sync, a part may have come; from the sync on, every
            // one, in order: what arrived is m<j> ... m<count>, j <= first.
            #expect(received.count >= count - first + 1)
            #expect(received == ((count - received.count + 1)...count).map { "m\($0)" })
        }
    }
}
