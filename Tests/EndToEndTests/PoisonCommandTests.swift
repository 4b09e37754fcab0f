import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 10: a command that was in flight at two crashes of its worker is
    /// a poison command: its client gets 500 with a clear detail, the
    /// frontend does not send it a third time, and the shard serves others.
    /// (That SIGKILLs from outside do not count is what the chaos test shows:
    /// it kills workers 0.1 s apart with hundreds of commands in flight, and
    /// every one must be stored.)
    @Suite struct PoisonCommands {
        @Test func aCommandThatCrashesItsWorkerTwiceIsFailedNotResent() async throws {
            // The failpoint makes a store worker trap on any command carrying
            // the marker, as a bug in the store would (a Swift trap: SIGILL).
            let marker = "poison-\(UInt32.random(in: 0...UInt32.max))"
            // Two crashes and two worker starts fit the 10 s default deadline on a
            // quiet machine, not always on a loaded one (a 503 seen there): the
            // deadline is not what is tested, so it is long.
            let environment = ["CHATD_FAILPOINT_CRASH_ON": marker, "CHAT_REQUEST_TIMEOUT_MILLISECONDS": "30000"]
            let server = try await TestServer.start(storeWorkers: 1, environment: environment)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let first = try #require(server.childPIDs(matching: "worker --role store").first)

            let poisoned = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "a \(marker)"], timeout: 40)
            #expect(poisoned.status == 500, "\(poisoned.text)")
            #expect((poisoned.object["detail"] as? String)?.contains("not retried") == true, "\(poisoned.text)")

            // The shard serves at once (not pushed into crash-loop backoff).
            // A third copy, had there been one, would have gone to the
            // replacement at its first heartbeat, ahead of this request in the
            // frontend's stream: by its answer, it would have crashed a third.
            let fine = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[1], json: ["content": "still here"], timeout: 5)
            #expect(fine.status == 201, "\(fine.text)")
            // Two crashes: the original send and the one resend.
            #expect(server.log.components(separatedBy: "failpoint: a command carries").count - 1 == 2, "\(server.log.suffix(3000))")
            let pids = server.childPIDs(matching: "worker --role store")
            #expect(!pids.isEmpty && !pids.contains(first))
            let history = try await server.request("GET", "/api/chat/rooms/\(room)/messages/", token: tokens[0])
            let contents = (history.object["results"] as? [[String: Any]] ?? []).compactMap { $0["content"] as? String }
            #expect(contents == ["still here"])
        }
    }
}
