import ChatCore
import Foundation

/// Invariants 1 and 2 under fire, shared by the bounded end-to-end test and
/// `chatd-load --chaos`: clients chat in rooms while every worker role is
/// SIGKILLed over and over and the store shards get rolling restarts; then
/// the outcome is counted.
public enum Chaos {
    public struct Options: Sendable {
        public var rooms = 10
        public var perRoom = 5
        public var messagesPerClient = 30
        /// Delay between one client's messages.
        public var pace = 0.04
        /// Rounds of killing every role (store twice per round).
        public var killRounds = 3
        public var rollingRestarts = 1
        /// Seconds between kills; nil spreads them over the sending time.
        /// Above ~1.1 s, a role's victim has lived past the supervisor's
        /// quick-exit window (5 s) by the time it is killed again, so no
        /// crash-loop backoff comes into play.
        public var killPause: Double?

        public init() {}
    }

    public struct Outcome: Sendable {
        public var clients = 0
        public var sent = 0
        public var stored = 0
        public var storedTwice = 0
        /// Per member, messages of its room it never got / got more than once.
        public var missingDeliveries = 0
        public var duplicateDeliveries = 0
        public var closedSockets = 0
        public var clientErrors: [String] = []
        public var kills = 0
        public var rollingRestarts = 0
        public var restCalls = 0
        public var restOK = 0
        public var rest503 = 0
        public var restOther = 0
        public var restSlowest = 0.0
        public var seconds = 0.0

        public var summary: String {
            """
            clients \(clients), messages sent \(sent), stored \(stored) (twice: \(storedTwice))
            deliveries missing \(missingDeliveries), duplicated \(duplicateDeliveries), sockets closed \(closedSockets), client errors \(clientErrors.count)
            kills \(kills), rolling restarts \(rollingRestarts)
            REST calls \(restCalls): 200 \(restOK), 503 \(rest503), other \(restOther), slowest \(String(format: "%.2f", restSlowest)) s
            """
        }
    }

    /// One chatting client: sends at a steady pace, records every message event.
    final class Client: @unchecked Sendable {
        let socket: WebSocketClient
        let name: String
        let count: Int
        let pace: Double
        let expectedInRoom: Int
        var received: [String: Int] = [:]
        var error: String?

        init(socket: WebSocketClient, name: String, count: Int, pace: Double, expectedInRoom: Int) {
            self.socket = socket
            self.name = name
            self.count = count
            self.pace = pace
            self.expectedInRoom = expectedInRoom
        }

        func run(deadline: Date) {
            do {
                for i in 0..<count {
                    try socket.send(json: ["type": "message", "content": "\(name)#\(i)", "client_msg_id": "\(name)-\(i)"])
                    let until = Date().addingTimeInterval(pace)
                    while Date() < until { try drain(timeout: until.timeIntervalSinceNow) }
                }
                while received.count < expectedInRoom && Date() < deadline { try drain(timeout: 0.5) }
            } catch {
                self.error = "\(name): \(error)"
            }
        }

        private func drain(timeout: Double) throws {
            guard let frame = try socket.receive(timeout: max(0, timeout)) else { return }
            if frame.opcode == .close { throw TestServerError(description: "closed with \(frame.closeCode ?? 0)") }
            guard frame.opcode == .text,
                let event = try? JSONSerialization.jsonObject(with: Data(frame.payload)) as? [String: Any],
                event["type"] as? String == "message",
                let content = (event["message"] as? [String: Any])?["content"] as? String else { return }
            received[content, default: 0] += 1
        }
    }

    final class RestLog: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: [(status: Int, seconds: Double)] = []
        private var stopFlag = false
        func record(status: Int, seconds: Double) { lock.withLock { stored.append((status, seconds)) } }
        func stop() { lock.withLock { stopFlag = true } }
        var stopped: Bool { lock.withLock { stopFlag } }
        var calls: [(status: Int, seconds: Double)] { lock.withLock { stored } }
    }

    /// Runs the chaos against `server` (which should have 2 or more store shards).
    public static func run(_ server: TestServer, _ options: Options) async throws -> Outcome {
        let started = Date()
        var clients: [Client] = []
        var roomIDs: [String] = []
        var readers: [String: String] = [:]
        for r in 0..<options.rooms {
            let (room, subs, tokens) = try await server.room(of: options.perRoom, prefix: "chaos-\(r)", name: "chaos \(r)")
            roomIDs.append(room)
            readers[room] = tokens[0]
            for (index, token) in tokens.enumerated() {
                clients.append(Client(socket: try server.webSocket("/ws/chat/\(room)/", token: token), name: subs[index],
                                      count: options.messagesPerClient, pace: options.pace,
                                      expectedInRoom: options.perRoom * options.messagesPerClient))
            }
        }
        let sendTime = Double(options.messagesPerClient) * options.pace
        let deadline = Date().addingTimeInterval(sendTime + 60)
        let group = DispatchGroup()
        for client in clients {
            group.enter()
            Thread { client.run(deadline: deadline); group.leave() }.start()
        }

        let restLog = RestLog()
        let readersByRoom = readers
        // Stopped by a flag, not Task.cancel: cancelling the task cancels
        // its in-flight URLSession request, and FoundationNetworking's cancel
        // can deadlock (seen: the test hung in URLSessionTask.cancel).
        let restStop = RestLog()
        let rest = Task {
            while !restStop.stopped {
                let begun = Date()
                let room = roomIDs.randomElement()!
                let status = (try? await server.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=5", token: readersByRoom[room], timeout: 20).status) ?? -1
                restLog.record(status: status, seconds: Date().timeIntervalSince(begun))
            }
        }

        var outcome = Outcome()
        let killPause = options.killPause ?? max(0.1, sendTime / Double(max(1, options.killRounds * 5 + options.rollingRestarts * 2)) / 2)
        for _ in 0..<options.killRounds {
            for role in ["store", "receipts", "search", "files", "store"] {
                // The previous victim's replacement may still be starting.
                var victim: Int32?
                try await server.waitUntil(timeout: 10, "a \(role) worker to kill") {
                    victim = server.childPIDs(matching: "worker --role \(role)").randomElement()
                    return victim != nil
                }
                kill(victim!, SIGKILL)
                outcome.kills += 1
                try await Task.sleep(for: .milliseconds(Int(killPause * 1000)))
            }
        }
        for _ in 0..<options.rollingRestarts {
            for pid in server.childPIDs(matching: "worker --role store") {
                kill(pid, SIGTERM)
                try await server.waitUntil(timeout: 10, "the restarted shard") {
                    let pids = server.childPIDs(matching: "worker --role store")
                    return !pids.contains(pid) && pids.count >= 2
                }
            }
            outcome.rollingRestarts += 1
        }
        group.wait()
        restStop.stop()
        await rest.value

        outcome.clients = clients.count
        outcome.sent = clients.count * options.messagesPerClient
        for client in clients {
            if let error = client.error { outcome.clientErrors.append(error) }
            if client.socket.isClosed || client.socket.closeCode != nil { outcome.closedSockets += 1 }
            outcome.duplicateDeliveries += client.received.values.reduce(0) { $0 + max(0, $1 - 1) }
            outcome.missingDeliveries += max(0, client.expectedInRoom - client.received.count)
        }
        for room in roomIDs {
            var contents: [String] = []
            var page = 1
            while true {
                let response = try await server.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=100&page=\(page)", token: readers[room])
                contents += (response.object["results"] as? [[String: Any]] ?? []).compactMap { $0["content"] as? String }
                if response.object["next"] is NSNull || response.object["next"] == nil { break }
                page += 1
            }
            outcome.stored += Set(contents).count
            outcome.storedTwice += contents.count - Set(contents).count
        }
        let calls = restLog.calls.filter { $0.status != -1 }
        outcome.restCalls = calls.count
        outcome.restOK = calls.filter { $0.status == 200 }.count
        outcome.rest503 = calls.filter { $0.status == 503 }.count
        outcome.restOther = calls.count - outcome.restOK - outcome.rest503
        outcome.restSlowest = calls.map(\.seconds).max() ?? 0
        outcome.seconds = Date().timeIntervalSince(started)
        return outcome
    }
}
