import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Architecture invariants 1 and 2: a store worker killed with SIGKILL
    /// closes no client connection, and loses or duplicates no message.
    @Suite struct WorkerDeath {
        @Test func storeWorkerKilledMidConversation() async throws {
            let server = try await TestServer.start(storeWorkers: 1)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])

            try alice.send(json: ["type": "message", "content": "before"])
            #expect(try bob.receiveMessage(content: "before") != nil)

            let worker = try #require(server.childPIDs(matching: "worker --role store").first)
            #expect(kill(worker, SIGKILL) == 0)
            // Sent while the worker is dead: it waits in the broker or is resent.
            try alice.send(json: ["type": "message", "content": "during"])

            try await server.waitUntil(timeout: 5, "a new store worker") {
                let pids = server.childPIDs(matching: "worker --role store")
                return !pids.isEmpty && !pids.contains(worker)
            }
            try alice.send(json: ["type": "message", "content": "after"])

            for (name, client) in [("alice", alice), ("bob", bob)] {
                var counts: [String: Int] = [:]
                // "after" was sent last; once it is in, "during" must have come exactly once.
                while counts["after"] == nil, let event = try client.receive(type: "message", timeout: 15) {
                    let content = (event["message"] as? [String: Any])?["content"] as? String ?? ""
                    counts[content, default: 0] += 1
                }
                #expect(counts["during"] == 1, "\(name) got \(counts)")
                #expect(counts["after"] == 1, "\(name) got \(counts)")
                #expect(!client.isClosed, "\(name)'s socket closed")
            }
            // Both sockets are still served.
            for client in [alice, bob] {
                try client.send(json: ["type": "ping"])
                #expect(try client.receive(type: "pong") != nil)
            }
            #expect(try await Steps.contents(server, token: tokens[0], room: room) == ["before", "during", "after"])
            #expect(server.log.contains("child exited"))
        }
    }
}
