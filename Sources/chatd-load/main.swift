import ChatCore
import ChatTesting
import Foundation

/// chatd-load: starts a real `chatd serve` (temporary data, free port), fills
/// rooms with WebSocket clients and measures messages sent, persisted and
/// delivered per second. Every loop is bounded by `--messages`.
///
///     chatd-load --store-workers 2 --rooms 8 --senders 4 --messages 2000 --window 200
struct Options {
    var storeWorkers = 1
    var rooms = 8
    var senders = 4
    var messages = 1000
    var window = 100
    var runs = 1

    init(_ arguments: [String]) {
        var i = 1
        while i < arguments.count {
            let value = i + 1 < arguments.count ? Int(arguments[i + 1]) : nil
            switch (arguments[i], value) {
            case ("--store-workers", let v?): storeWorkers = v
            case ("--rooms", let v?): rooms = v
            case ("--senders", let v?): senders = v
            case ("--messages", let v?): messages = v
            case ("--window", let v?): window = v
            case ("--runs", let v?): runs = v
            default:
                FileHandle.standardError.write(Data("usage: chatd-load [--store-workers N] [--rooms N] [--senders N] [--messages N per sender] [--window N] [--runs N]\n".utf8))
                exit(2)
            }
            i += 2
        }
    }
}

/// One client socket: sends its share with at most `window` of its own
/// messages unconfirmed, and counts every message event of its room.
final class Member: @unchecked Sendable {
    let socket: WebSocketClient
    let toSend: Int
    let expected: Int
    let window: Int
    let tag: String
    var received = 0
    var failure: String?

    init(socket: WebSocketClient, toSend: Int, expected: Int, window: Int, tag: String) {
        self.socket = socket
        self.toSend = toSend
        self.expected = expected
        self.window = window
        self.tag = tag
    }

    func run() {
        var sent = 0
        var confirmed = 0
        let payload = String(repeating: "x", count: 120)
        do {
            while received < expected {
                while sent < toSend && sent - confirmed < window {
                    try socket.send(text: #"{"type":"message","content":"\#(tag) \#(sent) \#(payload)"}"#)
                    sent += 1
                }
                guard let frame = try socket.receive(timeout: 30) else {
                    failure = "\(tag): timed out with \(received)/\(expected) received"
                    return
                }
                guard frame.opcode == .text else { continue }
                let text = frame.text
                guard text.hasPrefix(#"{"type":"message""#) else {
                    if text.contains(#""type":"error""#) { failure = "\(tag): \(text)"; return }
                    continue
                }
                received += 1
                if text.contains(#""content":"\#(tag) "#) { confirmed += 1 }
            }
        } catch {
            failure = "\(tag): \(error)"
        }
    }
}

/// CPU seconds (user + system) a process has used so far.
func cpuSeconds(_ pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
    // Fields 14 and 15 of proc(5), counted from the state field (3).
    let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
    return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// The processes whose CPU time we report, by role.
func processes(_ server: TestServer) -> [(String, Int32)] {
    var list: [(String, Int32)] = [("supervisor+broker", server.process.processIdentifier)]
    list += server.childPIDs(matching: "frontend").map { ("frontend", $0) }
    list += server.childPIDs(matching: "worker --role store").map { ("store worker", $0) }
    list.append(("load client", getpid()))
    return list
}

func measure(_ options: Options) async throws -> (seconds: Double, messages: Int, deliveries: Int, stored: Int, cpu: [(String, Double)]) {
    let server = try await TestServer.start(storeWorkers: options.storeWorkers, environment: ["CHAT_LOG_LEVEL": "warning"])
    defer { server.stop() }
    var members: [Member] = []
    var roomIDs: [String] = []
    var tokens: [String] = []
    for s in 0..<options.senders {
        let token = try await server.token(sub: "load-\(s)")
        _ = try await server.request("GET", "/api/chat/rooms/", token: token)
        tokens.append(token)
    }
    let others = (1..<options.senders).map { IDs.userID(forSubject: "load-\($0)") }
    for r in 0..<options.rooms {
        let created = try await server.request("POST", "/api/chat/rooms/", token: tokens[0], json: ["name": "load \(r)", "participant_ids": others])
        guard let room = created.object["id"] as? String else { throw TestServerError(description: "room: \(created.text)") }
        roomIDs.append(room)
        for s in 0..<options.senders {
            let socket = try server.webSocket("/ws/chat/\(room)/", token: tokens[s])
            members.append(Member(socket: socket, toSend: options.messages, expected: options.messages * options.senders, window: options.window, tag: "r\(r)s\(s)"))
        }
    }
    let watched = processes(server)
    let cpuBefore = watched.map { cpuSeconds($0.1) }
    let start = Date()
    let group = DispatchGroup()
    for member in members {
        group.enter()
        Thread { member.run(); group.leave() }.start()
    }
    group.wait()
    let seconds = Date().timeIntervalSince(start)
    let cpu = zip(watched, cpuBefore).map { ($0.0.0, cpuSeconds($0.0.1) - $0.1) }
    if let failure = members.compactMap(\.failure).first { throw TestServerError(description: failure) }
    var stored = 0
    for room in roomIDs {
        let page = try await server.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=1", token: tokens[0])
        stored += page.object["count"] as? Int ?? 0
    }
    let messages = options.rooms * options.senders * options.messages
    return (seconds, messages, members.reduce(0) { $0 + $1.received }, stored, cpu)
}

let options = Options(CommandLine.arguments)
var rates: [Double] = []
for run in 1...options.runs {
    let result: (seconds: Double, messages: Int, deliveries: Int, stored: Int, cpu: [(String, Double)])
    do {
        result = try await measure(options)
    } catch {
        FileHandle.standardError.write(Data("chatd-load: \(error)\n".utf8))
        exit(1)
    }
    let rate = Double(result.messages) / result.seconds
    rates.append(rate)
    print(String(format: "run %d: %d messages (%d stored) in %.2f s = %.0f messages/s persisted and delivered, %.0f deliveries/s",
                 run, result.messages, result.stored, result.seconds, rate, Double(result.deliveries) / result.seconds))
    // Where the time goes: CPU per message of each process, and its share of a core.
    let breakdown = result.cpu.map { name, seconds in
        String(format: "%@ %.1f µs/msg (%.0f%%)", name, seconds / Double(result.messages) * 1e6, seconds / result.seconds * 100)
    }
    print("  cpu: " + breakdown.joined(separator: ", "))
    if result.stored != result.messages { print("MISMATCH: stored \(result.stored) of \(result.messages)"); exit(1) }
}
let sorted = rates.sorted()
print(String(format: "median: %.0f messages/s over %d runs (store workers: %d, rooms: %d, senders/room: %d, window: %d)",
             sorted[sorted.count / 2], sorted.count, options.storeWorkers, options.rooms, options.senders, options.window))
