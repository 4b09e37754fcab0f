import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// `chatd-load`, once per scenario of issue 12's table at a small size,
    /// so the tool that measures them keeps working. What is checked is
    /// that each run completes, exits 0 and prints its summary line (with
    /// its own checks: every message stored and delivered once, every idle
    /// socket opened and held); its figures are for docs/benchmarks.md, not
    /// for assertions.
    @Suite struct LoadTool {
        @Test func throughputAsFastAsTheWindowAllows() throws {
            let output = try runLoad(["--rooms", "2", "--members", "4", "--senders", "1", "--window", "10", "--message-bytes", "128", "--messages", "200"])
            #expect(summary(output)?.contains("2 rooms × 4 members, 1 sender/room, 128-byte messages, window 10") == true, "\(output)")
            #expect(summary(output)?.contains("msg/s persisted and delivered") == true)
            #expect(output.contains("cpu: supervisor+broker"))
        }

        @Test func throughputPacedReportsLatencyFromTheScheduledSend() throws {
            let output = try runLoad(["--rooms", "2", "--members", "4", "--senders", "1", "--rate", "200", "--messages", "100"])
            #expect(summary(output)?.contains("paced at 200 msg/s") == true, "\(output)")
            #expect(summary(output)?.contains("latency from scheduled send p50") == true)
            // 2 rooms × 100 messages × 4 members: every delivery's latency.
            #expect(output.contains("over 800 deliveries"))
        }

        /// A server the tool did not start (as a deployment is): its users,
        /// rooms and tokens made with the secret from the environment, and
        /// `cpu:` from the pids of its `ctl status`.
        @Test func throughputOfADeploymentAlreadyRunning() async throws {
            let server = try await TestServer.start(environment: ["CHAT_LOG_LEVEL": "warning", "CHAT_RATE_LIMITS": "off"])
            defer { server.stop() }
            let url = "http://127.0.0.1:\(server.port)"
            let output = try runLoad(
                ["--target", url, "--control", server.dataDir, "--rooms", "2", "--members", "4", "--senders", "1", "--window", "10", "--messages", "100"],
                environment: ["CHAT_JWT_SECRET": server.secret])
            #expect(summary(output)?.contains("2 rooms × 4 members, 1 sender/room, 128-byte messages, window 10, 1 target") == true, "\(output)")
            #expect(summary(output)?.contains("server CPU") == true && summary(output)?.contains("not read") == false)
            // The supervisor is found as its children's parent.
            #expect(output.contains("cpu: host0/supervisor+broker") && output.contains("host0/store.0"), "\(output)")
            // The rooms it made are the server's: 2 of them, every message stored (the tool counted them too).
            let rooms = try await server.request("GET", "/api/chat/rooms/", token: try await server.token(sub: "load-0"))
            #expect(rooms.object["count"] as? Int == 2, "\(rooms.text)")

            // Split over two URLs (the same server twice), no control socket: `cpu:` is left out and says why.
            let split = try runLoad(
                ["--target", "\(url),\(url)", "--split", "--rooms", "2", "--members", "3", "--senders", "1", "--rate", "100", "--messages", "50"],
                environment: ["CHAT_JWT_SECRET": server.secret])
            #expect(summary(split)?.contains("paced at 100 msg/s, 2 targets split") == true, "\(split)")
            #expect(split.contains("cpu: not read (no --control"), "\(split)")

            // A wrong secret: the server refuses the tokens (401), and the tool fails saying so.
            let refused = try runLoad(["--target", url, "--rooms", "1", "--messages", "1"], environment: ["CHAT_JWT_SECRET": TestServer.randomSecret()], expectSuccess: false)
            #expect(refused.contains("chatd-load:") && refused.contains("401") && refused.contains("Invalid or expired token."), "\(refused)")

            // A secret chatd would refuse (under 32 bytes) is refused before anything is sent.
            let short = try runLoad(["--target", url, "--rooms", "1", "--messages", "1"], environment: ["CHAT_JWT_SECRET": "too-short"], expectSuccess: false)
            #expect(short.contains("at least 32 bytes") && short.contains("got 9"), "\(short)")
        }

        /// `--target`'s sockets: a connect to a host that drops the SYN fails
        /// at the connect timeout, not the kernel's minutes. The host is a
        /// listener that never accepts, its queue (backlog 0) filled by one
        /// connection: Linux then drops further SYNs.
        @Test func connectTimeoutAgainstAListenerThatDropsTheSYN() throws {
            let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(listener) }
            var address = TestServer.loopback(port: 0)
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            try #require(withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) == 0 && listen(listener, 0) == 0 && getsockname(listener, $0, &length) == 0 }
            })
            let port = Int(UInt16(bigEndian: address.sin_port))
            let filler = try RawConnection(port: port)
            let began = Date()
            var failure = "connected"
            withExtendedLifetime(filler) {
                do { _ = try WebSocketClient(port: port, path: "/ws/", connectTimeout: 0.5, sendTimeout: 1) } catch { failure = "\(error)" }
            }
            #expect(failure.contains("connect: timed out"), "\(failure)")
            #expect(Date().timeIntervalSince(began) < 5)
        }

        @Test func fanoutPaced() throws {
            let output = try runLoad(["--fanout", "20", "--rate", "100", "--messages", "50"])
            #expect(summary(output)?.contains("fan-out to 20 members paced at 100 msg/s") == true, "\(output)")
        }

        @Test func idleSocketsFromSeveralClientProcessesAndSourceAddresses() throws {
            let output = try runLoad(["--idle", "300", "--clients", "2", "--sources", "2", "--hold", "1"])
            #expect(summary(output)?.contains("300 of 300 opened by 2 client processes from 2 source addresses") == true, "\(output)")
            #expect(summary(output)?.contains("300 still open") == true)
            // The open phase's CPU per socket, the client processes' included.
            #expect(output.contains("cpu: supervisor+broker") && output.contains("idle clients"), "\(output)")
            #expect(output.contains("handshakes (connect to 101, per client process): p50"), "\(output)")
        }

        @Test(arguments: ["rooms", "messages"])
        func restReadsUnderWrk(endpoint: String) throws {
            let output = try runLoad(["--rest", endpoint, "--room-messages", "200", "--duration", "1"])
            #expect(summary(output)?.contains("req/s") == true, "\(output)")
        }

        @Test func idleMemoryByKindOfMapping() throws {
            let output = try runLoad(["--memory", "--settle", "1"])
            #expect(summary(output)?.contains("MB RSS in all") == true, "\(output)")
            // Every process has a heap, threads and libraries: a parse that found none is broken.
            let all = output.split(separator: "\n").first { $0.hasPrefix("all: ") }.map(String.init) ?? ""
            for kind in ["heap/anon", "thread stacks", "chatd text+data", "shared libraries"] {
                #expect(megabytes(kind, in: all) > 0, "\(kind) in \(all)")
            }
            #expect(output.contains("frontend.0 (pid"))
        }

        @Test func recoveryFromAKilledStoreWorker() throws {
            let output = try runLoad(["--recovery", "1"])
            #expect(summary(output)?.contains("median of 1 kills") == true, "\(output)")
        }
    }
}

/// The line of `output` that starts `summary:`.
private func summary(_ output: String) -> String? {
    output.split(separator: "\n").last { $0.hasPrefix("summary: ") }.map(String.init)
}

/// The figure after `kind` in a `--memory` line (`heap/anon 5.0, ...`).
private func megabytes(_ kind: String, in line: String) -> Double {
    guard let range = line.range(of: kind + " ") else { return 0 }
    return Double(line[range.upperBound...].prefix { $0.isNumber || $0 == "." }) ?? 0
}

/// Runs the `chatd-load` built beside the chatd under test (it starts its
/// own server from that chatd); its output. Fails on a non-zero exit (on
/// zero with `expectSuccess` false), and
/// SIGKILLs it (by pid) past `timeout`.
private func runLoad(_ arguments: [String], environment: [String: String] = [:], expectSuccess: Bool = true, timeout: Double = 180) throws -> String {
    let chatd = try TestServer.binary()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: chatd).deletingLastPathComponent().appendingPathComponent("chatd-load")
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(["CHATD_BINARY": chatd].merging(environment) { $1 }) { $1 }
    // A file, not a pipe: nothing blocks on a full pipe while we wait.
    let outputPath = try TestServer.temporaryDirectory() + "/out.txt"
    defer { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: outputPath).deletingLastPathComponent().path) }
    _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
    let file = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
    process.standardOutput = file
    process.standardError = file
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(50_000) }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
    let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    #expect((process.terminationStatus == 0) == expectSuccess, "chatd-load \(arguments.joined(separator: " ")):\n\(output)")
    return output
}
