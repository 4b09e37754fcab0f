import ChatCore
import ChatTesting
import Foundation
import Testing

/// One chatting client of the chaos test: sends its messages at a steady pace
/// and records every message event it receives.
final class ChaosClient: @unchecked Sendable {
    let socket: WebSocketClient
    let name: String
    let count: Int
    let expectedInRoom: Int
    var received: [String: Int] = [:]
    var closed = false
    var error: String?

    init(socket: WebSocketClient, name: String, count: Int, expectedInRoom: Int) {
        self.socket = socket
        self.name = name
        self.count = count
        self.expectedInRoom = expectedInRoom
    }

    func run(deadline: Date) {
        do {
            for i in 0..<count {
                try socket.send(json: ["type": "message", "content": "\(name)#\(i)", "client_msg_id": "\(name)-\(i)"])
                // About 25 messages a second per client, so the chaos overlaps the traffic.
                let until = Date().addingTimeInterval(0.04)
                while Date() < until { try drain(timeout: until.timeIntervalSinceNow) }
            }
            while received.count < expectedInRoom && Date() < deadline { try drain(timeout: 0.5) }
        } catch {
            self.error = "\(name): \(error)"
        }
        closed = socket.isClosed || socket.closeCode != nil
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

extension EndToEnd {
    /// Issue 6: invariants 1 and 2 under chaos. 50 clients in 10 rooms chat
    /// while every worker role is SIGKILLed several times and the store shards
    /// get a rolling restart; then every message is stored exactly once and
    /// delivered exactly once to every member, no socket closed, and every
    /// REST call either succeeded or got 503 in time.
    @Suite struct Chaos {
        @Test func nothingIsLostOrDuplicated() async throws {
            let server = try await TestServer.start(storeWorkers: 2)
            defer { server.stop() }
            let perRoom = 5, rooms = 10, perClient = 30
            var clients: [ChaosClient] = []
            var roomIDs: [String] = []
            var readers: [String: String] = [:]  // room → a member's token
            for r in 0..<rooms {
                let subs = (0..<perRoom).map { "chaos-\(r)-\($0)" }
                var tokens: [String] = []
                for sub in subs {
                    let token = try await server.token(sub: sub)
                    _ = try await server.request("GET", "/api/chat/rooms/", token: token)
                    tokens.append(token)
                }
                let room = try await Steps.room(server, token: tokens[0], members: Array(subs.dropFirst()), name: "chaos \(r)")
                roomIDs.append(room)
                readers[room] = tokens[0]
                for (index, token) in tokens.enumerated() {
                    clients.append(ChaosClient(socket: try server.webSocket("/ws/chat/\(room)/", token: token), name: subs[index],
                                               count: perClient, expectedInRoom: perRoom * perClient))
                }
            }

            let deadline = Date().addingTimeInterval(60)
            let group = DispatchGroup()
            for client in clients {
                group.enter()
                Thread { client.run(deadline: deadline); group.leave() }.start()
            }

            // REST during the chaos: each call succeeds or gets 503 within its deadline.
            let restLog = RestLog()
            let readersByRoom = readers
            let restTask = Task {
                while !Task.isCancelled {
                    let started = Date()
                    let room = roomIDs.randomElement()!
                    let status = (try? await server.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=5", token: readersByRoom[room], timeout: 20).status) ?? -1
                    restLog.record(status: status, seconds: Date().timeIntervalSince(started))
                }
            }

            // The chaos: every role killed three times, then a rolling restart of the store shards.
            var kills = 0
            for round in 0..<3 {
                for role in ["store", "receipts", "search", "files", "store"] {
                    // The previous victim's replacement may still be starting.
                    var victim: Int32?
                    try await server.waitUntil(timeout: 10, "a \(role) worker to kill") {
                        victim = server.childPIDs(matching: "worker --role \(role)").randomElement()
                        return victim != nil
                    }
                    kill(victim!, SIGKILL)
                    kills += 1
                    try await Task.sleep(for: .milliseconds(100 + 50 * round))
                }
            }
            for pid in server.childPIDs(matching: "worker --role store") {
                kill(pid, SIGTERM)
                try await server.waitUntil(timeout: 10, "the restarted shard") {
                    server.childPIDs(matching: "worker --role store").count == 2 && !server.childPIDs(matching: "worker --role store").contains(pid)
                }
            }
            group.wait()
            restTask.cancel()

            // Every client: socket open, every message of its room exactly once.
            for client in clients {
                #expect(client.error == nil, "\(client.error ?? "")")
                #expect(!client.closed, "\(client.name)'s socket closed")
                let duplicates = client.received.filter { $0.value > 1 }
                #expect(duplicates.isEmpty, "\(client.name) got duplicates: \(duplicates.keys.sorted().prefix(5))")
                #expect(client.received.count == perRoom * perClient, "\(client.name) got \(client.received.count) of \(perRoom * perClient)")
            }
            // Stored exactly once, each.
            for room in roomIDs {
                let contents = try await Steps.contents(server, token: readers[room]!, room: room)
                #expect(contents.count == perRoom * perClient, "room has \(contents.count) messages")
                #expect(Set(contents).count == contents.count, "a message was stored twice")
            }
            let calls = restLog.calls
            #expect(!calls.isEmpty)
            // (The call in flight when the task is cancelled has no status.)
            let answered = calls.filter { $0.status != -1 }
            #expect(calls.count - answered.count <= 1)
            #expect(answered.allSatisfy { $0.status == 200 || $0.status == 503 }, "REST statuses: \(Set(calls.map(\.status)))")
            #expect(calls.allSatisfy { $0.seconds < 12 }, "a REST call took \(calls.map(\.seconds).max() ?? 0) s")
            #expect(kills == 15)
            // Each kill and each rolling-restart stop showed up as an exit (a victim picked
            // twice while dying counts once).
            #expect(server.log.components(separatedBy: "child exited").count - 1 >= 15)
        }
    }
}

final class RestLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [(status: Int, seconds: Double)] = []
    func record(status: Int, seconds: Double) { lock.withLock { stored.append((status, seconds)) } }
    var calls: [(status: Int, seconds: Double)] { lock.withLock { stored } }
}
