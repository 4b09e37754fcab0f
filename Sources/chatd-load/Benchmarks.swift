import ChatCore
import ChatTesting
import Foundation

/// Every server a load run starts: quiet, and without rate limits, which
/// would measure the limiter instead of the server.
let loadEnvironment = ["CHAT_LOG_LEVEL": "warning", "CHAT_RATE_LIMITS": "off"]

/// Runs one of the modes; any failure is a message and exit status 1, not a crash.
func orExit<T>(_ body: () async throws -> T) async -> T {
    do {
        return try await body()
    } catch {
        FileHandle.standardError.write(Data("chatd-load: \(error)\n".utf8))
        exit(1)
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}

/// Monotonic nanoseconds.
func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Waits until one of `fds` is readable or monotonic time `until` (ns) comes.
/// ppoll, because poll's milliseconds would make a paced sender up to 1 ms
/// late; Swift's Glibc module does not declare it, so it is looked up.
@discardableResult
func waitReadable(_ fds: inout [pollfd], until: UInt64) -> Int32 {
    let left = until > now() ? until - now() : 0
    guard let ppoll = ppollFunction else {
        // Rounded up: late rather than spinning.
        return poll(&fds, nfds_t(fds.count), Int32((left + 999_999) / 1_000_000))
    }
    var timeout = timespec(tv_sec: Int(left / 1_000_000_000), tv_nsec: Int(left % 1_000_000_000))
    return ppoll(&fds, nfds_t(fds.count), &timeout, nil)
}

typealias PPoll = @convention(c) (UnsafeMutablePointer<pollfd>?, nfds_t, UnsafePointer<timespec>?, UnsafeRawPointer?) -> Int32
/// glibc's ppoll(2), found at run time (nil: RTLD_DEFAULT, every loaded library).
let ppollFunction: PPoll? = dlsym(nil, "ppoll").map { unsafeBitCast($0, to: PPoll.self) }

/// The value at fraction `p` of sorted `values` (0 when empty).
func percentile(_ values: [Double], _ p: Double) -> Double {
    values.isEmpty ? 0 : values[min(values.count - 1, Int(Double(values.count) * p))]
}

/// The median of `values` (0 when empty).
func median(_ values: [Double]) -> Double { percentile(values.sorted(), 0.5) }

/// CPU seconds (user + system) a process has used so far.
func cpuSeconds(_ pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
    // Fields 14 and 15 of proc(5), counted from the state field (3).
    let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
    return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// The server's processes by the names `chatd ctl status` gives its
/// children (`frontend`, `frontend.1`, `store.0`, `search.0` ...), after
/// the supervisor (which runs the bus broker).
func serverProcesses(_ server: TestServer) -> [(name: String, pid: Int32)] {
    let answer = (try? TestServer.control(server.dataDir + "/run/control.sock", "status")) ?? "{}"
    let status = (try? JSONSerialization.jsonObject(with: Data(answer.utf8))) as? [String: Any]
    let children = (status?["children"] as? [[String: Any]] ?? []).compactMap { row -> (String, Int32)? in
        guard let name = row["child"] as? String, let pid = row["pid"] as? Int else { return nil }
        return (name, Int32(pid))
    }
    return [("supervisor+broker", server.process.processIdentifier)] + children.sorted { $0.0 < $1.0 }
}

/// Every frontend's pid, whatever their names after `frontend`.
func frontendPIDs(_ server: TestServer) -> [Int32] {
    serverProcesses(server).filter { $0.name.hasPrefix("frontend") }.map(\.pid)
}

/// CPU time of the server's processes (and of this load client) over a run.
struct CPUMeter {
    let processes: [(name: String, pid: Int32)]
    let before: [Double]

    init(_ server: TestServer) {
        processes = serverProcesses(server) + [("load client", getpid())]
        before = processes.map { cpuSeconds($0.pid) }
    }

    /// Seconds each process used since `init`.
    func used() -> [(name: String, seconds: Double)] {
        zip(processes, before).map { ($0.0.name, cpuSeconds($0.0.pid) - $0.1) }
    }

    /// The server's CPU (every process but this one) per `unit`, in µs.
    static func serverMicroseconds(_ used: [(name: String, seconds: Double)], per units: Int) -> Double {
        used.filter { $0.name != "load client" }.map(\.seconds).reduce(0, +) / Double(max(1, units)) * 1e6
    }

    /// `frontend 57.1 µs/msg (48%), store.0 ...`: per process, per unit and share of a core.
    static func breakdown(_ used: [(name: String, seconds: Double)], per units: Int, unit: String, seconds: Double) -> String {
        used.map { name, cpu in
            String(format: "%@ %.1f µs/%@ (%.0f%%)", name, cpu / Double(max(1, units)) * 1e6, unit, cpu / seconds * 100)
        }.joined(separator: ", ")
    }
}
