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

/// What a run's `cpu:` line reports of a server chatd-load started: its
/// processes, and PostgreSQL's when the data is there.
func meteredProcesses(_ server: TestServer) -> [(name: String, pid: Int32)] {
    serverProcesses(server) + (postmasterPID().map { [(name: "postgres", pid: $0)] } ?? [])
}

/// With `CHATD_TEST_POSTGRES=1`: the throwaway PostgreSQL's postmaster
/// (the first line of its `postmaster.pid`), whose CPU and its backends'
/// is the database's share of the server's (docs/benchmarks.md §15).
func postmasterPID() -> Int32? {
    guard PostgresServer.enabled, let server = try? PostgresServer.start(),
        let text = try? String(contentsOfFile: server.directory + "/data/postmaster.pid", encoding: .utf8) else { return nil }
    return text.split(separator: "\n").first.flatMap { Int32($0) }
}

/// CPU seconds of `pid` and of everything under it: its own, its reaped
/// children's (`cutime`/`cstime`) and its live children's. For the
/// postmaster, whose backends do the database's work.
func treeCPUSeconds(_ pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
    // Fields 16 and 17 of proc(5): the reaped children's user and system time.
    let reaped = ((Double(fields[13]) ?? 0) + (Double(fields[14]) ?? 0)) / Double(sysconf(Int32(_SC_CLK_TCK)))
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    let children = entries.compactMap(Int32.init).filter { parentPID($0) == pid }
    return cpuSeconds(pid) + reaped + children.map(cpuSeconds).reduce(0, +)
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
        self.init(processes: meteredProcesses(server))
    }

    /// `processes` (a deployment's, `--target`) and this load client.
    init(processes: [(name: String, pid: Int32)]) {
        self.processes = processes + [("load client", getpid())]
        before = self.processes.map(Self.seconds)
    }

    /// Seconds each process used since `init`.
    func used() -> [(name: String, seconds: Double)] {
        zip(processes, before).map { ($0.0.name, Self.seconds($0.0) - $0.1) }
    }

    /// A process's CPU so far; PostgreSQL's with its backends'.
    static func seconds(_ process: (name: String, pid: Int32)) -> Double {
        process.name == "postgres" ? treeCPUSeconds(process.pid) : cpuSeconds(process.pid)
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
