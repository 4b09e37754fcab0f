import ChatCore
import ChatTesting
import ChatWire
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension EndToEnd {
    /// Issue 13: `ctl restart frontend` hands each frontend's WebSockets to
    /// its new process. Clients read from the sockets they opened at the
    /// start, and nothing else: no reconnect, no history fetch.
    @Suite struct Handover {
        /// Handover is on by default (`frontendHandover`); said explicitly so that these tests keep testing it.
        static let handover = ["CHAT_FRONTEND_HANDOVER": "true"]

        /// Every member of three rooms sends over its WebSocket while the
        /// frontends are restarted five times and the whole service upgraded
        /// once (issue 13's test): every socket open at the end
        /// is the one opened at the start (no close frame, no error), and
        /// every member got every message of its room exactly once, in the
        /// room's order.
        @Test func restartsUnderLoadCloseNoSocketAndLoseNothing() async throws {
            let server = try await TestServer.start(frontends: 2, environment: Steps.noRateLimits.merging(Self.handover) { $1 })
            defer { server.stop() }
            try await MultiFrontend.waitForFrontends(server, count: 2)
            var members: [SteadyMember] = []
            var rooms: [(id: String, reader: String, members: [SteadyMember])] = []
            for r in 0..<3 {
                let (room, subs, tokens) = try await server.room(of: 3, prefix: "hand-\(r)", name: "hand \(r)")
                let inRoom = try zip(subs, tokens).map { try SteadyMember(server: server, room: room, token: $1, name: $0, limit: 2_000) }
                members += inRoom
                rooms.append((room, tokens[0], inRoom))
            }
            let before = Set(server.frontendPIDs)
            let run = SteadyMember.start(members)
            try await server.waitUntil(timeout: 20, "load under way") { members.allSatisfy { $0.sentCount >= 3 } }
            for round in 0..<5 {
                let answer = try EndToEnd.Supervision.ctl(server, "restart", "frontend")
                #expect(answer["restarted"] as? [String] == ["frontend.0", "frontend.1"], "round \(round): \(answer)")
            }
            // Every child from the binary on disk: workers restart (their
            // commands are resent), frontends hand over once more.
            let upgraded = try EndToEnd.Supervision.ctl(server, "upgrade")
            #expect((upgraded["restarted"] as? [String])?.suffix(2) == ["frontend.0", "frontend.1"], "\(upgraded)")
            let sentAtEnd = members.map(\.sentCount)
            try await server.waitUntil(timeout: 20, "load after the restarts") { zip(members, sentAtEnd).allSatisfy { $0.sentCount >= $1 + 3 } }
            run.finishSending()

            for room in rooms {
                let stored = try await Steps.contents(server, token: room.reader, room: room.id)
                let sent = room.members.flatMap(\.sent)
                #expect(Set(stored) == Set(sent) && stored.count == sent.count, "every message sent is stored, once")
                do {
                    try await server.waitUntil(timeout: 30, "every member of \(room.id) to have \(stored.count) messages") {
                        room.members.allSatisfy { $0.contents.count >= stored.count }
                    }
                } catch {
                    let summaries = room.members.map { "\($0.name): \($0.summary)" }.joined(separator: "; ")
                    Issue.record("\(error): \(summaries)")
                }
                for member in room.members {
                    #expect(member.contents == stored, "\(member.name): \(member.summary)")
                }
            }
            run.stop()
            for member in members {
                #expect(member.problems.isEmpty, "\(member.name): \(member.summary)")
            }
            #expect(Set(server.frontendPIDs).isDisjoint(with: before) && server.frontendPIDs.count == 2, "every frontend process was replaced")
            let status = try server.status()
            let handovers = status["handovers"] as? [[String: Any]] ?? []
            #expect(handovers.count == 12, "\(handovers)")
            #expect(handovers.allSatisfy { $0["refused"] == nil && $0["gaps"] as? Int == 0 }, "\(handovers)")
            #expect(handovers.reduce(0) { $0 + ($1["connections_moved"] as? Int ?? 0) } >= 5 * members.count, "every socket moved each round")
            let rows = try MultiFrontend.frontendRows(server)
            #expect(rows.allSatisfy { $0["restarts"] as? Int == 0 && $0["ready"] as? Bool == true }, "handovers count as no restart")
        }
    }
}

/// A room member on one WebSocket for the whole test: it sends its own
/// messages over it (paced, bounded) and reads everything that comes. Any
/// close frame, error event or broken socket is a problem: it never
/// reconnects. Runs on a thread of its own.
final class SteadyMember: @unchecked Sendable {
    let server: TestServer
    let room: String
    let name: String
    let limit: Int
    private let socket: WebSocketClient
    private let lock = NSLock()
    private var texts: [String] = []
    private var seen = Set<String>()
    private var mine: [String] = []
    private var trouble: [String] = []

    init(server: TestServer, room: String, token: String, name: String, limit: Int) throws {
        (self.server, self.room, self.name, self.limit) = (server, room, name, limit)
        socket = try server.webSocket("/ws/chat/\(room)/", token: token)
    }

    var contents: [String] { lock.withLock { texts } }
    var sent: [String] { lock.withLock { mine } }
    var sentCount: Int { lock.withLock { mine.count } }
    var problems: [String] { lock.withLock { trouble } }
    var summary: String { lock.withLock { "\(texts.count) received, \(mine.count) sent, problems \(trouble.prefix(3))" } }

    final class Run: @unchecked Sendable {
        private let lock = NSLock()
        private var sending = true
        private var stopped = false
        private let group = DispatchGroup()
        var isSending: Bool { lock.withLock { sending } }
        var isStopped: Bool { lock.withLock { stopped } }

        func finishSending() { lock.withLock { sending = false } }

        func stop() {
            lock.withLock { stopped = true }
            group.wait()
        }

        fileprivate func start(_ body: @escaping @Sendable () -> Void) {
            group.enter()
            Thread { body(); self.group.leave() }.start()
        }
    }

    static func start(_ members: [SteadyMember]) -> Run {
        let run = Run()
        for member in members { run.start { member.run(until: run) } }
        return run
    }

    private func run(until run: Run) {
        let deadline = Date().addingTimeInterval(180)
        var next = Date()
        while !run.isStopped && Date() < deadline {
            if run.isSending && sentCount < limit && Date() >= next {
                let content = "\(name)#\(sentCount)"
                do {
                    try socket.send(json: ["type": "message", "content": content])
                    lock.withLock { mine.append(content) }
                } catch {
                    return problem("send: \(error)")
                }
                next = Date().addingTimeInterval(0.04)
            }
            do {
                guard let frame = try socket.receive(timeout: 0.02) else { continue }
                guard frame.opcode == .text else { return problem("frame \(frame.opcode) \(frame.closeCode.map(String.init) ?? "")") }
                guard let event = try? JSONSerialization.jsonObject(with: Data(frame.payload)) as? [String: Any] else { continue }
                switch event["type"] as? String {
                case "message":
                    guard let message = event["message"] as? [String: Any], let id = message["id"] as? String,
                        let content = message["content"] as? String else { continue }
                    lock.withLock {
                        if seen.insert(id).inserted { texts.append(content) } else { trouble.append("twice: \(content)") }
                    }
                case "error":
                    problem("error event: \(frame.text)")
                default:
                    continue
                }
            } catch {
                return problem("socket: \(error)")
            }
        }
    }

    private func problem(_ text: String) {
        lock.withLock { trouble.append(text) }
    }
}

extension EndToEnd.Handover {
    /// A new process that cannot read the running one's state version (as
    /// an incompatible binary) refuses before anything moves: the restart
    /// answers an error, the old process serves on with every socket open,
    /// and `ctl status` records the refusal.
    @Test func anIncompatibleSuccessorIsRefusedAndTheOldServesOn() async throws {
        let server = try await TestServer.start(frontends: 1, environment: Steps.noRateLimits.merging(["CHATD_HANDOVER_READS": "999", "CHAT_FRONTEND_HANDOVER": "true"]) { $1 })
        defer { server.stop() }
        try await EndToEnd.MultiFrontend.waitForFrontends(server, count: 1)
        let tokens = try await Steps.users(server, "alice", "bob")
        let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
        let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
        let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
        let before = server.frontendPIDs

        let answer = try EndToEnd.Supervision.ctl(server, "restart", "frontend")
        let error = try #require(answer["error"] as? String, "\(answer)")
        #expect(error.contains("refused: state version \(HandoverMessage.version); this frontend reads 999"), "\(error)")
        // The refused process is stopped; the old one serves on.
        try await server.waitUntil(timeout: 10, "the refused process gone") { server.frontendPIDs == before }

        try alice.send(json: ["type": "message", "content": "still here"])
        #expect(try bob.receiveMessage(content: "still here") != nil)
        #expect(alice.closeCode == nil && bob.closeCode == nil)
        let status = try server.status()
        let rows = status["handovers"] as? [[String: Any]] ?? []
        #expect(rows.count == 1 && (rows.first?["refused"] as? String)?.contains("999") == true, "\(rows)")
        // A connection made after the refusal is accepted: the old process accepts again.
        let carol = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
        try carol.send(json: ["type": "message", "content": "after"])
        #expect(try alice.receiveMessage(content: "after") != nil)
    }
}

extension EndToEnd.Handover {
    /// The successor dies midway (SIGKILL once one socket is in it, while
    /// another, stopped, waits for its command's reply): the old process
    /// closes what it stopped and has not moved with 1012 (a socket never
    /// stopped would serve on: `HandoverMachineTests`), accepts again, and the next `ctl restart`
    /// hands its sockets over (a failed handover used to leave it refusing
    /// every later one).
    @Test func aSuccessorDyingMidwayLeavesTheOldServingAndTheNextHandoverWorks() async throws {
        // Alice's socket waits for her reply far longer than the test takes to
        // kill the successor, and the supervisor does not replace the stopped
        // store worker meanwhile (its hang timeout, 10 s by default, let a
        // promoted standby answer her on a slow run: she moved, and the test failed).
        let environment = Steps.noRateLimits.merging(Self.handover) { $1 }
            .merging([HandoverReport.drainBoundVariable: "60000", "CHAT_HANG_TIMEOUT_SECONDS": "60"]) { $1 }
        let server = try await TestServer.start(frontends: 1, environment: environment)
        defer { server.stop() }
        let tokens = try await Steps.users(server, "alice", "bob", "carol")
        let room = try await Steps.room(server, token: tokens[0], members: ["bob", "carol"])
        // Alice's message stays unanswered: her socket waits (the drain bound) while Bob's moves.
        let (alice, bob, old, store) = try await Self.holdAMessage("held", server: server, room: room, tokens: tokens)
        defer { kill(store, SIGCONT) }
        // The answer as text: a dictionary of Any cannot leave the task.
        let restart = Task.detached { "\(try EndToEnd.Supervision.ctl(server, "restart", "frontend"))" }
        var successor: Int32 = 0
        try await server.waitUntil(timeout: 20, "Bob's socket in the successor") {
            guard let pid = server.frontendPIDs.first(where: { $0 != old }) else { return false }
            successor = pid
            return server.frontendPID(serving: bob) == pid
        }
        #expect(server.frontendPID(serving: alice) == old, "Alice still waits for her reply in the old process")
        #expect(kill(successor, SIGKILL) == 0)
        let failed = try await restart.value
        #expect(failed.contains("error") && failed.contains("the new process exited"), "\(failed)")
        // Events from before the stop come first (user_joined).
        var frame = try alice.receive(timeout: 10)
        while let text = frame, text.opcode == .text { frame = try alice.receive(timeout: 10) }
        #expect(frame?.opcode == .close && alice.closeCode == 1012, "what had not moved closes with 1012")
        // Only now: a reply before the old process saw the successor's end
        // would send Alice to the dying process, and her connection would
        // end as a crashed frontend's do (no close frame; she reconnects).
        #expect(kill(store, SIGCONT) == 0)
        try await server.waitUntil(timeout: 10, "the successor gone") { server.frontendPIDs == [old] }

        // It accepts again, and the next handover moves its sockets.
        let carol = try server.webSocket("/ws/chat/\(room)/", token: tokens[2])
        let dave = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
        try carol.send(json: ["type": "message", "content": "before the second"])
        #expect(try dave.receiveMessage(content: "before the second") != nil)
        let answer = try EndToEnd.Supervision.ctl(server, "restart", "frontend")
        #expect(answer["restarted"] as? [String] == ["frontend.0"], "\(answer)")
        #expect(!server.frontendPIDs.contains(old))
        try carol.send(json: ["type": "message", "content": "after the second"])
        #expect(try dave.receiveMessage(content: "after the second") != nil)
        #expect(carol.closeCode == nil && dave.closeCode == nil, "no socket closed in the second handover")
        let rows = try server.status()["handovers"] as? [[String: Any]] ?? []
        #expect(rows.last?["connections_moved"] as? Int == 2, "\(rows)")
    }

    /// A socket moves with its message unanswered (its store worker hangs
    /// past the drain bound, then dies and is replaced, as in a `ctl
    /// upgrade`): the retired old process resends it until it is stored,
    /// past the 3 s a frontend's bus drains at an ordinary stop, so the room
    /// gets the message through the new process.
    @Test func aCommandUnansweredAtTheHandoverIsResentByTheRetiredProcess() async throws {
        // The supervisor does not kill the stopped worker itself: the test does, when it is time.
        let environment = ["CHAT_HANG_TIMEOUT_SECONDS": "60", "CHAT_REQUEST_TIMEOUT_MILLISECONDS": "20000"]
        let server = try await TestServer.start(frontends: 1, environment: Steps.noRateLimits.merging(Self.handover) { $1 }.merging(environment) { $1 })
        defer { server.stop() }
        let tokens = try await Steps.users(server, "alice", "bob")
        let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
        // Hung: what reached it is lost when it is killed; only a resend stores the message.
        let (alice, bob, old, store) = try await Self.holdAMessage("across the handover", server: server, room: room, tokens: tokens)
        defer { kill(store, SIGCONT) }
        let answer = try EndToEnd.Supervision.ctl(server, "restart", "frontend")
        #expect(answer["restarted"] as? [String] == ["frontend.0"], "\(answer)")
        // The old process got its SIGTERM as the restart answered. The worker
        // stays down past the 3 s an ordinary stop drains (the time is the
        // point here: there is no condition to wait for), then dies; the
        // supervisor starts its replacement and only the retired process,
        // still draining, has the message to resend.
        try await Task.sleep(for: .seconds(4))
        #expect(kill(old, 0) == 0, "the retired process still drains")
        #expect(kill(store, SIGKILL) == 0)
        #expect(try bob.receiveMessage(content: "across the handover", timeout: 25) != nil, "the retired process resent it to the new store worker")
        #expect(alice.closeCode == nil && bob.closeCode == nil)
        try await server.waitUntil(timeout: 15, "the retired process gone") { kill(old, 0) != 0 }
    }

    /// Alice (`tokens[0]`) and Bob (`tokens[1]`) on the one frontend, the
    /// store worker stopped (SIGSTOP: the caller continues it) and Alice's
    /// message `content` read by the frontend, its command unanswered.
    /// Her typing (the receipts worker's, not hung) reaching Bob says her
    /// socket read both frames, so the message's command is under way:
    /// otherwise it could travel unread with the socket.
    static func holdAMessage(
        _ content: String, server: TestServer, room: String, tokens: [String]
    ) async throws -> (alice: WebSocketClient, bob: WebSocketClient, old: Int32, store: Int32) {
        try await EndToEnd.MultiFrontend.waitForFrontends(server, count: 1)
        let alice = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
        let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
        let old = try #require(server.frontendPIDs.first)
        let store = try #require(server.childPIDs(matching: "worker --role store").first)
        #expect(kill(store, SIGSTOP) == 0)
        do {
            try alice.send(json: ["type": "message", "content": content])
            try alice.send(json: ["type": "typing", "is_typing": true])
            #expect(try bob.receive(type: "typing") != nil)
        } catch {
            kill(store, SIGCONT)
            throw error
        }
        return (alice, bob, old, store)
    }

    /// An adopted socket's idle time goes on from where its old process
    /// left it: a silent client is cut off (1001) the idle timeout after its
    /// last frame, not the idle timeout after the handover.
    @Test func aSilentSocketsIdleTimeGoesOnAcrossTheHandover() async throws {
        // Ping after 6 s of silence, close after 12.
        let environment = Steps.noRateLimits.merging(Self.handover) { $1 }.merging(["CHAT_IDLE_TIMEOUT_SECONDS": "12"]) { $1 }
        let server = try await TestServer.start(frontends: 1, environment: environment)
        defer { server.stop() }
        try await EndToEnd.MultiFrontend.waitForFrontends(server, count: 1)
        let tokens = try await Steps.users(server, "alice", "bob")
        let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
        let silent = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
        let opened = Date()
        // A third of its idle time passes in the old process (the time is what is tested).
        try await Task.sleep(for: .seconds(4))
        let answer = try EndToEnd.Supervision.ctl(server, "restart", "frontend")
        #expect(answer["restarted"] as? [String] == ["frontend.0"], "\(answer)")
        #expect(silent.waitForClose(timeout: 20, answerPings: false))
        let lasted = Date().timeIntervalSince(opened)
        #expect(silent.closeCode == 1001, "closed as idle (not 1012: it was adopted)")
        // 12 s after its last frame (its opening); at least 4 + 12 had the count restarted at the adoption.
        #expect(lasted > 11 && lasted < 14.5, "closed after \(lasted) s")
    }
}
