import ChatMetrics
import ChatTesting
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension EndToEnd {
    /// Issue 14: `GET /metrics` on any frontend shows every process's series
    /// (docs/metrics.md), and its counters move by what the test caused.
    @Suite struct Metrics {
        static let rooms = 3
        static let messages = 6

        @Test func countersMoveByWhatTheTestCausedAcrossTheTree() async throws {
            // Without standbys a killed worker is restarted in place: one crash, one child.
            let server = try await TestServer.start(frontends: 2, environment: Steps.noRateLimits.merging(["CHAT_STANDBYS": "false"]) { $1 })
            defer { server.stop() }
            try await MultiFrontend.waitForFrontends(server, count: 2)
            let (room, _, tokens) = try await server.room(of: Self.rooms, prefix: "metrics", name: "metrics")
            let sockets = try Self.spread(server, room: room, tokens: tokens)

            // Every process has reported, and the sockets are counted: the document is fresh.
            let before = try await Self.waitForScrape(server, "every process reporting and \(Self.rooms) sockets") { scrape in
                Set(scrape.samples("chatd_child_up").compactMap { $0.label("child") }).isSuperset(of: ["frontend.0", "frontend.1", "store.0"])
                    && Set(scrape.samples("chatd_websocket_connections").compactMap { $0.label("process") }) == ["frontend.0", "frontend.1"]
                    && scrape.sum("chatd_websocket_connections") == Double(Self.rooms)
                    && scrape.samples("chatd_messages_stored_total").contains { $0.label("process") == "store.0" }
            }
            for n in 0..<Self.messages { try sockets[n % Self.rooms].send(json: ["type": "message", "content": "metrics \(n)"]) }
            // Sent from three sockets at once: each socket sees them in the room's order, whichever that is.
            let sent = Set((0..<Self.messages).map { "metrics \($0)" })
            for socket in sockets { #expect(try Self.receiveContents(socket, count: Self.messages) == sent) }
            let deliveries = Double(Self.messages * Self.rooms)
            let after = try await Self.waitForScrape(server, "the counters to catch up") { scrape in
                scrape.sum("chatd_message_deliveries_total") >= before.sum("chatd_message_deliveries_total") + deliveries
                    && scrape.sum("chatd_messages_stored_total") >= before.sum("chatd_messages_stored_total") + Double(Self.messages)
                    && scrape.sum("chatd_messages_accepted_total") >= before.sum("chatd_messages_accepted_total") + Double(Self.messages)
                    // Counted in the same call as the deliveries, but read by another report.
                    && scrape.sum("chatd_message_delivery_latency_seconds_count")
                        >= before.sum("chatd_message_delivery_latency_seconds_count") + deliveries
            }
            #expect(after.sum("chatd_messages_accepted_total") - before.sum("chatd_messages_accepted_total") == Double(Self.messages))
            #expect(after.sum("chatd_messages_stored_total") - before.sum("chatd_messages_stored_total") == Double(Self.messages))
            #expect(after.sum("chatd_message_deliveries_total") - before.sum("chatd_message_deliveries_total") == deliveries)
            let latency = "chatd_message_delivery_latency_seconds"
            #expect(after.sum(latency + "_count") - before.sum(latency + "_count") == deliveries)
            #expect(after.sum(latency + "_bucket", matching: ["le": "+Inf"]) == after.sum(latency + "_count"))
            #expect(after.sum(latency + "_sum") > before.sum(latency + "_sum"))
            // Both frontends delivered (the sockets are spread), and their series are in one document.
            for slot in ["frontend.0", "frontend.1"] {
                #expect(after.sum("chatd_message_deliveries_total", matching: ["process": slot])
                    > before.sum("chatd_message_deliveries_total", matching: ["process": slot]))
            }
            #expect(after.sum("chatd_bus_command_duration_seconds_count", matching: ["queue": "store-0"]) >= Double(Self.messages))

            try await Self.restartsAreCountedByReason(server)
        }

        /// SIGKILL of store.0 is one crash of store.0; `ctl restart receipts.0` one planned restart.
        static func restartsAreCountedByReason(_ server: TestServer) async throws {
            let restarts = "chatd_child_restarts_total"
            let base = try await scrape(server)
            // There at 0 before anything happened: `increase()` needs a sample before the first crash.
            for reason in ["crash", "planned"] {
                #expect(base.samples(restarts, matching: ["child": "store.0", "reason": reason]).map(\.value) == ["0"])
            }
            for outcome in ["done", "refused"] { #expect(base.samples("chatd_handovers_total", matching: ["outcome": outcome]).count == 1) }
            #expect(base.samples("chatd_handover_sockets_total").count == 1)
            let store = try #require(server.childNames().first { $0.value == "store.0" }?.key)
            kill(store, SIGKILL)
            let crashed = try await waitForScrape(server, "store.0's crash counted") { scrape in
                scrape.sum(restarts, matching: ["child": "store.0", "reason": "crash"]) > base.sum(restarts, matching: ["child": "store.0", "reason": "crash"])
            }
            #expect(crashed.sum(restarts, matching: ["child": "store.0", "reason": "crash"])
                == base.sum(restarts, matching: ["child": "store.0", "reason": "crash"]) + 1)
            #expect(crashed.sum(restarts, matching: ["reason": "planned"]) == base.sum(restarts, matching: ["reason": "planned"]))

            _ = try server.ctl(["restart", "receipts.0"])
            let restarted = try await waitForScrape(server, "receipts.0's planned restart counted") { scrape in
                scrape.sum(restarts, matching: ["child": "receipts.0", "reason": "planned"]) > 0
            }
            #expect(restarted.sum(restarts, matching: ["child": "receipts.0", "reason": "planned"]) == 1)
            #expect(restarted.sum(restarts, matching: ["child": "receipts.0", "reason": "crash"]) == 0)
            #expect(restarted.samples(restarts).allSatisfy { $0.label("role") == "supervisor" && $0.label("process") == "supervisor" })
        }

        /// The contents of the next `count` messages (bounded: 10 s each).
        static func receiveContents(_ socket: WebSocketClient, count: Int) throws -> Set<String> {
            var contents: Set<String> = []
            for _ in 0..<count {
                guard let event = try socket.receive(type: "message", timeout: 10) else { break }
                if let content = (event["message"] as? [String: Any])?["content"] as? String { contents.insert(content) }
            }
            return contents
        }

        /// `GET /metrics`, read as Prometheus would.
        static func scrape(_ server: TestServer) async throws -> Exposition {
            let response = try await server.request("GET", "/metrics", token: nil)
            #expect(response.status == 200)
            #expect(response.headers["Content-Type"] ?? response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
            let exposition = Exposition(parsing: response.text)
            // One TYPE line per family: Prometheus refuses a document with two.
            let typeLines = response.text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }
            #expect(typeLines.count == Set(typeLines).count && typeLines.count == exposition.families.count)
            return exposition
        }

        /// Scrapes until `condition` holds (children report each second, the supervisor publishes every 5 s); bounded.
        static func waitForScrape(_ server: TestServer, _ what: String, _ condition: (Exposition) -> Bool) async throws -> Exposition {
            var last = Exposition()
            try await server.waitUntil(timeout: 20, what) {
                last = try await scrape(server)
                return condition(last)
            }
            return last
        }

        /// One socket per member, reopened until both frontends hold one (the kernel chooses; bounded).
        static func spread(_ server: TestServer, room: String, tokens: [String]) throws -> [WebSocketClient] {
            var sockets = try tokens.map { try server.webSocket("/ws/chat/\(room)/", token: $0) }
            for _ in 0..<60 {
                let holders = sockets.map { server.frontendPID(serving: $0) }
                if Set(holders.compactMap { $0 }).count == 2 && !holders.contains(nil) { return sockets }
                let i = (1..<sockets.count).first { holders[$0] == holders[0] } ?? 0
                sockets[i].close()
                sockets[i] = try server.webSocket("/ws/chat/\(room)/", token: tokens[i])
            }
            throw TestServerError(description: "the kernel never spread \(sockets.count) sockets over 2 frontends")
        }
    }
}
