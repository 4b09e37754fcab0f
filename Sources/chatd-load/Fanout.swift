import ChatCore
import ChatTesting
import Foundation

/// The member sockets of one fan-out room, read together by one poll loop.
final class SocketSet {
    let clients: [WebSocketClient]
    private var fds: [pollfd]

    init(_ clients: [WebSocketClient]) {
        self.clients = clients
        fds = clients.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
    }

    /// Waits until a socket is readable or monotonic time `until` (ns),
    /// then calls `onText` with every text frame that has arrived.
    func pump(until: UInt64, _ onText: (String) -> Void) throws {
        guard waitReadable(&fds, until: until) > 0 else { return }
        for index in fds.indices where fds[index].revents != 0 {
            while let frame = try clients[index].receive(timeout: 0) {
                if frame.opcode == .text { onText(frame.text) }
            }
        }
    }

    func pump(timeoutMilliseconds: Int, _ onText: (String) -> Void) throws {
        try pump(until: now() + UInt64(timeoutMilliseconds) * 1_000_000, onText)
    }
}

/// A server with a public room of `count` member sockets (each its own
/// user, joined on connect) and its owner's socket, the joins settled.
func fanoutRoom(members count: Int, frontends: Int = 1) async throws -> (server: TestServer, members: SocketSet, sender: WebSocketClient) {
    // The members and the owner: past the default limit of 1,000 (issue 10) at §3's size.
    let limit = ["CHAT_MAX_PARTICIPANTS": String(max(1_000, count + 1))]
    let server = try await TestServer.start(storeWorkers: 1, frontends: frontends, environment: loadEnvironment.merging(limit) { $1 })
    let owner = try await server.token(sub: "owner")
    let created = try await server.request("POST", "/api/chat/rooms/", token: owner, json: ["name": "fan-out", "room_type": "public"])
    guard let room = created.object["id"] as? String else { throw TestServerError(description: created.text) }
    var clients: [WebSocketClient] = []
    for i in 0..<count {
        clients.append(try server.webSocket("/ws/chat/\(room)/", token: try await server.token(sub: "member-\(i)")))
    }
    let sender = try server.webSocket("/ws/chat/\(room)/", token: owner)
    let members = SocketSet(clients)
    // Wait for the joins to settle: the last member's user_joined reached member 0.
    let lastJoin = IDs.userID(forSubject: "member-\(count - 1)")
    var settled = false
    let settleDeadline = now() + 60_000_000_000
    while !settled && now() < settleDeadline {
        try members.pump(timeoutMilliseconds: 100) { text in if text.contains(lastJoin) { settled = true } }
    }
    // Drain the rest of the join storm.
    try members.pump(timeoutMilliseconds: 500) { _ in }
    return (server, members, sender)
}

/// The number in a fan-out message's content, `t<n> …`.
func fanoutTag(_ text: String) -> Int? {
    guard let range = text.range(of: "\"content\":\"t"), let end = text[range.upperBound...].firstIndex(of: " ") else { return nil }
    return Int(text[range.upperBound..<end])
}

/// Fan-out of one public room with `members` sockets. Phase 1: latency,
/// one message every 20 ms, time from send to the last member's delivery.
/// Phase 2: throughput, a window of messages in flight, each retired when
/// every member has it.
func fanout(members count: Int, messages: Int, window: Int, frontends: Int = 1) async throws {
    let (server, members, sender) = try await fanoutRoom(members: count, frontends: frontends)
    defer { server.stop() }
    let probes = 200
    var sentAt = [UInt64](repeating: 0, count: probes)
    var lastAt = [UInt64](repeating: 0, count: probes)
    var received = [Int](repeating: 0, count: probes)
    for n in 0..<probes {
        sentAt[n] = now()
        try sender.send(text: #"{"type":"message","content":"t\#(n) probe"}"#)
        let until = now() + 20_000_000
        while now() < until || received[n] < count {
            try members.pump(timeoutMilliseconds: 5) { text in
                if let k = fanoutTag(text), k < probes { received[k] += 1; lastAt[k] = now() }
            }
            if now() > until + 5_000_000_000 { throw TestServerError(description: "probe \(n): \(received[n])/\(count) delivered") }
        }
        while (try? sender.receive(timeout: 0)) != nil {}
    }
    let latencies = (0..<probes).map { Double(lastAt[$0] - sentAt[$0]) / 1e6 }.sorted()
    print(String(format: "fan-out to %d members: send → last delivery p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d messages, one per 20 ms)",
                 count, percentile(latencies, 0.5), percentile(latencies, 0.99), latencies.last ?? 0, probes))
    try fanoutSustained(server, members, sender, firstTag: probes, messages: messages, window: window)
    print(String(format: "summary: fan-out to %d members, one per 20 ms: send → last delivery p50 %.2f ms, p99 %.2f ms",
                 count, percentile(latencies, 0.5), percentile(latencies, 0.99)))
}

/// Phase 2 of `fanout`: the sustained rate with `window` messages in flight.
func fanoutSustained(_ server: TestServer, _ members: SocketSet, _ sender: WebSocketClient, firstTag: Int, messages: Int, window: Int) throws {
    let count = members.clients.count
    var deliveredTo = [Int](repeating: 0, count: messages)
    var sent = 0, done = 0
    let meter = CPUMeter(server)
    let start = now()
    while done < messages {
        while sent < messages && sent - done < window {
            try sender.send(text: #"{"type":"message","content":"t\#(firstTag + sent) load"}"#)
            sent += 1
        }
        try members.pump(timeoutMilliseconds: 100) { text in
            if let k = fanoutTag(text), k >= firstTag {
                deliveredTo[k - firstTag] += 1
                if deliveredTo[k - firstTag] == count { done += 1 }
            }
        }
        // The sender reads its own echoes so it is not cut off as a slow client.
        while (try? sender.receive(timeout: 0)) != nil {}
        if Double(now() - start) / 1e9 > 120 { throw TestServerError(description: "sustained phase stalled at \(done)/\(messages)") }
    }
    let seconds = Double(now() - start) / 1e9
    print(String(format: "sustained: %d messages to %d members in %.2f s = %.0f messages/s, %.0f deliveries/s (window %d)",
                 messages, count, seconds, Double(messages) / seconds, Double(messages * count) / seconds, window))
    print("  cpu: " + CPUMeter.breakdown(meter.used(), per: messages * count, unit: "delivery", seconds: seconds))
}

/// Paced fan-out: `messages` messages at `rate` a second, each sent at its
/// scheduled time whatever is still undelivered; latency of every delivery
/// from the scheduled send (so a stall counts against every message behind it).
func fanoutPaced(members count: Int, rate: Double, messages: Int, frontends: Int = 1) async throws {
    let (server, members, sender) = try await fanoutRoom(members: count, frontends: frontends)
    defer { server.stop() }
    let interval = 1e9 / rate
    let start = now() + 10_000_000
    func due(_ n: Int) -> UInt64 { start + UInt64(Double(n) * interval) }
    var latencies: [Double] = []
    var lastArrival = [UInt64](repeating: 0, count: messages)
    var sent = 0, delivered = 0
    let meter = CPUMeter(server)
    while delivered < messages * count {
        while sent < messages && due(sent) <= now() {
            try sender.send(text: #"{"type":"message","content":"t\#(sent) paced"}"#)
            sent += 1
        }
        try members.pump(until: sent < messages ? due(sent) : now() + 100_000_000) { text in
            guard let k = fanoutTag(text), k < messages else { return }
            let arrived = now()
            latencies.append(Double(arrived - due(k)) / 1e6)
            lastArrival[k] = arrived
            delivered += 1
        }
        while (try? sender.receive(timeout: 0)) != nil {}
        if now() > due(messages) + 30_000_000_000 { throw TestServerError(description: "paced fan-out stalled at \(delivered)/\(messages * count)") }
    }
    let seconds = Double(now() - start) / 1e9
    let cpu = meter.used()
    latencies.sort()
    let last = (0..<messages).map { Double(lastArrival[$0] - due($0)) / 1e6 }.sorted()
    print("  cpu: " + CPUMeter.breakdown(cpu, per: messages * count, unit: "delivery", seconds: seconds))
    print(String(format: "summary: fan-out to %d members paced at %.0f msg/s (%d messages): latency from scheduled send p50 %.2f ms, p99 %.2f ms, max %.2f ms; to the last member p50 %.2f ms, p99 %.2f ms; server CPU %.0f µs/msg",
                 count, rate, messages, percentile(latencies, 0.5), percentile(latencies, 0.99), latencies.last ?? 0,
                 percentile(last, 0.5), percentile(last, 0.99), CPUMeter.serverMicroseconds(cpu, per: messages)))
}
