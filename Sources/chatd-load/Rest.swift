import ChatCore
import ChatTesting
import Foundation

/// The REST benchmark's data: user `bench` in 101 rooms, 100 with one
/// message each and one of `bigRoom` messages (sent over WebSockets by 4
/// writers). Returns the token and the URLs wrk loads, by endpoint name.
func seedRest(_ server: TestServer, bigRoom: Int) async throws -> [String: String] {
    let token = try await server.token(sub: "bench", name: "Bench", expiresIn: 86_400)
    let writers = try await (0..<4).asyncMap { try await server.token(sub: "writer-\($0)", expiresIn: 86_400) }
    for writer in writers { _ = try await server.request("GET", "/api/chat/rooms/", token: writer) }
    for r in 0..<100 {
        let room = try await server.request("POST", "/api/chat/rooms/", token: token, json: ["name": "room \(r)"])
        guard let id = room.object["id"] as? String else { throw TestServerError(description: room.text) }
        _ = try await server.request("POST", "/api/chat/rooms/\(id)/messages/", token: token, json: ["content": "hello \(r)"])
    }
    let big = try await server.request("POST", "/api/chat/rooms/", token: token, json: [
        "name": "big", "participant_ids": (0..<4).map { IDs.userID(forSubject: "writer-\($0)") },
    ])
    guard let bigID = big.object["id"] as? String else { throw TestServerError(description: big.text) }
    let share = bigRoom / 4
    let members = try writers.enumerated().map { index, writer in
        Member(socket: try server.webSocket("/ws/chat/\(bigID)/", token: writer), toSend: share, expected: share * 4, window: 200, tag: "w\(index)")
    }
    try runAll(members)
    // The cursor: the message in the middle of the room.
    let middle = try await server.request("GET", "/api/chat/rooms/\(bigID)/messages/?page_size=1&page=\(max(1, share * 2))", token: token)
    let cursor = ((middle.object["results"] as? [[String: Any]])?.first?["id"] as? String) ?? ""
    let base = "http://127.0.0.1:\(server.port)"
    return [
        "token": token,
        "rooms": "\(base)/api/chat/rooms/",
        "messages": "\(base)/api/chat/rooms/\(bigID)/messages/",
        "cursor": "\(base)/api/chat/rooms/\(bigID)/messages/?before=\(cursor)",
    ]
}

/// The REST benchmark's data (a room of 100,000 messages), written to
/// `path` for docs/bench/rest.sh; then the server runs until SIGINT/SIGTERM.
func restFixture(path: String) async throws {
    let server = try await TestServer.start(storeWorkers: 1, environment: loadEnvironment)
    defer { server.stop() }
    let fixture = try await seedRest(server, bigRoom: 100_000)
    try JSONSerialization.data(withJSONObject: fixture).write(to: URL(fileURLWithPath: path))
    print("fixture ready: \(path)")
    let stop = DispatchSemaphore(value: 0)
    var sources: [any DispatchSourceSignal] = []
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler { stop.signal() }
        source.resume()
        sources.append(source)
    }
    await withCheckedContinuation { continuation in
        Thread { stop.wait(); continuation.resume() }.start()
    }
    _ = sources
}

/// Rows 6 and 7 of issue 12 in one command: seed, then `wrk -t1 -c<connections>`
/// on one endpoint (`rooms`, `messages` or `cursor`) `runs` times, with the
/// server's CPU per request from /proc.
func restBench(endpoint: String, _ options: Options) async throws {
    let server = try await TestServer.start(storeWorkers: options.storeWorkers, frontends: options.frontends ?? 1, environment: loadEnvironment)
    defer { server.stop() }
    let fixture = try await seedRest(server, bigRoom: options.roomMessages)
    guard let url = fixture[endpoint], endpoint != "token", let token = fixture["token"] else {
        throw TestServerError(description: "--rest: rooms, messages or cursor, not \(endpoint)")
    }
    // Fail early on an error answer: wrk would count it as a request served.
    let path = String(url.dropFirst("http://127.0.0.1:\(server.port)".count))
    let check = try await server.request("GET", path, token: token)
    guard check.status == 200 else { throw TestServerError(description: "GET \(path): \(check.status) \(check.text)") }
    var rates: [Double] = []
    var costs: [Double] = []
    for run in 1...options.runs {
        let meter = CPUMeter(server)
        let (rate, requests) = try wrk(url: url, token: token, connections: options.connections, seconds: options.duration)
        let used = meter.used()
        let cost = CPUMeter.serverMicroseconds(used, per: requests)
        rates.append(rate)
        costs.append(cost)
        print(String(format: "run %d: %.0f req/s (%d requests), server CPU %.0f µs/request", run, rate, requests, cost))
        print("  cpu: " + CPUMeter.breakdown(used, per: requests, unit: "req", seconds: Double(options.duration)))
    }
    let label = ["rooms": "/api/chat/rooms/", "messages": "/api/chat/rooms/<big>/messages/", "cursor": "/api/chat/rooms/<big>/messages/?before=<middle>"]
    print(String(format: "summary: GET %@ (user in 101 rooms; big room %d messages), wrk -t1 -c%d -d%ds: %.0f req/s, server CPU %.0f µs/request (median of %d run%@)",
                 label[endpoint] ?? path, options.roomMessages, options.connections, options.duration, median(rates), median(costs), rates.count, rates.count == 1 ? "" : "s"))
}

/// Runs wrk (from PATH) for `seconds`: requests/s and requests completed.
func wrk(url: String, token: String, connections: Int, seconds: Int) throws -> (rate: Double, requests: Int) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["wrk", "-t1", "-c\(connections)", "-d\(seconds)s", "-H", "Authorization: Bearer \(token)", url]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    let lines = output.split(separator: "\n")
    // "Requests/sec:   1017.32" and "  10175 requests in 10.00s, ..."
    guard process.terminationStatus == 0,
        let rate = lines.first(where: { $0.hasPrefix("Requests/sec:") }).flatMap({ Double($0.split(separator: " ").last ?? "") }),
        let requests = lines.first(where: { $0.contains("requests in") }).flatMap({ Int($0.split(separator: " ").first ?? "") }) else {
        throw TestServerError(description: "wrk failed (status \(process.terminationStatus)): \(output)")
    }
    // Non-2xx answers are not the benchmark's: wrk prints how many there were.
    if let bad = lines.first(where: { $0.contains("Non-2xx") }) { throw TestServerError(description: "wrk: \(bad)") }
    return (rate, requests)
}
