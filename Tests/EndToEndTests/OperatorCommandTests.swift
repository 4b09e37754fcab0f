import ChatCore
import ChatTesting
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension EndToEnd {
    /// What an operator types besides `serve`: `token`, `ctl`, `--version`,
    /// and a configuration chatd refuses, each run as the real binary from a
    /// directory that is not the server's.
    @Suite struct OperatorCommands {
        struct Run {
            var status: Int32
            var out: String
            var err: String
        }

        /// Runs chatd in `directory` with only PATH and HOME and `environment`: no CHAT_* of the test run.
        func chatd(_ arguments: [String], in directory: String, environment: [String: String] = [:]) throws -> Run {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try TestServer.binary())
            process.arguments = arguments
            process.currentDirectoryURL = URL(fileURLWithPath: directory)
            let inherited = ProcessInfo.processInfo.environment.filter { ["PATH", "HOME"].contains($0.key) }
            process.environment = inherited.merging(environment) { $1 }
            let out = Pipe(), err = Pipe()
            process.standardOutput = out
            process.standardError = err
            try process.run()
            // Bounded: a command that should have refused but serves instead is stopped, and fails its test.
            DispatchQueue.global().asyncAfter(deadline: .now() + 60) { if process.isRunning { process.terminate() } }
            // Both read before waiting: a full pipe would block the child.
            let outData = out.fileHandleForReading.readDataToEndOfFile()
            let errData = err.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return Run(status: process.terminationStatus, out: String(decoding: outData, as: UTF8.self), err: String(decoding: errData, as: UTF8.self))
        }

        @Test func tokenAndCtlWithNoServerSayWhereTheyLookedAndCreateNothing() throws {
            let elsewhere = try TestServer.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: elsewhere) }
            let token = try chatd(["token", "--sub", "alice"], in: elsewhere)
            #expect(token.status != 0)
            #expect(token.err.contains("no secret at \(elsewhere)/data/jwt-secret: start the server first or pass --config"))
            #expect(token.out.isEmpty)
            #expect(!FileManager.default.fileExists(atPath: "\(elsewhere)/data"))
            let ctl = try chatd(["ctl", "status"], in: elsewhere)
            #expect(ctl.status != 0)
            #expect(ctl.err.contains("no chatd running with runtime directory \(elsewhere)/data/run (control socket \(elsewhere)/data/run/control.sock not found)"))
            let runtime = try chatd(["ctl", "status"], in: elsewhere, environment: ["CHAT_RUNTIME_DIR": "/nonexistent/chatd"])
            #expect(runtime.err.contains("no chatd running with runtime directory /nonexistent/chatd"))
        }

        @Test func tokenAndCtlFindTheServerThroughItsConfigFile() async throws {
            // A generated secret, as a development server has: the one `token` must use.
            let server = try await TestServer.start(environment: ["CHAT_JWT_SECRET": ""])
            defer { _ = server.stop() }
            let elsewhere = try TestServer.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: elsewhere) }
            let file = "\(elsewhere)/chatd.yaml"
            try "chat:\n  dataDir: \(server.dataDir)\n".write(toFile: file, atomically: true, encoding: .utf8)
            let token = try chatd(["token", "--config", file, "--sub", "alice"], in: elsewhere)
            #expect(token.status == 0, "\(token.err)")
            let rooms = try await server.request("GET", "/api/chat/rooms/", token: token.out.trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(rooms.status == 200)
            let ctl = try chatd(["ctl", "--config", file, "status"], in: elsewhere)
            #expect(ctl.status == 0, "\(ctl.err)")
            // Tables by default, the socket's JSON with --json.
            #expect(ctl.out.contains("CHILD") && ctl.out.contains("store.0") && ctl.out.contains("PLANNED"), "\(ctl.out)")
            let json = try chatd(["ctl", "--config", file, "status", "--json"], in: elsewhere)
            let children = ((try? JSONSerialization.jsonObject(with: Data(json.out.utf8))) as? [String: Any])?["children"] as? [[String: Any]]
            #expect(children?.contains { $0["child"] as? String == "store.0" && $0["planned_restarts"] as? Int == 0 } == true, "\(json.out)")
            // A second server on the same address exits at once, naming it.
            let second = try chatd(["serve"], in: elsewhere, environment: ["CHAT_LISTEN": "127.0.0.1:\(server.port)"])
            #expect(second.status == 1)
            #expect(second.err.contains("listen: 127.0.0.1:\(server.port): Address already in use"), "\(second.err)")
        }

        @Test func versionIsPrintedBothWays() throws {
            let dir = try TestServer.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            for arguments in [["--version"], ["version"]] {
                let run = try chatd(arguments, in: dir)
                #expect(run.status == 0)
                #expect(run.out.trimmingCharacters(in: .whitespacesAndNewlines) == ChatdVersion.version)
            }
        }

        /// SIGHUP with a file that no longer loads: the error is logged, the
        /// running configuration and every child stay.
        @Test func aReloadOfABadFileKeepsTheRunningConfiguration() async throws {
            let file = try EndToEnd.Reload.configFile("chat:\n  maxMessageChars: 1000\n")
            defer { try? FileManager.default.removeItem(atPath: file) }
            let server = try await TestServer.start(configFile: file)
            defer { _ = server.stop() }
            let before = server.childNames()
            try "chat:\n  maxMessageChars: lots\n".write(toFile: file, atomically: true, encoding: .utf8)
            #expect(kill(server.process.processIdentifier, SIGHUP) == 0)
            try await server.waitUntil(timeout: 30, "the reload's refusal") {
                EndToEnd.Reload.count("reload failed, keeping the running configuration", in: server) == 1
            }
            #expect(server.log.contains("\(file): maxMessageChars: must be a whole number"))
            #expect(server.childNames() == before)
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let base = "/api/chat/rooms/\(room)/messages/"
            // Not the default (10,000) either: the running 1000 holds.
            let long = try await server.request("POST", base, token: tokens[0], json: ["content": String(repeating: "x", count: 1500)])
            #expect(long.status == 400, "\(long.text)")
            #expect(try await server.request("POST", base, token: tokens[0], json: ["content": "hello"]).status == 201)
        }

        @Test func serveRefusesAMistypedKeyBeforeStartingAnything() throws {
            let dir = try TestServer.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try "chat:\n  listne: 127.0.0.1:0\n".write(toFile: "\(dir)/chatd.yaml", atomically: true, encoding: .utf8)
            for command in ["serve", "migrate"] {
                let run = try chatd([command, "--config", "\(dir)/chatd.yaml"], in: dir, environment: ["CHAT_DATA_DIR": "\(dir)/data"])
                #expect(run.status != 0)
                #expect(run.err.contains("\(dir)/chatd.yaml: listne: unknown key (did you mean listen?)"), "\(run.err)")
                #expect(!FileManager.default.fileExists(atPath: "\(dir)/data"))
            }
        }
    }
}
