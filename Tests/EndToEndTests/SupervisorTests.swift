import ChatCore
import ChatTesting
import ChatWire
import Foundation
import GRDB
import Testing

/// Whether an HTTP server answers on the port (within a second). Not just
/// a connect: the supervisor holds the listening socket, which takes
/// connections into its backlog before any frontend serves them.
func httpAnswers(_ port: Int) -> Bool {
    guard let connection = try? RawConnection(port: port) else { return false }
    connection.send(Array("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8))
    return connection.read(timeout: 1, until: RawConnection.hasHead).status != nil
}

/// Dead or a zombie its parent has not reaped yet.
func processGone(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return true }
    return stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
}

extension EndToEnd {
    /// Issue 6 (first part): sd_notify, liveness, orderly stop.
    @Suite struct Supervision {
        @Test func speaksSDNotifyToSystemd() async throws {
            let notify = try NotifySocket()
            let dir = try TestServer.temporaryDirectory()
            // Read the datagrams as they come, from before the server starts,
            // so "was the port answering when READY=1 came" is asked at once
            // (the port it got from port 0 asked of its control socket).
            // Each datagram with whether the port answered, for a READY=1.
            let log = NotifyRecorder<Bool?>()
            log.read(notify) { fields in
                let port = fields["READY"] == "1" ? (try? TestServer.control(dir + "/run/control.sock", "status")).flatMap(listenPort) : nil
                return port.map(httpAnswers)
            }
            defer { log.done = true }
            let configFile = dir + "/chatd.yaml"
            try "chat:\n  receiptsWorkers: 1\n".write(toFile: configFile, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: configFile) }
            let server = try await TestServer.start(
                configFile: configFile, environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"], dataDir: dir
            )
            try await server.waitUntil(timeout: 5, "four watchdog pings after READY") { log.watchdogsAfterReady >= 4 }
            let entries = log.entries
            let ready = try #require(entries.first { $0.fields["READY"] == "1" })
            #expect(ready.seen == true, "READY=1 before the port answered")
            #expect(ready.fields["STATUS"]?.contains("children ready") == true)
            // At half of WATCHDOG_USEC (200 ms), give or take scheduling.
            let pings = entries.filter { $0.fields["WATCHDOG"] == "1" }.map(\.time).suffix(4)
            let gaps = zip(pings.dropFirst(), pings).map { $0.timeIntervalSince($1) }
            #expect(gaps.allSatisfy { $0 > 0.1 && $0 < 0.4 }, "watchdog gaps \(gaps)")
            // SIGHUP: RELOADING=1, the new worker count applied, READY=1 again.
            try "chat:\n  receiptsWorkers: 2\n  logLevel: debug\n".write(toFile: configFile, atomically: true, encoding: .utf8)
            kill(server.process.processIdentifier, SIGHUP)
            try await server.waitUntil(timeout: 10, "the reload") {
                server.childPIDs(matching: "worker --role receipts").count == 2
                    && log.entries.contains { $0.fields["RELOADING"] == "1" }
                    && log.entries.filter { $0.fields["READY"] == "1" }.count == 2
            }
            #expect(server.log.contains("reloaded"))
            // STOPPING=1 on SIGTERM, then exit 0.
            #expect(server.stop() == 0)
            #expect(log.entries.contains { $0.fields["STOPPING"] == "1" })
        }

        @Test func aHungWorkerIsKilledAndReplaced() async throws {
            let server = try await TestServer.start(environment: ["CHAT_HANG_TIMEOUT_SECONDS": "2"])
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            let worker = try #require(server.childPIDs(matching: "worker --role store").first)
            // Stopped, not dead: only the missing heartbeats tell.
            #expect(kill(worker, SIGSTOP) == 0)
            try await server.waitUntil(timeout: 10, "the hung worker's replacement") {
                let pids = server.childPIDs(matching: "worker --role store")
                return !pids.isEmpty && !pids.contains(worker)
            }
            #expect(server.log.contains("stopped sending heartbeats"))
            let posted = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "after the hang"])
            #expect(posted.status == 201)
            #expect(try bob.receiveMessage(content: "after the hang") != nil)
        }

        @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze")))
        func theUnitsPassSystemdAnalyzeVerify() throws {
            let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../systemd").standardized
            let files = try FileManager.default.contentsOfDirectory(atPath: source.path).filter { !$0.hasPrefix(".") }
            // Units; the drop-ins (*.conf) are not units, verify refuses them by name.
            let names = files.filter { $0.hasSuffix(".service") || $0.hasSuffix(".socket") }.sorted()
            let dropIn = try String(contentsOf: source.appendingPathComponent("frontend-host.conf"), encoding: .utf8)
            #expect(dropIn.split(separator: "\n").first { !$0.hasPrefix("#") && !$0.isEmpty } == "[Service]")
            #expect(dropIn.contains("\nEnvironment=CHAT_RUN=frontend\n"))
            #expect(Set(names).isSuperset(of: ["chatd.service", "chatd.socket", "chatd-workers.service"]))
            let directory = NSTemporaryDirectory() + "chatd-unit-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            var units: [String: String] = [:]
            for name in names {
                // The units name the installed binary; verify checks it exists, so point them at ours.
                let unit = try String(contentsOf: source.appendingPathComponent(name), encoding: .utf8)
                    .replacingOccurrences(of: "/usr/local/bin/chatd", with: try TestServer.binary())
                try unit.write(toFile: directory + "/" + name, atomically: true, encoding: .utf8)
                units[name] = unit
            }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/systemd-analyze")
            process.arguments = ["verify"] + names.map { directory + "/" + $0 }
            let pipe = Pipe()
            process.standardError = pipe
            process.standardOutput = pipe
            try process.run()
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0 && output.isEmpty, "\(output)")
            let service = units["chatd.service"] ?? ""
            #expect(service.contains("Type=notify") && service.contains("WatchdogSec="))
            #expect(units["chatd.socket"]?.contains("FileDescriptorName=http") == true)
            // Private by default (api.md "Files on disk"), in both service units.
            for name in ["chatd.service", "chatd-workers.service"] {
                for line in ["StateDirectoryMode=0700", "RuntimeDirectoryMode=0700", "UMask=0077"] {
                    #expect(units[name]?.split(separator: "\n").contains(Substring(line)) == true, "\(name) lacks \(line)")
                }
            }
        }

        @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-socket-activate")))
        func servesTheSocketSystemdPasses() async throws {
            // The first request is what makes systemd-socket-activate exec chatd.
            let server = try await TestServer.start(socketActivated: true)
            defer { server.stop() }
            #expect(server.log.contains("source=inherited(fd: 3)"), "the frontend bound a port of its own")
            // The supervisor keeps the socket; of its children only the frontend has it.
            let socket = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(server.process.processIdentifier)/fd/3")
            #expect(socket.hasPrefix("socket:"))
            func holdsSocket(_ pid: Int32) -> Bool {
                let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
                return fds.contains { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) == socket }
            }
            let frontend = try #require(server.childPIDs(matching: "chatd frontend").first)
            #expect(holdsSocket(frontend))
            let workers = server.childPIDs(matching: "chatd worker")
            #expect(workers.count == 5 && !workers.contains(where: holdsSocket))

            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "activated"]).status == 201)
            #expect(try bob.receiveMessage(content: "activated") != nil)

            // While no frontend runs, connections wait in the socket's backlog
            // (the supervisor holds it open) and the replacement serves them.
            #expect(kill(frontend, SIGKILL) == 0)
            try await server.waitUntil(timeout: 5, "the frontend's death") { processGone(frontend) }
            let during = try await server.request("GET", "/healthz")
            #expect(during.status == 200 || during.status == 503, "\(during.status) \(during.text)")
            try await server.waitUntil(timeout: 10, "a new frontend") { !server.childPIDs(matching: "chatd frontend").isEmpty }
            #expect(holdsSocket(try #require(server.childPIDs(matching: "chatd frontend").first)))
            #expect(server.stop() == 0)
        }

        /// `chatd ctl` against the running server, its answer parsed.
        static func ctl(_ server: TestServer, _ words: String...) throws -> [String: Any] {
            let output = try server.ctl(words)
            return (try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]) ?? ["unparsed": output]
        }

        @Test func controlSocketStatusRollingRestartAndScale() async throws {
            let server = try await TestServer.start(storeWorkers: 2)
            defer { server.stop() }
            let control = server.dataDir + "/run/control.sock"
            let mode = (try FileManager.default.attributesOfItem(atPath: control)[.posixPermissions] as? Int) ?? 0
            #expect(mode & 0o077 == 0, "control socket mode \(String(mode, radix: 8))")

            let status = try Self.ctl(server, "status", "--json")
            let children = status["children"] as? [[String: Any]] ?? []
            #expect(Set(children.compactMap { $0["child"] as? String }) == ["frontend.0", "store.0", "store.1", "receipts.0", "search.0", "files.0",
                                                                                   "webhooks.0"])
            #expect(children.allSatisfy { $0["ready"] as? Bool == true && $0["pid"] is Int && $0["restarts"] as? Int == 0 })
            // The socket the supervisor bound (port 0) reaches the frontend, and no worker.
            let listening = try #require(listeningSocket(port: server.port), "no LISTEN socket on \(server.port) in /proc/net/tcp")
            #expect(holds(server.process.processIdentifier, listening))
            #expect(server.childPIDs(matching: "chatd frontend").allSatisfy { holds($0, listening) })
            #expect(server.childPIDs(matching: "chatd worker").count == 6)
            #expect(!server.childPIDs(matching: "chatd worker").contains { holds($0, listening) })

            // A rolling restart of the store shards under traffic drops no connection and no message.
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            let before = server.childPIDs(matching: "worker --role store")
            let sender = Thread {
                for i in 0..<100 {
                    try? alice.send(json: ["type": "message", "content": "r\(i)"])
                    usleep(10_000)
                }
            }
            sender.start()
            let restarted = try Self.ctl(server, "restart", "store")
            #expect(restarted["restarted"] as? [String] == ["store.0", "store.1"])
            #expect(Set(server.childPIDs(matching: "worker --role store")).isDisjoint(with: before))
            var seen = Set<String>()
            while seen.count < 100, let event = try bob.receive(type: "message", timeout: 15) {
                seen.insert(((event["message"] as? [String: Any])?["content"] as? String) ?? "")
            }
            #expect(seen.count == 100, "missing: \(Set((0..<100).map { "r\($0)" }).subtracting(seen).sorted())")
            #expect(!alice.isClosed && !bob.isClosed)
            #expect(try await Steps.contents(server, token: tokens[0], room: room) == (0..<100).map { "r\($0)" })
            // Planned: counted apart from crashes, and logged at info, not as a warning.
            let restartedRows = (try Self.ctl(server, "status", "--json")["children"] as? [[String: Any]] ?? []).filter { $0["role"] as? String == "store" }
            #expect(restartedRows.map { $0["planned_restarts"] as? Int } == [1, 1])
            #expect(restartedRows.allSatisfy { $0["restarts"] as? Int == 0 })
            #expect(!server.log.split(separator: "\n").contains { $0.contains("warning") && $0.contains("child exited") }, "\(server.log)")

            // Queue depth: commands waiting for the (stopped) store workers. The
            // frontend's missed-call sweep (CallSweep) may have its one read
            // waiting there too: it asks again only once answered.
            let stores = server.childPIDs(matching: "worker --role store")
            for pid in stores { kill(pid, SIGSTOP) }
            for i in 0..<5 { try alice.send(json: ["type": "message", "content": "q\(i)"]) }
            func storeDepths() throws -> [Int] {
                let status = try Self.ctl(server, "status", "--json")
                let rows = (status["children"] as? [[String: Any]] ?? []).filter { $0["role"] as? String == "store" }
                return rows.compactMap { $0["queue_depth"] as? Int }
            }
            try await server.waitUntil(timeout: 5, "a queue depth of 5") { (5...6).contains(try storeDepths().reduce(0, +)) }
            for pid in stores { kill(pid, SIGCONT) }
            try await server.waitUntil(timeout: 5, "empty queues") { try storeDepths() == [0, 0] }
            #expect(try bob.receiveMessage(content: "q4") != nil)

            // Scaling: receipts up, store refused.
            #expect(try Self.ctl(server, "scale", "receipts", "2")["workers"] as? Int == 2)
            try await server.waitUntil(timeout: 10, "a second receipts worker") { server.childPIDs(matching: "worker --role receipts").count == 2 }
            // Spawned after the frontend, which inherited the socket: still not handed on.
            #expect(!server.childPIDs(matching: "worker --role receipts").contains { holds($0, listening) })
            #expect(try Self.ctl(server, "scale", "search", "3")["error"] != nil)
            #expect(try Self.ctl(server, "explode")["error"] != nil)
        }

        @Test func storeShardsChangeWhileServingAndEachRoomKeepsItsOrder() async throws {
            let server = try await TestServer.start(storeWorkers: 1, environment: Steps.noRateLimits)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            // Rooms that move: off shard 0 when there are 3 shards, and onto shard 1 of 2.
            var rooms: [String] = []
            while rooms.count < 12, !(rooms.contains { Shard.of($0, count: 3) != 0 } && rooms.contains { Shard.of($0, count: 2) == 1 }) || rooms.count < 4 {
                rooms.append(try await Steps.room(server, token: tokens[0], members: ["bob"]))
            }
            let onShardOne = try #require(rooms.first { Shard.of($0, count: 2) == 1 })
            let count = 120
            let senders = try rooms.map { try server.webSocket("/ws/chat/\($0)/", token: tokens[0]) }
            let listeners = try rooms.map { try server.webSocket("/ws/chat/\($0)/", token: tokens[1]) }
            let sent = Tally()
            let threads = senders.map { socket in
                Thread {
                    for i in 0..<count {
                        try? socket.send(json: ["type": "message", "content": "m\(i)"])
                        sent.add()
                        usleep(4_000)
                    }
                }
            }
            threads.forEach { $0.start() }
            // While every room's messages flow: up to 3 shards, then down to 2.
            // Shard 0 is stopped for the first change, with commands piling up
            // in its queue: a room that moved must not have newer messages
            // stored by its new shard before those.
            let total = rooms.count * count
            try await server.waitUntil(timeout: 10, "messages flowing") { sent.value >= total / 8 }
            let shardZero = try #require(server.childPIDs(matching: "--role store --shard 0").first)
            kill(shardZero, SIGSTOP)
            let atStop = sent.value
            try await server.waitUntil(timeout: 10, "commands piling up for shard 0") { sent.value >= min(total, atStop + total / 8) }
            let scaleUp = Task { try Self.ctl(server, "scale", "store", "3")["workers"] as? Int }
            try await server.waitUntil(timeout: 10, "three store workers") { server.childPIDs(matching: "worker --role store").count == 3 }
            // The frontend was told of 3 shards and holds back what it gets
            // until shard 0, stopped, answers what it still has pending.
            try await server.waitUntil(timeout: 10, "the frontend changing its shard count") {
                let status = try Self.ctl(server, "status", "--json")
                let frontend = (status["children"] as? [[String: Any]] ?? []).first { $0["child"] as? String == "frontend.0" }
                return frontend?["store_shards"] is NSNull
            }
            kill(shardZero, SIGCONT)
            #expect(try await scaleUp.value == 3)
            #expect(try Self.ctl(server, "scale", "store", "2")["workers"] as? Int == 2)
            try await server.waitUntil(timeout: 10, "two store workers") { server.childPIDs(matching: "worker --role store").count == 2 }

            // Every listener got every message of its room once, in the order sent; nothing closed.
            for (room, listener) in zip(rooms, listeners) {
                var seen: [String] = []
                while seen.count < count, let event = try listener.receive(type: "message", timeout: 15) {
                    seen.append(((event["message"] as? [String: Any])?["content"] as? String) ?? "")
                }
                let expected = (0..<count).map { "m\($0)" }
                let stored = try await Steps.contents(server, token: tokens[0], room: room)
                let (delivered, persisted) = (seen == expected, stored == expected)
                #expect(delivered, "room \(room) delivered out of order or incomplete from \(seen.indices.first { $0 >= count || seen[$0] != expected[$0] } ?? seen.count)")
                #expect(persisted, "room \(room) stored out of order or incomplete from \(stored.indices.first { $0 >= count || stored[$0] != expected[$0] } ?? stored.count)")
            }
            #expect(!(senders + listeners).contains { $0.isClosed })
            let status = try Self.ctl(server, "status", "--json")
            let names = (status["children"] as? [[String: Any]] ?? []).compactMap { $0["child"] as? String }.filter { $0.hasPrefix("store.") }
            #expect(names.sorted() == ["store.0", "store.1"])

            // The new shard really owns its rooms: with shard 0 stopped, a room of shard 1 still takes messages.
            kill(shardZero, SIGSTOP)
            defer { kill(shardZero, SIGCONT) }
            let posted = try await server.request("POST", "/api/chat/rooms/\(onShardOne)/messages/", token: tokens[0], json: ["content": "shard one"])
            #expect(posted.status == 201)
        }

        /// Two supervisors, as on two hosts: one runs the broker and the
        /// frontend, the other only workers, over a TCP bus (on loopback here).
        @Test func aWorkersOnlyHostServesOverATCPBus() async throws {
            let dir = try TestServer.temporaryDirectory()
            // Events in and out, and an in and an out port for each of 4 queues.
            let bus = "tcp://127.0.0.1:\(try TestServer.freePorts(2 + 2 * 4))"
            func startWorkersHost() throws -> Process {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: try TestServer.binary())
                process.arguments = ["serve", "--die-with-parent"]
                process.environment = ProcessInfo.processInfo.environment.merging([
                    "CHAT_RUN": "workers", "CHAT_BUS": bus, "CHAT_DATA_DIR": dir, "CHAT_RUNTIME_DIR": dir + "/run-workers",
                    "CHAT_STORE_WORKERS": "1", "CHAT_LOG_LEVEL": "info",
                ]) { $1 }
                let log = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/workers.log"))
                log.seekToEndOfFile()
                process.standardOutput = log
                process.standardError = log
                try process.run()
                return process
            }
            _ = FileManager.default.createFile(atPath: dir + "/workers.log", contents: nil)
            var workers = try startWorkersHost()
            defer { if workers.isRunning { kill(workers.processIdentifier, SIGKILL) } }
            let server = try await TestServer.start(environment: ["CHAT_RUN": "frontend", "CHAT_BUS": bus], dataDir: dir)
            defer { server.stop() }
            #expect(server.childPIDs(matching: "chatd worker").isEmpty, "the frontend host runs no workers")
            let children = try Self.ctl(server, "status", "--json")["children"] as? [[String: Any]] ?? []
            #expect(children.compactMap { $0["child"] as? String } == ["frontend.0"])
            #expect(try Self.ctl(server, "scale", "receipts", "2")["error"] != nil, "workers started on the frontend host")
            #expect(try Self.ctl(server, "scale", "store", "2")["error"] != nil)

            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            try alice.send(json: ["type": "message", "content": "over tcp"])
            #expect(try bob.receiveMessage(content: "over tcp") != nil)

            // The whole workers host restarts: no client connection drops, and
            // what was sent while it was away is stored and delivered after.
            kill(workers.processIdentifier, SIGTERM)
            workers.waitUntilExit()
            #expect(workers.terminationStatus == 0)
            try alice.send(json: ["type": "message", "content": "while away"])
            workers = try startWorkersHost()
            #expect(try bob.receiveMessage(content: "while away", timeout: 15) != nil)
            #expect(!alice.isClosed && !bob.isClosed)
            #expect(try await Steps.contents(server, token: tokens[0], room: room) == ["over tcp", "while away"])

            // The frontend host restarts (and its broker with it) under the
            // live workers: they take no command until the new broker echoes
            // them, so the first messages' events are not published into the void.
            #expect(server.stop(keepData: true) == 0)
            let again = try await TestServer.start(port: server.port, environment: ["CHAT_RUN": "frontend", "CHAT_BUS": bus], dataDir: dir)
            defer { again.stop() }
            let newTokens = try await Steps.users(again, "alice", "bob")
            let bobAgain = try again.webSocket("/ws/chat/\(room)/", token: newTokens[1])
            let aliceAgain = try again.webSocket("/ws/chat/\(room)/", token: newTokens[0])
            try aliceAgain.send(json: ["type": "message", "content": "after the broker restart"])
            #expect(try bobAgain.receiveMessage(content: "after the broker restart") != nil)
            #expect(String(decoding: FileManager.default.contents(atPath: dir + "/workers.log") ?? Data(), as: UTF8.self).contains("lost the broker"))

            kill(workers.processIdentifier, SIGTERM)
            workers.waitUntilExit()
            #expect(workers.terminationStatus == 0)
        }

        @Test func sigtermUnderLoadClosesWith1001AndLosesNothing() async throws {
            let server = try await TestServer.start()
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            for i in 0..<300 { try alice.send(json: ["type": "message", "content": "m\(i)"]) }
            // Alice counts what the server confirmed (her own messages coming
            // back); the stop comes while the rest are still in flight.
            var confirmed = Set<String>()
            while confirmed.count < 50, let event = try alice.receive(type: "message", timeout: 10) {
                confirmed.insert(((event["message"] as? [String: Any])?["content"] as? String) ?? "")
            }
            kill(server.process.processIdentifier, SIGTERM)
            while let frame = try? alice.receive(timeout: 10) {
                if frame.opcode == .close { break }
                if let event = try? JSONSerialization.jsonObject(with: Data(frame.payload)) as? [String: Any], event["type"] as? String == "message" {
                    confirmed.insert(((event["message"] as? [String: Any])?["content"] as? String) ?? "")
                }
            }
            #expect(alice.closeCode == 1001)
            #expect(bob.waitForClose(timeout: 10))
            #expect(bob.closeCode == 1001)
            let started = Date()
            #expect(server.stop(keepData: true) == 0)
            #expect(Date().timeIntervalSince(started) < 10)
            defer { try? FileManager.default.removeItem(atPath: server.dataDir) }
            // Everything confirmed is in the database.
            let stored = try await Steps.storedContents(server)
            #expect(confirmed.isSubset(of: Set(stored)), "lost: \(confirmed.subtracting(stored).sorted())")
            #expect(!confirmed.isEmpty)
        }
    }
}

/// `socket:[inode]` of the IPv4 socket listening on `port` (from /proc/net/tcp).
func listeningSocket(port: Int) -> String? {
    guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return nil }
    // sl local_address rem_address st ... inode: state 0A is LISTEN; the port is hex.
    for line in table.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ")
        guard fields.count > 9, fields[3] == "0A", fields[1].split(separator: ":").last.flatMap({ Int($0, radix: 16) }) == port else { continue }
        return "socket:[\(fields[9])]"
    }
    return nil
}

/// Process `pid` has `socket` (`socket:[inode]`) among its descriptors.
func holds(_ pid: Int32, _ socket: String) -> Bool {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
    return fds.contains { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) == socket }
}

/// The port of `ctl status`'s `listen` (`127.0.0.1:NNNN`).
func listenPort(_ status: String) -> Int? {
    guard let object = try? JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any],
        let listen = object["listen"] as? String, let colon = listen.lastIndex(of: ":") else { return nil }
    return Int(listen[listen.index(after: colon)...])
}

extension Configuration {
    /// Reads the server's database beside it, never writing.
    static var readOnly: Configuration {
        var configuration = Configuration()
        configuration.readonly = true
        return configuration
    }
}

/// A count that sender threads add to and the test reads.
final class Tally: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0

    func add() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}
