import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 15: the bus between hosts authenticated and encrypted with
    /// CURVE; keys from `chatd keygen`, brokers letting in only the keys of
    /// the peers file. Two "hosts" on 127.0.0.1, as in
    /// `aWorkersOnlyHostServesOverATCPBus`.
    @Suite struct AuthenticatedBus {
        /// Runs `chatd <arguments>` to its end: exit status and output.
        static func chatd(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try TestServer.binary())
            process.arguments = arguments
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let output = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: output, as: UTF8.self))
        }

        /// `chatd keygen` for a host: the line it prints for the peers file.
        static func keygen(_ path: String, host: String, environment: [String: String] = [:]) throws -> String {
            let (status, output) = try chatd(["keygen", "--out", path, "--host", host], environment: environment)
            #expect(status == 0, "\(output)")
            let line = output.split(separator: "\n").last.map(String.init) ?? ""
            #expect(line.split(separator: " ").first?.count == 40 && line.contains(" \(host)"), "\(output)")
            return line
        }

        /// A `run: workers` host's supervisor with `key` and `peers`, logging to `<dir>/<name>.log`.
        static func workersHost(_ name: String, dir: String, bus: String, key: String, peers: String) throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try TestServer.binary())
            process.arguments = ["serve", "--die-with-parent"]
            process.environment = ProcessInfo.processInfo.environment.merging([
                "CHAT_RUN": "workers", "CHAT_BUS": bus, "CHAT_DATA_DIR": dir, "CHAT_RUNTIME_DIR": dir + "/run-\(name)",
                "CHAT_STORE_WORKERS": "1", "CHAT_LOG_LEVEL": "info", "CHAT_BUS_KEY": key, "CHAT_BUS_PEER_KEYS": peers,
                // (On PostgreSQL the hosts of one directory share its database; the throwaway server goes with the run.)
            ].merging(try PostgresServer.environment(forDataDir: dir)) { $1 }) { $1 }
            _ = FileManager.default.createFile(atPath: dir + "/\(name).log", contents: nil)
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/\(name).log"))
            process.standardOutput = log
            process.standardError = log
            try process.run()
            return process
        }

        @Test func listedHostsTalkAndAnUnlistedOneCannotSendACommand() async throws {
            let dir = try TestServer.temporaryDirectory()
            let bus = "tcp://127.0.0.1:\(try TestServer.freePorts(2 + 2 * 4))"
            // The frontend host's line names its broker (keygen reads run and bus).
            let frontLine = try Self.keygen(dir + "/front.key", host: "front", environment: ["CHAT_RUN": "frontend", "CHAT_BUS": bus])
            #expect(frontLine.hasSuffix(" front \(bus)"), "\(frontLine)")
            let workersLine = try Self.keygen(dir + "/workers.key", host: "workers")
            let strangerLine = try Self.keygen(dir + "/stranger.key", host: "stranger")
            let strangerKey = String(strangerLine.prefix(40))
            let mode = (try FileManager.default.attributesOfItem(atPath: dir + "/front.key")[.posixPermissions] as? Int) ?? 0
            #expect(mode == 0o600, "key file mode \(String(mode, radix: 8))")
            let again = try Self.chatd(["keygen", "--out", dir + "/front.key"])
            #expect(again.status != 0 && again.output.contains("--force"), "\(again.output)")
            // Every host's peers file lists the deployment: the stranger's is
            // not in it. The stranger knows the broker's key, as anyone may.
            try "# test deployment\n\(frontLine)\n\(workersLine)\n".write(toFile: dir + "/peers", atomically: true, encoding: .utf8)
            try "\(frontLine)\n\(strangerLine)\n".write(toFile: dir + "/stranger-peers", atomically: true, encoding: .utf8)

            let server = try await TestServer.start(
                environment: [
                    "CHAT_RUN": "frontend", "CHAT_BUS": bus, "CHAT_BUS_KEY": dir + "/front.key", "CHAT_BUS_PEER_KEYS": dir + "/peers",
                    // A command nobody takes fails in 2 s, not 10.
                    "CHAT_REQUEST_TIMEOUT_MILLISECONDS": "2000",
                ],
                dataDir: dir, healthy: false)
            defer { server.stop() }
            // Steps.users would provision them through a worker: there is none yet.
            let alice = try await server.token(sub: "alice", name: "Alice")

            // The unlisted host connects, and the broker refuses it and says so.
            let stranger = try Self.workersHost("stranger", dir: dir, bus: bus, key: dir + "/stranger.key", peers: dir + "/stranger-peers")
            defer { if stranger.isRunning { kill(stranger.processIdentifier, SIGKILL) } }
            try await server.waitUntil(timeout: 20, "the broker logged the refusal") {
                server.log.split(separator: "\n").contains { $0.contains("bus connection refused") && $0.contains(strangerKey) && $0.contains("127.0.0.1") }
            }
            // And the refused host says so too, naming the broker and its own key (then its
            // worker exits, and the supervisor's backoff tries again).
            let strangerLog = { String(decoding: FileManager.default.contents(atPath: dir + "/stranger.log") ?? Data(), as: UTF8.self) }
            try await server.waitUntil(timeout: 20, "the refused host logged the refusal") {
                strangerLog().split(separator: "\n").contains { $0.contains("bus handshake with the broker failed") && $0.contains(strangerKey) && $0.contains("127.0.0.1") }
            }
            #expect(try await server.request("GET", "/healthz").status == 503)
            let refused = try await server.request("POST", "/api/chat/rooms/", token: alice, json: ["name": "never", "participant_ids": [String]()])
            #expect(refused.status == 503, "a command reached a worker of the unlisted host")
            let strangerStatus = try Self.chatd(["ctl", "status", "--json"], environment: ["CHAT_DATA_DIR": dir, "CHAT_RUNTIME_DIR": dir + "/run-stranger"])
            let children = (try? JSONSerialization.jsonObject(with: Data(strangerStatus.output.utf8)) as? [String: Any])?["children"] as? [[String: Any]] ?? []
            #expect(!children.isEmpty && children.allSatisfy { $0["ready"] as? Bool != true }, "\(strangerStatus.output)")
            kill(stranger.processIdentifier, SIGTERM)
            stranger.waitUntilExit()

            // The listed host: its workers serve, and messages flow.
            let workers = try Self.workersHost("workers", dir: dir, bus: bus, key: dir + "/workers.key", peers: dir + "/peers")
            defer { if workers.isRunning { kill(workers.processIdentifier, SIGKILL) } }
            try await server.waitUntil(timeout: 30, "healthz 200 with the listed workers host") {
                (try? await server.request("GET", "/healthz").status) == 200
            }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let bobSocket = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            let aliceSocket = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            try aliceSocket.send(json: ["type": "message", "content": "over curve"])
            #expect(try bobSocket.receiveMessage(content: "over curve") != nil)
            #expect(try await Steps.contents(server, token: tokens[0], room: room) == ["over curve"])
            kill(workers.processIdentifier, SIGTERM)
            workers.waitUntilExit()
            #expect(workers.terminationStatus == 0)
        }

        /// Bus heartbeats: a broker that goes silent (its process stopped,
        /// as a frozen host would be; the kernel still acknowledges on
        /// loopback, so TCP alone would notice nothing) is noticed by the
        /// workers host within the 5 s timeout, which stops taking commands
        /// until the broker answers again; then messages flow once more.
        @Test func aSilentBrokerIsNoticedByTheWorkersHost() async throws {
            let dir = try TestServer.temporaryDirectory()
            let bus = "tcp://127.0.0.1:\(try TestServer.freePorts(2 + 2 * 4))"
            let frontLine = try Self.keygen(dir + "/front.key", host: "front", environment: ["CHAT_RUN": "frontend", "CHAT_BUS": bus])
            let workersLine = try Self.keygen(dir + "/workers.key", host: "workers")
            try "\(frontLine)\n\(workersLine)\n".write(toFile: dir + "/peers", atomically: true, encoding: .utf8)
            let workers = try Self.workersHost("workers", dir: dir, bus: bus, key: dir + "/workers.key", peers: dir + "/peers")
            defer { if workers.isRunning { kill(workers.processIdentifier, SIGKILL) } }
            let server = try await TestServer.start(
                environment: ["CHAT_RUN": "frontend", "CHAT_BUS": bus, "CHAT_BUS_KEY": dir + "/front.key", "CHAT_BUS_PEER_KEYS": dir + "/peers"],
                dataDir: dir)
            defer { server.stop() }
            let workersLog = { String(decoding: FileManager.default.contents(atPath: dir + "/workers.log") ?? Data(), as: UTF8.self) }
            #expect(!workersLog().contains("lost the broker"))
            // The supervisor runs the broker: stopped, it answers no ping.
            let broker = server.process.processIdentifier
            kill(broker, SIGSTOP)
            var resumed = false
            defer { if !resumed { kill(broker, SIGCONT) } }
            try await server.waitUntil(timeout: 20, "the workers host noticed the silent broker") { workersLog().contains("lost the broker") }
            kill(broker, SIGCONT)
            resumed = true
            // The link logs it serves each time its broker echoes: here, once more after the loss.
            try await server.waitUntil(timeout: 20, "the broker answered the workers again") {
                workersLog().components(separatedBy: "lost the broker").last?.contains("broker echoed; serving it") == true
            }
            try await server.waitUntil(timeout: 20, "healthz 200 again") { (try? await server.request("GET", "/healthz").status) == 200 }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            try alice.send(json: ["type": "message", "content": "after the silence"])
            #expect(try bob.receiveMessage(content: "after the silence") != nil)
            kill(workers.processIdentifier, SIGTERM)
            workers.waitUntilExit()
        }
    }
}
