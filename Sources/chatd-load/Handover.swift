import ChatTesting
import Foundation

/// Issue 13's pause: `count` WebSockets (in rooms of 10) on `frontends`
/// frontends, then `runs` times `chatd ctl restart frontend`, each of which
/// hands every socket to a new process. The server measures each socket's
/// pause (its reads stopped in the old process until they resume in the new
/// one: `ctl status` `handovers`); this reports, over the runs, the median of
/// the median pauses, the longest pause, and the handover's whole time, then
/// checks that every socket is still open and answers.
func handoverBench(count: Int, runs: Int, frontends: Int) async throws {
    var environment = loadEnvironment
    environment["CHAT_FRONTENDS"] = String(frontends)
    environment["CHAT_FRONTEND_HANDOVER"] = "true"
    // The sockets answer pings only when read: the count is read at the end.
    environment["CHAT_IDLE_TIMEOUT_SECONDS"] = "3600"
    let server = try await TestServer.start(environment: environment, timeout: 60)
    defer { server.stop() }
    let rooms = try await publicRooms(server, count: (count + 9) / 10)
    let token = try await server.token(sub: "handover-bench", expiresIn: 86_400)
    var sockets: [WebSocketClient] = []
    for index in 0..<count { sockets.append(try server.webSocket("/ws/chat/\(rooms[index % rooms.count])/", token: token)) }
    var medians: [Double] = [], longest: [Double] = [], totals: [Double] = []
    for run in 0..<runs {
        let answer = try server.ctl(["restart", "frontend"])
        guard answer.contains("\"restarted\"") else { throw TestServerError(description: "run \(run): \(answer)") }
        let rows = (try server.status()["handovers"] as? [[String: Any]] ?? []).suffix(frontends)
        for row in rows {
            guard let median = row["pause_median_ms"] as? Double, let max = row["pause_max_ms"] as? Double,
                let total = row["milliseconds"] as? Int, let moved = row["connections_moved"] as? Int
            else { throw TestServerError(description: "run \(run): \(row)") }
            print(String(format: "run %d %@: %d sockets moved in %d ms, pause median %.1f ms, longest %.1f ms",
                         run, row["child"] as? String ?? "?", moved, total, median, max))
            medians.append(median)
            longest.append(max)
            totals.append(Double(total))
        }
    }
    // Every socket is the one opened at the start and still answers.
    var answered = 0
    for socket in sockets {
        try? socket.send(json: ["type": "ping"])
        if let event = try? socket.receive(type: "pong", timeout: 5), event["type"] as? String == "pong" { answered += 1 }
    }
    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    print(String(format: "summary: handover of %d WebSockets on %d frontend%@, %d runs: pause median %.1f ms, longest %.1f ms; handover %.0f ms (median); %d of %d sockets answer after",
                 count, frontends, frontends == 1 ? "" : "s", runs, median(medians), longest.max() ?? 0, median(totals), answered, count))
    if answered < count { exit(1) }
}
