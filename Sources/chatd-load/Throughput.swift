import ChatCore
import ChatTesting
import Foundation

/// What one throughput run measured.
struct ThroughputResult {
    var seconds: Double
    var messages: Int
    var deliveries: Int
    var stored: Int
    var cpu: [(name: String, seconds: Double)]
    /// Why `cpu` holds only the load client (`--target` without readable pids); nil: it was read.
    var cpuUnread: String?
    /// Paced runs: every delivery's latency from its scheduled send, ms, sorted.
    var latencies: [Double]
}

/// Rooms of `members` sockets (user `load-<k>` is socket k of every room),
/// the first `senders` of each sending `messages` messages.
func seedRooms(_ targets: Targets, _ options: Options) async throws -> (members: [Member], rooms: [String], token: String) {
    let users = try await (0..<options.membersPerRoom).asyncMap { k in
        let token = try await targets.token(sub: "load-\(k)")
        // The first request makes the user; a refusal (a deployment's other secret) ends the run here.
        let made = try await targets.request("GET", "/api/chat/rooms/", token: token)
        guard made.status == 200 else { throw TestServerError(description: "GET /api/chat/rooms/ as load-\(k): \(made.status) \(made.text)") }
        return token
    }
    let others = (1..<options.membersPerRoom).map { IDs.userID(forSubject: "load-\($0)") }
    var members: [Member] = []
    var rooms: [String] = []
    for r in 0..<options.rooms {
        let created = try await targets.request("POST", "/api/chat/rooms/", token: users[0], json: ["name": "load \(r)", "participant_ids": others])
        guard let room = created.object["id"] as? String else { throw TestServerError(description: "room: \(created.text)") }
        rooms.append(room)
        for k in 0..<options.membersPerRoom {
            let socket = try targets.webSocket("/ws/chat/\(room)/", token: users[k], room: r, member: k)
            let member = Member(
                socket: socket, toSend: k < options.senders ? options.messages : 0, expected: options.messages * options.senders,
                window: options.window, tag: "r\(r)s\(k)")
            member.contentBytes = options.messageBytes
            members.append(member)
        }
    }
    return (members, rooms, users[0])
}

/// Paced mode: sender g of G sends message n at start + (n + g/G) × G/rate,
/// so the sends of all senders together are evenly spaced at `rate` a second.
func pace(_ members: [Member], rate: Double, start: UInt64) {
    for member in members { member.measuresLatency = true }
    let senders = members.filter { $0.toSend > 0 }
    let interval = Double(senders.count) / rate * 1e9
    for (g, member) in senders.enumerated() {
        let offset = Double(g) / Double(senders.count)
        member.schedule = { n in start + UInt64((Double(n) + offset) * interval) }
    }
}

func measure(_ options: Options) async throws -> ThroughputResult {
    if let urls = options.targetURLs {
        return try await measure(try await Targets(urls: urls, split: options.split, controls: options.controlPaths), options)
    }
    let server = try await TestServer.start(storeWorkers: options.storeWorkers, frontends: options.frontends ?? 1, environment: loadEnvironment)
    defer { server.stop() }
    return try await measure(await Targets(server), options)
}

/// One run on `targets`: seed, send, wait for every delivery, count what is stored.
func measure(_ targets: Targets, _ options: Options) async throws -> ThroughputResult {
    let (members, rooms, token) = try await seedRooms(targets, options)
    let meter = CPUMeter(processes: (try? targets.processes.get()) ?? [])
    let start = now()
    // Paced sends begin 50 ms from now, once every thread has started.
    if let rate = options.rate { pace(members, rate: rate, start: start + 50_000_000) }
    if targets.local == nil {
        let deadline = start + UInt64(min(options.runDeadline, 1e9) * 1e9)
        for member in members { member.runDeadline = deadline }
    }
    if let words = options.duringRun, let server = targets.local {
        Thread {
            usleep(1_000_000)
            let began = Date()
            let answer = (try? server.ctl(words)) ?? "failed"
            print(String(format: "  chatd ctl %@ took %.2f s: %@", words.joined(separator: " "), Date().timeIntervalSince(began), answer.trimmingCharacters(in: .whitespacesAndNewlines)))
        }.start()
    }
    runAllIgnoringFailures(members)
    let seconds = Double(now() - start) / 1e9
    let cpu = meter.used()
    let cpuUnread: String? = if case .failure(let why) = targets.processes { why.description } else { nil }
    if let failure = members.compactMap(\.failure).first { throw TestServerError(description: failure) }
    var stored = 0
    for room in rooms {
        let page = try await targets.request("GET", "/api/chat/rooms/\(room)/messages/?page_size=1", token: token)
        stored += page.object["count"] as? Int ?? 0
    }
    let messages = options.rooms * options.senders * options.messages
    // Exactly once: a member that got a message twice finished early and
    // hides one it never got.
    let duplicates = members.reduce(0) { $0 + $1.duplicates }
    if duplicates > 0 { throw TestServerError(description: "\(duplicates) duplicate deliveries") }
    if stored != messages, let server = targets.local {
        // Keep the evidence: what the server logged beyond info.
        let notable = server.log.split(separator: "\n").filter { !$0.contains(" info ") }
        print("server log (\(notable.count) lines beyond info):\n" + notable.suffix(30).joined(separator: "\n"))
    }
    return ThroughputResult(
        seconds: seconds, messages: messages, deliveries: members.reduce(0) { $0 + $1.received }, stored: stored, cpu: cpu,
        cpuUnread: cpuUnread, latencies: members.flatMap(\.latencies).sorted())
}

/// The default mode: `--runs` runs, each on a fresh server, and their
/// medians. Closed loop as fast as the window allows, or paced with `--rate`.
func throughputRuns(_ options: Options) async {
    var results: [ThroughputResult] = []
    for run in 1...options.runs {
        let result = await orExit { try await measure(options) }
        results.append(result)
        print("run \(run): " + describe(result, options))
        // Where the time goes: CPU per message of each process, and its share of a core.
        if let unread = result.cpuUnread {
            print("  cpu: not read (\(unread))")
        } else {
            print("  cpu: " + CPUMeter.breakdown(result.cpu, per: result.messages, unit: "msg", seconds: result.seconds))
        }
        if result.stored != result.messages { print("MISMATCH: stored \(result.stored) of \(result.messages)"); exit(1) }
    }
    let shape = String(format: "%d rooms × %d members, %d sender%@/room, %d-byte messages, ", options.rooms, options.membersPerRoom,
                       options.senders, options.senders == 1 ? "" : "s", options.messageBytes)
        + (options.rate.map { String(format: "paced at %.0f msg/s", $0) } ?? "window \(options.window)")
        + (options.targetURLs.map { String(format: ", %d target%@%@", $0.count, $0.count == 1 ? "" : "s", options.split ? " split" : "") }
            ?? ", store workers \(options.storeWorkers)")
    let rate = median(results.map { Double($0.messages) / $0.seconds })
    let deliveries = median(results.map { Double($0.deliveries) / $0.seconds })
    let cpu = median(results.map { CPUMeter.serverMicroseconds($0.cpu, per: $0.messages) })
    var summary = String(format: "summary: %@: %.0f msg/s persisted and delivered, %.0f deliveries/s", shape, rate, deliveries)
    summary += results.contains { $0.cpuUnread != nil } ? ", server CPU not read" : String(format: ", server CPU %.0f µs/msg", cpu)
    if options.rate != nil {
        summary += String(format: ", latency from scheduled send p50 %.2f ms, p99 %.2f ms, max %.2f ms",
                          median(results.map { percentile($0.latencies, 0.5) }), median(results.map { percentile($0.latencies, 0.99) }),
                          median(results.map { $0.latencies.last ?? 0 }))
    }
    print(summary + " (median of \(results.count) run\(results.count == 1 ? "" : "s"))")
}

/// One run's line: counts, rates and, when paced, latencies.
func describe(_ result: ThroughputResult, _ options: Options) -> String {
    var line = String(format: "%d messages (%d stored) in %.2f s = %.0f messages/s persisted and delivered, %.0f deliveries/s",
                      result.messages, result.stored, result.seconds, Double(result.messages) / result.seconds,
                      Double(result.deliveries) / result.seconds)
    if result.cpuUnread == nil {
        line += String(format: ", server CPU %.0f µs/msg", CPUMeter.serverMicroseconds(result.cpu, per: result.messages))
    }
    if options.rate != nil {
        let l = result.latencies
        line += String(format: ", latency p50 %.2f ms, p99 %.2f ms, max %.2f ms over %d deliveries",
                       percentile(l, 0.5), percentile(l, 0.99), l.last ?? 0, l.count)
    }
    return line
}
