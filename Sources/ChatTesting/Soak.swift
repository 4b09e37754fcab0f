import ChatCore
import Foundation

/// Bounded memory under repeated load, shared by the soak end-to-end test and
/// `chatd-load --bursts`: the same sockets send burst after burst (each
/// member keeping at most `window` of its own messages unconfirmed) while,
/// optionally, the search worker is stopped with SIGSTOP; after each burst
/// the server idles and every process's resident memory is read.
public enum Soak {
    public struct Options: Sendable {
        public var rooms = 4
        public var perRoom = 4
        /// Messages each member sends per burst.
        public var messagesPerBurst = 200
        public var window = 50
        public var bursts = 3
        /// SIGSTOP the search worker for the bursts, SIGCONT it after.
        public var stopSearch = true
        /// Idle time after a burst before memory is read (the broker trims
        /// the heap in the first quiet second).
        public var settleSeconds = 2.5

        public init() {}
    }

    /// One burst: how long it took and each process's RSS after it settled.
    public struct Burst: Sendable {
        public var seconds: Double
        public var messages: Int
        public var rss: [(process: String, bytes: Int)]
    }

    public struct Outcome: Sendable {
        public var idleRSS: [(process: String, bytes: Int)] = []
        public var bursts: [Burst] = []
        /// Messages whose sender got their `message` event back (acknowledged).
        public var confirmed = 0
        /// Of those, how many are in history.
        public var confirmedStored = 0
        /// Per member, messages of its room it did not get live.
        public var missingDeliveries = 0
        public var clientErrors: [String] = []
        public var searchStopped = false
        /// The stopped search worker found the last burst's last message.
        public var searchCaughtUpSeconds: Double?

        public func peak(_ process: String) -> Int {
            bursts.flatMap(\.rss).filter { $0.process == process }.map(\.bytes).max() ?? 0
        }

        public var summary: String {
            var lines: [String] = []
            lines.append("idle: " + Self.format(idleRSS))
            for (index, burst) in bursts.enumerated() {
                lines.append(String(format: "burst %d: %d messages in %.2f s (%.0f/s); after: ", index + 1, burst.messages, burst.seconds,
                                    Double(burst.messages) / burst.seconds) + Self.format(burst.rss))
            }
            lines.append("confirmed \(confirmed), in history \(confirmedStored), missing live deliveries \(missingDeliveries), client errors \(clientErrors.count)")
            if searchStopped {
                lines.append(searchCaughtUpSeconds.map { String(format: "search caught up %.2f s after SIGCONT", $0) } ?? "search did NOT catch up")
            }
            return lines.joined(separator: "\n")
        }

        static func format(_ rss: [(process: String, bytes: Int)]) -> String {
            rss.map { "\($0.process) \($0.bytes >> 20) MB" }.joined(separator: ", ")
        }
    }

    /// A member socket: sends its share of a burst, counts what arrives.
    final class Member: @unchecked Sendable {
        let socket: WebSocketClient
        let tag: String
        var confirmedTexts: [String] = []
        var receivedThisBurst = 0
        var error: String?

        init(socket: WebSocketClient, tag: String) {
            self.socket = socket
            self.tag = tag
        }

        /// Sends `count` messages (at most `window` unconfirmed) and reads
        /// until `expected` messages of the room arrived in this burst.
        func burst(_ number: Int, count: Int, expected: Int, window: Int) {
            var sent = 0
            var confirmed = 0
            receivedThisBurst = 0
            let mine = "\(tag) b\(number) "
            let marker = #""content":"\#(mine)"#
            let burstMarker = " b\(number) "
            do {
                while receivedThisBurst < expected {
                    while sent < count && sent - confirmed < window {
                        // The key word makes each message findable by search.
                        try socket.send(text: #"{"type":"message","content":"\#(mine)\#(sent) \#(Soak.key(tag, number, sent)) filler text of a typical chat message"}"#)
                        sent += 1
                    }
                    guard let frame = try socket.receive(timeout: 30) else {
                        error = "\(tag): burst \(number) timed out with \(receivedThisBurst)/\(expected) received"
                        return
                    }
                    guard frame.opcode == .text else { continue }
                    let text = frame.text
                    guard text.hasPrefix(#"{"type":"message""#) else {
                        if text.contains(#""type":"error""#) { error = "\(tag): \(text)"; return }
                        continue
                    }
                    guard text.contains(burstMarker) else { continue }
                    receivedThisBurst += 1
                    if let range = text.range(of: marker) {
                        confirmed += 1
                        let rest = text[range.upperBound...]
                        confirmedTexts.append(mine + String(rest.prefix { $0 != " " }))
                    }
                }
            } catch {
                self.error = "\(tag): \(error)"
            }
        }
    }

    /// A word unique to one message (search finds it once indexed).
    static func key(_ tag: String, _ burst: Int, _ index: Int) -> String { "k\(tag)b\(burst)n\(index)" }

    /// Resident memory of a process (VmRSS), bytes.
    public static func rss(_ pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    /// The server's processes by role.
    public static func processes(_ server: TestServer) -> [(String, Int32)] {
        var list: [(String, Int32)] = [("supervisor", server.process.processIdentifier)]
        list += server.childPIDs(matching: "frontend").map { ("frontend", $0) }
        list += server.childPIDs(matching: "worker --role store").enumerated().map { ("store.\($0.offset)", $0.element) }
        list += server.childPIDs(matching: "worker --role search").map { ("search", $0) }
        list += server.childPIDs(matching: "worker --role receipts").map { ("receipts", $0) }
        list += server.childPIDs(matching: "worker --role files").map { ("files", $0) }
        return list
    }

    static func readRSS(_ server: TestServer) -> [(process: String, bytes: Int)] {
        processes(server).map { ($0.0, rss($0.1)) }
    }

    public static func run(_ server: TestServer, _ options: Options) async throws -> Outcome {
        var members: [Member] = []
        var rooms: [(id: String, reader: String, members: [Member])] = []
        for r in 0..<options.rooms {
            let (room, _, tokens) = try await server.room(of: options.perRoom, prefix: "soak-\(r)", name: "soak \(r)")
            var inRoom: [Member] = []
            for (index, token) in tokens.enumerated() {
                inRoom.append(Member(socket: try server.webSocket("/ws/chat/\(room)/", token: token), tag: "r\(r)m\(index)"))
            }
            members += inRoom
            rooms.append((room, tokens[0], inRoom))
        }
        var outcome = Outcome()
        try await Task.sleep(for: .seconds(options.settleSeconds))
        outcome.idleRSS = readRSS(server)

        var stopped: Int32?
        if options.stopSearch {
            guard let search = server.childPIDs(matching: "worker --role search").first else { throw TestServerError(description: "no search worker") }
            kill(search, SIGSTOP)
            stopped = search
            outcome.searchStopped = true
        }
        defer { if let stopped { kill(stopped, SIGCONT) } }

        let expected = options.perRoom * options.messagesPerBurst
        for number in 1...options.bursts {
            let start = Date()
            let group = DispatchGroup()
            for member in members {
                group.enter()
                Thread {
                    member.burst(number, count: options.messagesPerBurst, expected: expected, window: options.window)
                    group.leave()
                }.start()
            }
            group.wait()
            let seconds = Date().timeIntervalSince(start)
            try await Task.sleep(for: .seconds(options.settleSeconds))
            outcome.bursts.append(Burst(seconds: seconds, messages: members.count * options.messagesPerBurst, rss: readRSS(server)))
            outcome.missingDeliveries += members.reduce(0) { $0 + max(0, expected - $1.receivedThisBurst) }
            if members.contains(where: { $0.error != nil }) { break }
        }
        outcome.clientErrors = members.compactMap(\.error)

        // Every acknowledged message is in history.
        for room in rooms {
            var contents = Set<String>()
            var page = 1
            while true {
                let response = try await server.request("GET", "/api/chat/rooms/\(room.id)/messages/?page_size=100&page=\(page)", token: room.reader)
                for message in response.object["results"] as? [[String: Any]] ?? [] {
                    if let content = message["content"] as? String {
                        contents.insert(content.split(separator: " ").prefix(3).joined(separator: " "))
                    }
                }
                if response.object["next"] is NSNull || response.object["next"] == nil { break }
                page += 1
            }
            for member in room.members {
                outcome.confirmed += member.confirmedTexts.count
                outcome.confirmedStored += member.confirmedTexts.filter { contents.contains($0) }.count
            }
        }

        if let search = stopped {
            // The last message sent, found by search once the worker runs again.
            let word = key(rooms[0].members[0].tag, outcome.bursts.count, options.messagesPerBurst - 1)
            kill(search, SIGCONT)
            stopped = nil
            let resumed = Date()
            do {
                try await server.waitUntil(timeout: 60, "search to find the last message") {
                    let response = try await server.request("GET", "/api/chat/search/messages/?q=\(word)", token: rooms[0].reader)
                    return ((response.json as? [[String: Any]]) ?? []).contains { ($0["content"] as? String)?.contains(word) == true }
                }
                outcome.searchCaughtUpSeconds = Date().timeIntervalSince(resumed)
            } catch {}
        }
        for member in members { member.socket.close() }
        return outcome
    }
}
