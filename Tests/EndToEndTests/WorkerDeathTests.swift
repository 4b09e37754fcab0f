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

            // "during" may die in the old worker's queue and come back by the
            // frontend's resend; the stream sequencer still stores it before
            // "after". A sentinel sent once both are stored bounds the wait for
            // a duplicate: a resend of either would be published before it.
            var counts: [ObjectIdentifier: [String: Int]] = [:]
            for client in [alice, bob] {
                var seen: [String: Int] = [:]
                while seen["during"] == nil || seen["after"] == nil, let event = try client.receive(type: "message", timeout: 15) {
                    seen[(event["message"] as? [String: Any])?["content"] as? String ?? "", default: 0] += 1
                }
                counts[ObjectIdentifier(client)] = seen
            }
            try await server.waitUntil(timeout: 15, "both stored") {
                try await Steps.contents(server, token: tokens[0], room: room).count == 3
            }
            try alice.send(json: ["type": "message", "content": "sentinel"])
            for (name, client) in [("alice", alice), ("bob", bob)] {
                var seen = counts[ObjectIdentifier(client)] ?? [:]
                seen["before"] = nil  // only bob had read it before the kill
                while seen["sentinel"] == nil, let event = try client.receive(type: "message", timeout: 15) {
                    seen[(event["message"] as? [String: Any])?["content"] as? String ?? "", default: 0] += 1
                }
                #expect(seen == ["during": 1, "after": 1, "sentinel": 1], "\(name) got \(seen)")
                #expect(!client.isClosed, "\(name)'s socket closed")
            }
            // Both sockets are still served.
            for client in [alice, bob] {
                try client.send(json: ["type": "ping"])
                #expect(try client.receive(type: "pong") != nil)
            }
            // Stored, and so listed, in the order alice sent them.
            #expect(try await Steps.contents(server, token: tokens[0], room: room) == ["before", "during", "after", "sentinel"])
            #expect(server.log.contains("child exited"))
        }
    }
}

extension EndToEnd.WorkerDeath {
    /// Issue 4: the receipts worker killed in the middle of a burst of read
    /// receipts; after its restart every receipt sent is persisted.
    @Test func receiptsWorkerKilledDuringABurst() async throws {
        let server = try await TestServer.start(environment: Steps.noRateLimits)
        defer { server.stop() }
        let tokens = try await Steps.users(server, "alice", "bob")
        let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
        let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
        let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
        var ids: [String] = []
        for i in 0..<200 { try alice.send(json: ["type": "message", "content": "m\(i)"]) }
        while ids.count < 200, let event = try bob.receive(type: "message", timeout: 10) {
            ids.append(((event["message"] as? [String: Any])?["id"] as? String) ?? "")
        }
        #expect(ids.count == 200)

        let worker = try #require(server.childPIDs(matching: "worker --role receipts").first)
        for (index, id) in ids.enumerated() {
            if index == 100 { #expect(kill(worker, SIGKILL) == 0) }
            try bob.send(json: ["type": "read_receipt", "message_id": id])
        }
        try await server.waitUntil(timeout: 20, "every receipt stored") {
            try await server.request("GET", "/api/chat/rooms/\(room)/", token: tokens[1]).object["unread_count"] as? Int == 0
        }
        #expect(!server.childPIDs(matching: "worker --role receipts").contains(worker))
        var readByBob = 0
        for page in 1...2 {
            let listed = try await server.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=100&page=\(page)", token: tokens[0])
            for message in listed.object["results"] as? [[String: Any]] ?? [] {
                if (message["read_by"] as? [[String: Any]])?.map({ $0["id"] as? String }) == [IDs.userID(forSubject: "bob")] { readByBob += 1 }
            }
        }
        #expect(readByBob == 200)
        for client in [alice, bob] {
            try client.send(json: ["type": "ping"])
            #expect(try client.receive(type: "pong") != nil)
            #expect(!client.isClosed)
        }
    }
}
