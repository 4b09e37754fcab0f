import ChatCore
import ChatTesting
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension EndToEnd {
    /// Issue 12: several frontends share the port. Which frontend holds a
    /// connection is read from the kernel (`TestServer.frontendPID(serving:)`),
    /// not from anything the server says.
    @Suite struct MultiFrontend {
        /// A client on frontend A receives what a client on frontend B sends;
        /// `ctl status` lists each frontend with its open WebSockets; `ctl
        /// restart frontend.1` restarts that one alone (its client gets 1012:
        /// handovers off, the path they fall back to).
        @Test func aMessageCrossesFromOneFrontendToAnother() async throws {
            let server = try await TestServer.start(frontends: 2, environment: Steps.noRateLimits.merging(Self.noHandover) { $1 })
            defer { server.stop() }
            try await Self.waitForFrontends(server, count: 2)
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            let bobFrontend = try #require(server.frontendPID(serving: bob))
            // The kernel picks the frontend of each connection: open until one lands on the other.
            var alice: WebSocketClient?
            var tried: [WebSocketClient] = []
            for _ in 0..<60 where alice == nil {
                let socket = try server.webSocket("/ws/chat/\(room)/", token: tokens[0])
                if let pid = server.frontendPID(serving: socket), pid != bobFrontend { alice = socket } else { tried.append(socket) }
            }
            let aliceSocket = try #require(alice, "no connection of 61 reached the second frontend")
            for socket in tried { socket.close() }
            #expect(server.frontendPIDs.count == 2)

            try bob.send(json: ["type": "message", "content": "from frontend B"])
            #expect(try aliceSocket.receiveMessage(content: "from frontend B") != nil)
            try aliceSocket.send(json: ["type": "message", "content": "from frontend A"])
            #expect(try bob.receiveMessage(content: "from frontend A") != nil)

            // Each frontend's heartbeat counts its sockets: one each now.
            try await server.waitUntil(timeout: 10, "one WebSocket on each frontend in ctl status") {
                let rows = try Self.frontendRows(server)
                return rows.count == 2 && rows.allSatisfy { $0["websockets"] as? Int == 1 && $0["ready"] as? Bool == true }
            }
            let rows = try Self.frontendRows(server)
            #expect(rows.map { $0["child"] as? String } == ["frontend.0", "frontend.1"])
            #expect(Set(rows.compactMap { ($0["pid"] as? Int).map(Int32.init) }) == Set(server.frontendPIDs))

            // `ctl restart frontend.1` restarts that one alone: its client gets 1012, the other stays.
            let second = try #require((rows[1]["pid"] as? Int).map(Int32.init))
            let (restarted, kept) = second == bobFrontend ? (bob, aliceSocket) : (aliceSocket, bob)
            let answer = try EndToEnd.Supervision.ctl(server, "restart", "frontend.1")
            #expect(answer["restarted"] as? [String] == ["frontend.1"], "\(answer)")
            #expect(restarted.waitForClose(timeout: 10) && restarted.closeCode == 1012)
            #expect(!server.frontendPIDs.contains(second) && server.frontendPIDs.count == 2)
            let posted = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "after frontend.1 restarted"])
            #expect(posted.status == 201)
            #expect(try kept.receiveMessage(content: "after frontend.1 restarted") != nil)
            #expect(kept.closeCode == nil)
        }

        /// SIGKILL of one frontend: the clients of the others stay connected
        /// and keep receiving; the killed one's clients reconnect (to a
        /// sibling, or the replacement) and catch up with `after`; the
        /// supervisor restarts it.
        @Test func aKilledFrontendsClientsResumeAndTheOthersStay() async throws {
            let server = try await TestServer.start(frontends: 3, environment: Steps.noRateLimits)
            defer { server.stop() }
            try await Self.waitForFrontends(server, count: 3)
            let (room, subs, tokens) = try await server.room(of: 6, prefix: "kill", name: "kill")
            let members = try Self.spread(server, room: room, tokens: tokens, names: subs, over: 3)
            let victim = try #require(server.frontendPID(serving: members[0].socket))
            let victims = Set(members.filter { server.frontendPID(serving: $0.socket) == victim }.map(\.name))
            let slot = try #require(try Self.frontendRows(server).first { ($0["pid"] as? Int).map(Int32.init) == victim }?["child"] as? String)

            let readers = ResumingMember.start(members)
            let sender = Sender(server: server, room: room, token: tokens[1], name: "kill-sender", limit: 60, pace: 0.03)
            let sending = sender.start()
            try await server.waitUntil(timeout: 20, "a third of the messages sent") { sender.sent >= 20 }
            kill(victim, SIGKILL)
            sending.wait()
            #expect(sender.failures.isEmpty, "\(sender.failures.prefix(3))")
            let stored = try await Steps.contents(server, token: tokens[0], room: room)
            #expect(stored.count == 60 && Set(stored).count == 60, "every message stored once")
            try await ResumingMember.waitUntilAllHave(members, stored.count, server: server)
            readers.stop()

            for member in members {
                #expect(member.contents == stored, "\(member.name): \(member.summary)")
                #expect(member.liveDuplicates.isEmpty, "\(member.name): \(member.liveDuplicates.prefix(3))")
                if victims.contains(member.name) {
                    #expect(member.reconnects >= 1 && member.closeCodes.allSatisfy { $0 == nil }, "\(member.name): \(member.summary)")
                } else {
                    #expect(member.reconnects == 0 && member.closeCodes.isEmpty, "\(member.name) stayed connected: \(member.summary)")
                }
            }
            try await server.waitUntil(timeout: 15, "\(slot) restarted") {
                let row = try Self.frontendRows(server).first { $0["child"] as? String == slot }
                return row?["ready"] as? Bool == true && row?["restarts"] as? Int == 1 && (row?["pid"] as? Int).map(Int32.init) != victim
            }
            #expect(server.frontendPIDs.count == 3 && !server.frontendPIDs.contains(victim))
        }

        /// SIGUSR1 (a restart, a reload retiring the slot) that reaches a
        /// frontend while it starts is not lost: the process ends at once,
        /// as it would once serving. Sent as soon as the new process has a
        /// disposition for it (ignored or caught, `/proc/<pid>/status`), so
        /// long before it serves.
        @Test func aRestartSignalWhileAFrontendStartsEndsIt() async throws {
            let server = try await TestServer.start(frontends: 2, environment: Steps.noRateLimits)
            defer { server.stop() }
            try await Self.waitForFrontends(server, count: 2)
            let old = try #require((try Self.frontendRows(server).first { $0["child"] as? String == "frontend.1" }?["pid"] as? Int).map(Int32.init))
            kill(old, SIGKILL)
            var starting: Int32?
            try await server.waitUntil(timeout: 15, "frontend.1 started again, SIGUSR1 ignored or caught") {
                let row = try Self.frontendRows(server).first { $0["child"] as? String == "frontend.1" }
                guard let pid = (row?["pid"] as? Int).map(Int32.init), pid != old, Self.handlesUSR1(pid) else { return false }
                starting = pid
                return true
            }
            let pid = try #require(starting)
            kill(pid, SIGUSR1)
            try await server.waitUntil(timeout: 10, "frontend.1 ended by SIGUSR1 sent while it started") { !server.frontendPIDs.contains(pid) }
            // The supervisor starts the slot again, and it serves.
            try await Self.waitForFrontends(server, count: 2)
        }

        /// SIGUSR1 is ignored or caught by `pid` (SigIgn, SigCgt in /proc).
        static func handlesUSR1(_ pid: Int32) -> Bool {
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return false }
            let bit = UInt64(1) << (UInt64(SIGUSR1) - 1)
            return status.split(separator: "\n").contains { line in
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, parts[0] == "SigIgn" || parts[0] == "SigCgt",
                    let mask = UInt64(parts[1].trimmingCharacters(in: .whitespaces), radix: 16) else { return false }
                return mask & bit != 0
            }
        }

        /// `ctl restart frontend` under load in several rooms, handovers off
        /// (what a failed handover falls back to): each frontend in turn
        /// closes its WebSockets with 1012; its clients reconnect and
        /// resume with `after`. At the end every member has every message of
        /// its room exactly once, in order, and every message is stored.
        @Test func aRollingRestartUnderLoadLosesNothing() async throws {
            let server = try await TestServer.start(frontends: 3, environment: Steps.noRateLimits.merging(Self.noHandover) { $1 })
            defer { server.stop() }
            try await Self.waitForFrontends(server, count: 3)
            let before = Set(server.frontendPIDs)
            var members: [ResumingMember] = []
            var senders: [Sender] = []
            var rooms: [(id: String, reader: String, members: [ResumingMember])] = []
            for r in 0..<3 {
                let (room, subs, tokens) = try await server.room(of: 4, prefix: "roll-\(r)", name: "roll \(r)")
                let inRoom = try Self.spread(server, room: room, tokens: tokens, names: subs, over: r == 0 ? 3 : 1)
                members += inRoom
                rooms.append((room, tokens[0], inRoom))
                // Two members of each room send (bounded: at most 300 each).
                senders += (0..<2).map { Sender(server: server, room: room, token: tokens[$0], name: subs[$0], limit: 300, pace: 0.05) }
            }
            let holders = Dictionary(grouping: members) { server.frontendPID(serving: $0.socket) ?? 0 }
            #expect(Set(holders.keys) == before, "room 0 alone has a member on every frontend")

            let readers = ResumingMember.start(members)
            let sending = senders.map { $0.start() }
            try await server.waitUntil(timeout: 20, "load under way") { senders.allSatisfy { $0.sent >= 5 } }
            let answer = try EndToEnd.Supervision.ctl(server, "restart", "frontend")
            #expect(answer["restarted"] as? [String] == ["frontend.0", "frontend.1", "frontend.2"], "\(answer)")
            // A little more load after the last frontend is back, then the senders stop.
            let sentAtEnd = senders.map(\.sent)
            try await server.waitUntil(timeout: 20, "load after the restart") { zip(senders, sentAtEnd).allSatisfy { $0.sent >= $1 + 5 } }
            for sender in senders { sender.finish() }
            for done in sending { done.wait() }
            for sender in senders { #expect(sender.failures.isEmpty, "\(sender.name): \(sender.failures.prefix(3))") }

            var total = 0
            for room in rooms {
                let stored = try await Steps.contents(server, token: room.reader, room: room.id)
                let sent = senders.filter { $0.room == room.id }.flatMap(\.confirmed)
                #expect(Set(stored) == Set(sent) && stored.count == sent.count, "every message sent is stored, once")
                try await ResumingMember.waitUntilAllHave(room.members, stored.count, server: server)
                for member in room.members {
                    #expect(member.contents == stored, "\(member.name): \(member.summary)")
                    #expect(member.liveDuplicates.isEmpty, "\(member.name): \(member.liveDuplicates.prefix(3))")
                    #expect(member.reconnects >= 1, "every frontend restarted, so every member reconnected: \(member.summary)")
                    #expect(member.closeCodes.allSatisfy { $0 == 1012 }, "\(member.name): \(member.summary)")
                }
                total += stored.count
            }
            readers.stop()
            #expect(total == senders.reduce(0) { $0 + $1.sent })
            let rows = try Self.frontendRows(server)
            #expect(rows.count == 3 && rows.allSatisfy { $0["ready"] as? Bool == true && $0["restarts"] as? Int == 0 }, "planned restarts count as none")
            #expect(Set(server.frontendPIDs).isDisjoint(with: before) && server.frontendPIDs.count == 3)
        }

        // MARK: Steps

        /// `ctl restart frontend` closes WebSockets with 1012 instead of handing them over.
        static let noHandover = ["CHAT_FRONTEND_HANDOVER": "false"]

        /// The `frontend.N` rows of `ctl status`.
        static func frontendRows(_ server: TestServer) throws -> [[String: Any]] {
            let status = try TestServer.control(server.dataDir + "/run/control.sock", "status")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any])
            let children = object["children"] as? [[String: Any]] ?? []
            return children.filter { $0["role"] as? String == "frontend" }.sorted { ($0["child"] as? String ?? "") < ($1["child"] as? String ?? "") }
        }

        static func waitForFrontends(_ server: TestServer, count: Int) async throws {
            try await server.waitUntil(timeout: 20, "\(count) frontends ready") {
                let rows = try frontendRows(server)
                return rows.count == count && rows.allSatisfy { $0["ready"] as? Bool == true } && server.frontendPIDs.count == count
            }
        }

        /// One socket per member, spread so that at least `over` frontends
        /// hold one: a member on a frontend that has others reconnects until
        /// that is so (the kernel chooses; bounded).
        static func spread(_ server: TestServer, room: String, tokens: [String], names: [String], over: Int) throws -> [ResumingMember] {
            let members = try zip(names, tokens).map { try ResumingMember(server: server, room: room, token: $1, name: $0) }
            for _ in 0..<100 {
                let holders = Dictionary(grouping: members) { server.frontendPID(serving: $0.socket) ?? 0 }
                if holders.count >= over && holders[0] == nil { return members }
                guard let crowded = holders.max(by: { $0.value.count < $1.value.count })?.value.first else { break }
                try crowded.reopen()
            }
            throw TestServerError(description: "the kernel never spread \(members.count) sockets over \(over) frontends")
        }
    }
}

/// A room member that stays in its room across frontend restarts, as a client
/// should: it reads its WebSocket, and when the socket closes or breaks it
/// reconnects and fetches what it missed with `GET .../messages/?after=<the
/// last id it has>` (docs/api.md), skipping what it already has. Runs on a
/// thread of its own (blocking sockets); read its results after `stop`.
final class ResumingMember: @unchecked Sendable {
    let server: TestServer
    let room: String
    let token: String
    let name: String
    private let lock = NSLock()
    private(set) var socket: WebSocketClient
    private var ids: [String] = []
    private var texts: [String] = []
    private var known = Set<String>()
    /// Message ids delivered live on the current socket.
    private var liveHere = Set<String>()
    private var duplicates: [String] = []
    private var codes: [Int?] = []
    private var reconnected = 0
    private var errors: [String] = []

    init(server: TestServer, room: String, token: String, name: String) throws {
        self.server = server
        self.room = room
        self.token = token
        self.name = name
        socket = try server.webSocket("/ws/chat/\(room)/", token: token)
    }

    /// Before the run: a new socket (to let the kernel pick another frontend).
    func reopen() throws {
        socket.close()
        socket = try server.webSocket("/ws/chat/\(room)/", token: token)
    }

    var contents: [String] { lock.withLock { texts } }
    var liveDuplicates: [String] { lock.withLock { duplicates } }
    /// Close codes of the sockets that ended; nil: broken without a close frame.
    var closeCodes: [Int?] { lock.withLock { codes } }
    var reconnects: Int { lock.withLock { reconnected } }
    var summary: String {
        lock.withLock { "\(texts.count) messages, \(reconnected) reconnects, close codes \(codes), errors \(errors.prefix(2))" }
    }

    /// The members' threads, until `stop`.
    final class Run: @unchecked Sendable {
        private let flag = NSLock()
        private var stopped = false
        private let group = DispatchGroup()
        var isStopped: Bool { flag.withLock { stopped } }

        func stop() {
            flag.withLock { stopped = true }
            group.wait()
        }

        fileprivate func start(_ body: @escaping @Sendable () -> Void) {
            group.enter()
            Thread { body(); self.group.leave() }.start()
        }
    }

    static func start(_ members: [ResumingMember]) -> Run {
        let run = Run()
        for member in members { run.start { member.run(until: run) } }
        return run
    }

    /// Waits until every member has `count` messages (bounded).
    static func waitUntilAllHave(_ members: [ResumingMember], _ count: Int, server: TestServer) async throws {
        do {
            try await server.waitUntil(timeout: 30, "every member to have \(count) messages") {
                members.allSatisfy { $0.contents.count >= count }
            }
        } catch {
            throw TestServerError(description: "\(error): " + members.map { "\($0.name): \($0.summary)" }.joined(separator: "; "))
        }
    }

    private func run(until run: Run) {
        let deadline = Date().addingTimeInterval(120)
        while !run.isStopped && Date() < deadline {
            do {
                guard let frame = try socket.receive(timeout: 0.1) else { continue }
                if frame.opcode == .close {
                    lock.withLock { codes.append(frame.closeCode) }
                    resume(deadline: deadline)
                } else if frame.opcode == .text, let event = try? JSONSerialization.jsonObject(with: Data(frame.payload)) as? [String: Any],
                    event["type"] as? String == "message", let message = event["message"] as? [String: Any] {
                    take(message, live: true)
                }
            } catch {
                lock.withLock { codes.append(nil) }
                resume(deadline: deadline)
            }
        }
    }

    private func take(_ message: [String: Any], live: Bool) {
        guard let id = message["id"] as? String, let content = message["content"] as? String else { return }
        lock.withLock {
            if live && !liveHere.insert(id).inserted { duplicates.append(content) }
            guard known.insert(id).inserted else { return }
            ids.append(id)
            texts.append(content)
        }
    }

    /// A new socket first (live events from then on), then what was missed
    /// before it from the REST history, oldest first.
    private func resume(deadline: Date) {
        socket.abort()
        while Date() < deadline {
            guard let fresh = try? server.webSocket("/ws/chat/\(room)/", token: token) else {
                usleep(50_000)
                continue
            }
            lock.withLock {
                socket = fresh
                liveHere = []
                reconnected += 1
            }
            do {
                for message in try missed() { take(message, live: false) }
            } catch {
                lock.withLock { errors.append("\(error)") }
            }
            return
        }
    }

    /// Messages after the last one this member has, oldest first: pages of
    /// 100 walked down with `before` so that new messages do not shift them.
    private func missed() throws -> [[String: Any]] {
        let after = lock.withLock { ids.last }
        var found: [[String: Any]] = []
        var before: String?
        while true {
            var query = "page_size=100"
            if let after { query += "&after=\(after)" }
            if let before { query += "&before=\(before)" }
            let page = try BlockingHTTP.request(port: server.port, "GET", "/api/chat/rooms/\(room)/messages/?\(query)", token: token)
            guard page.status == 200, let object = try JSONSerialization.jsonObject(with: page.body) as? [String: Any],
                let results = object["results"] as? [[String: Any]] else {
                throw TestServerError(description: "catch-up: \(page.status) \(String(decoding: page.body, as: UTF8.self))")
            }
            found += results
            guard results.count == 100, let oldest = results.last?["id"] as? String else { break }
            before = oldest
        }
        return found.reversed()
    }
}

/// A member sending messages over REST, one after another, each with its
/// `client_msg_id`: one whose answer is lost (its frontend died or was
/// restarting) is sent again, and stored once (`200` for a repeat).
final class Sender: @unchecked Sendable {
    let server: TestServer
    let room: String
    let token: String
    let name: String
    let limit: Int
    let pace: Double
    private let lock = NSLock()
    private var done: [String] = []
    private var failed: [String] = []
    private var finishing = false

    init(server: TestServer, room: String, token: String, name: String, limit: Int, pace: Double) {
        (self.server, self.room, self.token, self.name, self.limit, self.pace) = (server, room, token, name, limit, pace)
    }

    var sent: Int { lock.withLock { done.count } }
    /// Contents the server confirmed (201 or 200), in order.
    var confirmed: [String] { lock.withLock { done } }
    var failures: [String] { lock.withLock { failed } }
    func finish() { lock.withLock { finishing = true } }

    /// Sends on a thread of its own; the group is left when it is done.
    func start() -> DispatchGroup {
        let group = DispatchGroup()
        group.enter()
        Thread {
            for i in 0..<self.limit where !self.lock.withLock({ self.finishing }) {
                self.send("\(self.name)#\(i)")
                usleep(UInt32(self.pace * 1_000_000))
            }
            group.leave()
        }.start()
        return group
    }

    private func send(_ content: String) {
        let body = Data(#"{"content":"\#(content)","client_msg_id":"\#(content)"}"#.utf8)
        var last = ""
        for _ in 0..<200 {
            if let answer = try? BlockingHTTP.request(port: server.port, "POST", "/api/chat/rooms/\(room)/messages/", token: token, body: body) {
                if answer.status == 201 || answer.status == 200 {
                    lock.withLock { done.append(content) }
                    return
                }
                last = "\(answer.status) \(String(decoding: answer.body, as: UTF8.self))"
                // 503: a worker did not answer in time; anything else is a failure.
                guard answer.status == 503 else { break }
            }
            usleep(50_000)
        }
        lock.withLock { failed.append("\(content): \(last)") }
    }
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`),
/// blocking: what the client threads above use.
enum BlockingHTTP {
    static func request(port: Int, _ method: String, _ path: String, token: String, body: Data? = nil) throws -> (status: Int, body: Data) {
        let connection = try RawConnection(port: port)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAuthorization: Bearer \(token)\r\nConnection: close\r\n"
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        connection.send(Array((head + "\r\n").utf8) + (body.map(Array.init) ?? []))
        let outcome = connection.read(timeout: 20)
        guard outcome.closed, let status = outcome.status,
            let end = (0..<max(0, outcome.bytes.count - 3)).first(where: { outcome.bytes[$0..<$0 + 4].elementsEqual([13, 10, 13, 10]) }) else {
            throw TestServerError(description: "no whole response to \(method) \(path)")
        }
        let headers = String(decoding: outcome.bytes[..<end], as: UTF8.self).lowercased()
        let rest = Array(outcome.bytes[(end + 4)...])
        return (status, Data(headers.contains("transfer-encoding: chunked") ? dechunk(rest) : rest))
    }

    /// The body of a chunked transfer (RFC 9112 7.1), no trailers.
    static func dechunk(_ bytes: [UInt8]) -> [UInt8] {
        var body: [UInt8] = []
        var index = 0
        while let lineEnd = (index..<max(index, bytes.count - 1)).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }),
            let size = Int(String(decoding: bytes[index..<lineEnd], as: UTF8.self).split(separator: ";")[0], radix: 16), size > 0,
            lineEnd + 2 + size <= bytes.count {
            body += bytes[(lineEnd + 2)..<(lineEnd + 2 + size)]
            index = lineEnd + 2 + size + 2
        }
        return body
    }
}
