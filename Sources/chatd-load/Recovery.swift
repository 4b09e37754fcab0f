import ChatCore
import ChatTesting
import Foundation

/// SIGKILL of the store worker `store.0`, `count` times: how long until
/// `chatd ctl status` shows another process ready as `store.0` (a fresh
/// one, or a warm standby taking over), and until a message sent at the
/// moment of the kill is delivered.
func recoveryBench(count: Int) async throws {
    let server = try await TestServer.start(storeWorkers: 1, environment: loadEnvironment)
    defer { server.stop() }
    let token = try await server.token(sub: "recovery")
    let created = try await server.request("POST", "/api/chat/rooms/", token: token, json: ["name": "recovery"])
    guard let room = created.object["id"] as? String else { throw TestServerError(description: created.text) }
    let socket = try server.webSocket("/ws/chat/\(room)/", token: token)
    var ready: [Double] = []
    var delivered: [Double] = []
    for round in 0..<count {
        // Let the previous replacement live past the supervisor's quick-exit window.
        try await Task.sleep(for: .milliseconds(5500))
        guard let victim = readyPID(server, child: "store.0") else { throw TestServerError(description: "no ready store.0") }
        let killed = now()
        kill(victim, SIGKILL)
        try socket.send(json: ["type": "message", "content": "k\(round)"])
        var readyAt: UInt64?
        var deliveredAt: UInt64?
        while readyAt == nil || deliveredAt == nil {
            if deliveredAt == nil, let frame = try socket.receive(timeout: 0.001), frame.text.contains("\"content\":\"k\(round)\"") { deliveredAt = now() }
            if readyAt == nil, let pid = readyPID(server, child: "store.0"), pid != victim { readyAt = now() }
            if Double(now() - killed) / 1e9 > 30 { throw TestServerError(description: "no recovery in 30 s") }
        }
        ready.append(Double(readyAt! - killed) / 1e6)
        delivered.append(Double(deliveredAt! - killed) / 1e6)
        print(String(format: "kill %d: replacement ready after %.1f ms, message sent at the kill delivered after %.1f ms", round + 1, ready.last!, delivered.last!))
    }
    print(String(format: "summary: SIGKILL of store.0 to a replacement serving, median of %d kills: ready %.1f ms, message sent at the kill delivered %.1f ms",
                 count, median(ready), median(delivered)))
}

/// The pid of the child `ctl status` calls `child`, if it is ready.
func readyPID(_ server: TestServer, child: String) -> Int32? {
    // The control socket directly: `chatd ctl` would add a process start to every poll.
    guard let answer = try? TestServer.control(server.dataDir + "/run/control.sock", "status"),
        let status = try? JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any],
        let row = (status["children"] as? [[String: Any]])?.first(where: { $0["child"] as? String == child }),
        row["ready"] as? Bool == true, let pid = row["pid"] as? Int else { return nil }
    return Int32(pid)
}
