import ChatTesting
import Foundation

/// Where a process's resident memory is, by kind of mapping (KiB of RSS).
struct MemoryBreakdown {
    static let kinds = ["heap/anon", "thread stacks", "chatd text+data", "shared libraries", "other files"]
    var rss: [String: Int] = [:]
    var totalRSS = 0
    var totalPSS = 0
    /// Private_Clean + Private_Dirty: what this process alone holds (USS).
    var totalPrivate = 0

    /// Reads /proc/<pid>/smaps: each mapping's Rss, by what it maps.
    /// Thread stacks are told from malloc arenas by where the guard is:
    /// glibc puts a stack's inaccessible guard *below* it, an arena's
    /// reserved, inaccessible rest *above* it.
    init(pid: Int32) {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? ""
        // Read to the end: /proc files report a size of 0, and a read by size stops early.
        guard let file = FileHandle(forReadingAtPath: "/proc/\(pid)/smaps") else { return }
        let smaps = String(decoding: file.readDataToEndOfFile(), as: UTF8.self)
        try? file.close()
        var kind = "other files"
        var previous: (end: UInt64, guardPage: Bool) = (0, false)
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if first.contains("-") && !first.hasSuffix(":") {
                let bounds = first.split(separator: "-").map { UInt64($0, radix: 16) ?? 0 }
                let perms = fields.count > 1 ? String(fields[1]) : ""
                let path = fields.count > 5 ? fields[5...].joined(separator: " ") : ""
                kind = Self.kind(path: path, exe: exe, belowIsGuard: previous.guardPage && previous.end == bounds.first)
                previous = (bounds.count > 1 ? bounds[1] : 0, perms.hasPrefix("---"))
            } else if first == "Rss:", fields.count > 1 {
                rss[kind, default: 0] += Int(fields[1]) ?? 0
            } else if first == "Pss:", fields.count > 1 {
                totalPSS += Int(fields[1]) ?? 0
            } else if first == "Private_Clean:" || first == "Private_Dirty:", fields.count > 1 {
                totalPrivate += Int(fields[1]) ?? 0
            }
        }
        totalRSS = rss.values.reduce(0, +)
    }

    static func kind(path: String, exe: String, belowIsGuard: Bool) -> String {
        if path.isEmpty { return belowIsGuard ? "thread stacks" : "heap/anon" }
        if path == "[stack]" { return "thread stacks" }
        if path == "[heap]" { return "heap/anon" }
        if path == exe { return "chatd text+data" }
        if path.hasSuffix(".so") || path.contains(".so.") { return "shared libraries" }
        return "other files"
    }

    /// `12.3 MB RSS (PSS 8.1, private 4.0): heap/anon 5.0, thread stacks 0.4, ...` in MB.
    var line: String {
        String(format: "%.1f MB RSS (PSS %.1f, private %.1f): ", Double(totalRSS) / 1024, Double(totalPSS) / 1024, Double(totalPrivate) / 1024)
            + Self.kinds.map { String(format: "%@ %.1f", $0, Double(rss[$0] ?? 0) / 1024) }.joined(separator: ", ")
    }
}

/// Row 8 of issue 12: an idle server (every worker role running), `settle`
/// seconds after it is healthy; every process's RSS and where it goes.
func memoryBench(settle: Int, storeWorkers: Int) async throws {
    let server = try await TestServer.start(storeWorkers: storeWorkers, environment: loadEnvironment)
    defer { server.stop() }
    try await Task.sleep(for: .seconds(settle))
    var total = MemoryBreakdown(pid: 0)
    var perProcess: [String] = []
    for (name, pid) in serverProcesses(server) {
        let memory = MemoryBreakdown(pid: pid)
        print("\(name) (pid \(pid)): \(memory.line)")
        perProcess.append(String(format: "%@ %.1f/%.1f", name, Double(memory.totalRSS) / 1024, Double(memory.totalPrivate) / 1024))
        total.totalRSS += memory.totalRSS
        total.totalPSS += memory.totalPSS
        total.totalPrivate += memory.totalPrivate
        for (kind, kib) in memory.rss { total.rss[kind, default: 0] += kib }
    }
    print("all: \(total.line)")
    print(String(format: "summary: idle memory, %d processes: %.1f MB RSS in all (PSS %.1f MB, private %.1f MB); per process (MB RSS/private): %@",
                 perProcess.count, Double(total.totalRSS) / 1024, Double(total.totalPSS) / 1024, Double(total.totalPrivate) / 1024,
                 perProcess.joined(separator: ", ")))
}
