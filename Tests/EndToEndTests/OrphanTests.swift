import ChatTesting
import Foundation
import Testing

extension EndToEnd.Supervision {
    /// Every child the supervisor spawned (frontends, workers, standbys)
    /// exits once its supervisor is gone, without systemd's cgroup kill: a
    /// supervisor SIGKILLed by hand must leave nothing serving on its own.
    @Test func everyChildExitsWhenItsSupervisorIsKilled() async throws {
        let server = try await TestServer.start(storeWorkers: 2, frontends: 2)
        defer { server.stop() }
        let supervisor = server.process.processIdentifier
        // Standbys are spawned once the workers serve: wait for one of each kind.
        try await server.waitUntil(timeout: 20, "workers and standbys running") {
            let children = Self.children(of: supervisor)
            return children.values.contains { $0.contains("--standby") } && children.values.filter { $0.contains(" worker ") }.count >= 5
        }
        let children = Self.children(of: supervisor)
        #expect(children.count >= 7, "\(children)")
        kill(supervisor, SIGKILL)
        server.process.waitUntilExit()
        try await server.waitUntil(timeout: 10, "every child of the killed supervisor gone") {
            children.keys.allSatisfy(Self.gone)
        }
        let left = children.filter { !Self.gone($0.key) }
        #expect(left.isEmpty, "still running: \(left)")
        for pid in left.keys { kill(pid, SIGKILL) }
    }

    /// A child whose supervisor died between its spawn and its first look
    /// at its parent must not take the process it was handed to for its
    /// parent: the supervisor names itself (`CHATD_SUPERVISOR_PID`).
    @Test func aChildWhoseSupervisorDiedBeforeItStartedExits() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try TestServer.binary())
        process.arguments = ["worker", "--role", "store", "--shard", "0"]
        // Not this test process's pid: as if the supervisor were gone already.
        let gone = getpid() == 1 ? "2" : "1"
        process.environment = ProcessInfo.processInfo.environment.merging(["CHATD_SUPERVISOR_PID": gone]) { $1 }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let said = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(said.contains("parent \(gone) is gone"), "\(said)")
    }

    /// Exited: no such process, or a zombie (a container's pid 1 may not reap).
    static func gone(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
    }

    /// Processes whose parent is `parent`, by pid, with their command lines.
    static func children(of parent: Int32) -> [Int32: String] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [:] }
        var found: [Int32: String] = [:]
        for pid in entries.compactMap(Int32.init) {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            guard fields.count > 1, Int32(fields[1]) == parent else { continue }
            let line = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))).map { String(decoding: $0.map { $0 == 0 ? 32 : $0 }, as: UTF8.self) }
            found[pid] = line ?? ""
        }
        return found
    }
}
