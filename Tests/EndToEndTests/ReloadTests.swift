import ChatTesting
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension EndToEnd {
    /// Issue 13: a reload (SIGHUP, systemd's `ExecReload`) restarts the
    /// children whose configuration changed; with `frontendHandover` each
    /// frontend hands its WebSockets to its new process, so no client sees
    /// the reload, and the new limits are in force after it.
    @Suite struct Reload {
        typealias Processes = EndToEnd.Standby.Processes

        /// A config file the test rewrites; removed by the caller.
        static func configFile(_ body: String) throws -> String {
            let path = NSTemporaryDirectory() + "chatd-reload-\(UUID().uuidString).yaml"
            try body.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        static func start(_ configFile: String, handover: Bool = true) async throws -> TestServer {
            let server = try await TestServer.start(
                frontends: 2, configFile: configFile,
                environment: Steps.noRateLimits.merging(handover ? EndToEnd.Handover.handover : MultiFrontend.noHandover) { $1 }
            )
            try await MultiFrontend.waitForFrontends(server, count: 2)
            return server
        }

        /// Lines of the supervisor's log that say `text`.
        static func count(_ text: String, in server: TestServer) -> Int {
            server.log.components(separatedBy: "\n").filter { $0.contains(text) }.count
        }

        /// `maxMessageChars` (read by the frontends and the store workers)
        /// lowered in the file: SIGHUP restarts every worker and hands every
        /// frontend's sockets over. Every WebSocket opened before is still
        /// open and works, and a message over the new limit is refused.
        @Test func aReloadThatChangesALimitKeepsEverySocketAndAppliesIt() async throws {
            let file = try Self.configFile("chat:\n  maxMessageChars: 1000\n")
            defer { try? FileManager.default.removeItem(atPath: file) }
            let server = try await Self.start(file)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            // Several each, so that both frontends hold some.
            let alices = try (0..<3).map { _ in try server.webSocket("/ws/chat/\(room)/", token: tokens[0]) }
            let bobs = try (0..<3).map { _ in try server.webSocket("/ws/chat/\(room)/", token: tokens[1]) }
            let long = String(repeating: "x", count: 500)
            try alices[0].send(json: ["type": "message", "content": long])
            for bob in bobs { #expect(try bob.receiveMessage(content: long) != nil, "under the old limit") }
            let before = try Processes(server).children

            try "chat:\n  maxMessageChars: 100\n".write(toFile: file, atomically: true, encoding: .utf8)
            #expect(kill(server.process.processIdentifier, SIGHUP) == 0)
            try await server.waitUntil(timeout: 90, "the reload's restarts") { Self.count("reload: restarts done", in: server) == 1 }
            let after = try Processes(server).children
            #expect(before.keys.contains("store.0") && before.keys.contains("frontend.1"), "\(before.keys)")
            for (name, old) in before {
                #expect(after[name].map { $0.pid != old.pid && $0.ready } == true, "\(name) restarted: \(old.pid) -> \(after[name].map { "\($0.pid)" } ?? "none")")
            }
            #expect(Self.count("reload: restarts failed", in: server) == 0)

            for socket in alices + bobs { #expect(socket.closeCode == nil, "no socket closed") }
            try alices[1].send(json: ["type": "message", "content": long])
            let refused = try alices[1].receive(type: "error", timeout: 10)
            #expect((refused?["error"] as? String)?.contains("Ensure this field has no more than 100 characters.") == true, "\(refused ?? [:])")
            for (i, alice) in alices.enumerated() {
                try alice.send(json: ["type": "message", "content": "short \(i)"])
                for bob in bobs { #expect(try bob.receiveMessage(content: "short \(i)") != nil, "alice's socket \(i) to every bob") }
            }
            try bobs[2].send(json: ["type": "message", "content": "back"])
            for alice in alices { #expect(try alice.receiveMessage(content: "back") != nil) }
            let handovers = try server.status()["handovers"] as? [[String: Any]] ?? []
            #expect(handovers.count == 2 && handovers.allSatisfy { $0["refused"] == nil }, "\(handovers)")
            #expect(handovers.reduce(0) { $0 + ($1["connections_moved"] as? Int ?? 0) } == 6, "every socket moved: \(handovers)")
        }

        /// SIGHUP with the file unchanged restarts no child, nor does one
        /// that changes only what the supervisor applies itself; then a
        /// frontend-only limit (`maxFrameBytes`) restarts the frontends and
        /// no worker, and a frame over it closes its socket with 1009.
        @Test func aReloadRestartsOnlyTheChildrenWhoseSettingsChanged() async throws {
            let file = try Self.configFile("chat:\n  maxFrameBytes: 65536\n")
            defer { try? FileManager.default.removeItem(atPath: file) }
            let server = try await Self.start(file)
            defer { server.stop() }
            try await Standby.waitForStandbys(server, ["store", "receipts", "search", "files"].map { "standby.\($0)" })
            let before = try Processes(server)
            #expect(kill(server.process.processIdentifier, SIGHUP) == 0)
            try await server.waitUntil(timeout: 20, "the first reload") { Self.count("reloaded", in: server) == 1 }
            try "chat:\n  maxFrameBytes: 65536\n  hangTimeoutSeconds: 12\n".write(toFile: file, atomically: true, encoding: .utf8)
            #expect(kill(server.process.processIdentifier, SIGHUP) == 0)
            try await server.waitUntil(timeout: 20, "the second reload") { Self.count("reloaded", in: server) == 2 }
            // A reload's restarts begin as it applies (the same step that logs "reloaded").
            #expect(Self.count("reload restarts", in: server) == 0)
            let unchanged = try Processes(server)
            #expect(unchanged.children.mapValues(\.pid) == before.children.mapValues(\.pid))
            #expect(unchanged.standbys.mapValues(\.pid) == before.standbys.mapValues(\.pid))

            let tokens = try await Steps.users(server, "alice")
            let room = try await Steps.room(server, token: tokens[0], members: [])
            let socket = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            try "chat:\n  maxFrameBytes: 4096\n  hangTimeoutSeconds: 12\n".write(toFile: file, atomically: true, encoding: .utf8)
            #expect(kill(server.process.processIdentifier, SIGHUP) == 0)
            try await server.waitUntil(timeout: 60, "the frontends' restarts") { Self.count("reload: restarts done", in: server) == 1 }
            let after = try Processes(server)
            for (name, old) in before.children {
                let restarted = after.children[name].map { $0.pid != old.pid } ?? true
                #expect(restarted == name.hasPrefix("frontend"), "\(name): only the frontends restart")
            }
            #expect(after.standbys.mapValues(\.pid) == before.standbys.mapValues(\.pid))
            #expect(socket.closeCode == nil)
            try socket.send(json: ["type": "message", "content": String(repeating: "y", count: 5_000)])
            #expect(socket.waitForClose(timeout: 10) && socket.closeCode == 1009, "a frame over the new limit")
        }

        /// With `frontendHandover` off, the reload's frontend restarts are
        /// the 1012 kind, as `ctl restart frontend` is: each socket closes
        /// with 1012 (reconnect now), and the new limit is in force for the
        /// connection made after.
        @Test func withoutHandoverAReloadClosesWith1012() async throws {
            let file = try Self.configFile("chat:\n  maxFrameBytes: 65536\n")
            defer { try? FileManager.default.removeItem(atPath: file) }
            let server = try await Self.start(file, handover: false)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice")
            let room = try await Steps.room(server, token: tokens[0], members: [])
            let sockets = try (0..<3).map { _ in try server.webSocket("/ws/chat/\(room)/", token: tokens[0]) }
            try "chat:\n  maxFrameBytes: 4096\n".write(toFile: file, atomically: true, encoding: .utf8)
            #expect(kill(server.process.processIdentifier, SIGHUP) == 0)
            for socket in sockets {
                #expect(socket.waitForClose(timeout: 60) && socket.closeCode == 1012, "\(socket.closeCode.map(String.init) ?? "no close")")
            }
            try await server.waitUntil(timeout: 60, "the frontends' restarts") { Self.count("reload: restarts done", in: server) == 1 }
            let after = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            try after.send(json: ["type": "message", "content": String(repeating: "y", count: 5_000)])
            #expect(after.waitForClose(timeout: 10) && after.closeCode == 1009, "a frame over the new limit")
        }

        /// What was true as a datagram came (`NotifyRecorder`): the
        /// supervisor's log said "reload: restarts done", and `ctl status`,
        /// asked as a READY=1 came.
        struct AtDatagram {
            var restartsDone: Bool
            var status: [String: Any]?
        }

        /// Looks those up in `dataDir`'s server; `onDatagram` runs first.
        static func look(
            dataDir: String, onDatagram: @escaping @Sendable ([String: String]) -> Void = { _ in }
        ) -> @Sendable ([String: String]) -> AtDatagram {
            { fields in
                onDatagram(fields)
                let log = (try? String(contentsOfFile: dataDir + "/chatd.log", encoding: .utf8)) ?? ""
                let status = fields["READY"] == "1"
                    ? (try? TestServer.control(dataDir + "/run/control.sock", "status")).flatMap {
                        try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
                    } : nil
                return AtDatagram(restartsDone: log.contains("reload: restarts done"), status: status)
            }
        }

        /// READY=1 after a SIGHUP comes once the reload's restarts are done:
        /// as it comes, every child runs a new process and is ready. While
        /// the restarts run, `ctl scale`, `ctl restart` and `ctl upgrade` are
        /// refused; after, `ctl scale` works again.
        @Test func readyFollowsTheRestartsAndCtlWaitsForThem() async throws {
            let notify = try NotifySocket()
            let dir = try TestServer.temporaryDirectory()
            let notified = NotifyRecorder<AtDatagram>()
            notified.read(notify, look: Self.look(dataDir: dir))
            defer { notified.done = true }
            let file = try Self.configFile("chat:\n  maxMessageChars: 1000\n")
            defer { try? FileManager.default.removeItem(atPath: file) }
            let server = try await TestServer.start(
                frontends: 2, configFile: file,
                environment: Steps.noRateLimits.merging(EndToEnd.Handover.handover) { $1 }.merging(["NOTIFY_SOCKET": notify.path]) { $1 }, dataDir: dir
            )
            defer { server.stop() }
            try await server.waitUntil(timeout: 30, "the start's READY=1") { notified.readies.count == 1 }
            let before = try Processes(server).children

            try "chat:\n  maxMessageChars: 100\n".write(toFile: file, atomically: true, encoding: .utf8)
            #expect(kill(server.process.processIdentifier, SIGHUP) == 0)
            try await server.waitUntil(timeout: 20, "the reload's restarts begin") { Self.count("reload restarts", in: server) == 1 }
            let control = dir + "/run/control.sock"
            for command in ["scale receipts 2", "restart store", "upgrade"] {
                let answer = try TestServer.control(control, command)
                #expect(answer.contains("a reload is under way"), "\(command): \(answer)")
            }
            try await server.waitUntil(timeout: 90, "READY=1 after the reload") { notified.readies.count == 2 }
            let entries = notified.entries
            let ready = try #require(notified.readies.last)
            #expect(ready.seen.restartsDone, "READY=1 before the restarts were done")
            let reloading = entries.firstIndex { $0.fields["RELOADING"] == "1" }
            let readyIndex = entries.lastIndex { $0.fields["READY"] == "1" }
            #expect(reloading != nil && reloading! < readyIndex!)
            var atReady: [String: (pid: Int, ready: Bool)] = [:]
            for row in ready.seen.status?["children"] as? [[String: Any]] ?? [] {
                if let name = row["child"] as? String, let pid = row["pid"] as? Int { atReady[name] = (pid, row["ready"] as? Bool == true) }
            }
            #expect(before.keys.contains("store.0") && before.keys.contains("frontend.1"), "\(before.keys)")
            for (name, old) in before {
                #expect(atReady[name].map { Int32($0.pid) != old.pid && $0.ready } == true, "\(name) at READY=1: \(atReady[name].map { "\($0)" } ?? "none")")
            }
            let scaled = try TestServer.control(control, "scale receipts 2")
            #expect(scaled.contains("\"workers\":2"), "\(scaled)")
        }

        /// A SIGHUP before the start's READY=1 is held: systemd sees no
        /// RELOADING=1 and no READY=1 until every child is ready (it would
        /// end the start there), then the reload runs and READY=1 follows it.
        @Test func aSignalDuringTheStartWaitsForItsReady() async throws {
            let notify = try NotifySocket()
            let dir = try TestServer.temporaryDirectory()
            let file = try Self.configFile("chat:\n  maxFrameBytes: 65536\n")
            defer { try? FileManager.default.removeItem(atPath: file) }
            let notified = NotifyRecorder<AtDatagram>()
            let signalled = Tally()
            // The first STATUS= comes from the started supervisor (its signal
            // handlers are set) before its children are ready.
            notified.read(notify, look: Self.look(dataDir: dir) { fields in
                guard fields["STATUS"] != nil, fields["READY"] == nil, signalled.value == 0, let pid = Self.supervisorPID(configFile: file) else { return }
                signalled.add()
                kill(pid, SIGHUP)
            })
            defer { notified.done = true }
            let server = try await TestServer.start(
                frontends: 2, configFile: file, environment: MultiFrontend.noHandover.merging(["NOTIFY_SOCKET": notify.path]) { $1 }, dataDir: dir
            )
            defer { server.stop() }
            try await server.waitUntil(timeout: 30, "READY=1 after the held reload") { notified.readies.count == 2 }
            #expect(signalled.value == 1)
            let entries = notified.entries
            let firstReady = try #require(entries.firstIndex { $0.fields["READY"] == "1" })
            let reloading = try #require(entries.firstIndex { $0.fields["RELOADING"] == "1" })
            #expect(reloading > firstReady, "RELOADING=1 before the start's READY=1")
            let status = entries[firstReady].fields["STATUS"] ?? ""
            let counts = status.split(separator: " ").first?.split(separator: "/").map(String.init) ?? []
            #expect(counts.count == 2 && counts[0] == counts[1], "the start's READY=1 with every child ready: \(status)")
            #expect(Self.count("reload held", in: server) == 1)
        }

        /// The `chatd serve` process started with `configFile` (a unique path).
        static func supervisorPID(configFile: String) -> Int32? {
            let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int32($0) } ?? []
            return pids.first { pid in
                guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
                let words = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                return words.contains("serve") && words.contains(configFile)
            }
        }
    }
}
