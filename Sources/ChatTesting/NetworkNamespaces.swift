import Foundation

/// A private network of "hosts" made of Linux network namespaces, driven by
/// iproute2's `ip`, for tests of chatd across machines on one machine.
///
/// Each host is a namespace `cns<pid>-<name>` whose `eth0` is one end of a
/// veth pair; the other end is a port of the bridge `br0`, which lives in its
/// own namespace `cns<pid>-switch`, so the machine's own interfaces, bridges
/// and firewall see none of it. The test process stays in the machine's
/// namespace and reaches the hosts through one more veth pair, `cns<pid>` on
/// its side (address 10.231.N.254/24), `uplink` on the bridge. That link and
/// its connected route are the only change to the machine's namespace, and
/// deleting the switch namespace removes both (a veth goes with its peer).
/// docs/multihost-test.md shows the same network made by hand.
///
/// Processes run on a host with `ip netns exec`, which execs in place: the
/// pid the test holds is the program's own. The filesystem is shared, so each
/// host gets its own directory and a process uses only what its
/// configuration points at.
public final class NetworkNamespaces: @unchecked Sendable {
    /// One namespace on the bridge.
    public struct Host: Sendable {
        public let name: String
        /// The namespace (`cns<pid>-<name>`).
        public let namespace: String
        /// Its address on the bridge's subnet.
        public let address: String
        /// Its own directory (data, runtime, logs), as a separate machine's disk.
        public let directory: String
        /// Its bridge port in the switch namespace (down: the host is cut off).
        let port: String
    }

    /// Why the harness cannot run here (not root, no `ip`), or nil when it can.
    public static var unavailableReason: String? {
        if geteuid() != 0 { return "network namespaces need root (ip netns add)" }
        if ipPath == nil { return "iproute2's ip is not installed (apt-get install iproute2)" }
        return nil
    }

    /// `ip` where Debian puts it.
    static let ipPath = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Namespaces and the test's own link are named from this: `cns<pid>`.
    public let prefix: String
    /// The third octet of 10.231.N.0/24, free in the machine's routes when the network was made.
    public let subnet: Int
    /// The test process's address on the bridge.
    public var testAddress: String { "10.231.\(subnet).254" }
    /// Every host's directory is under this one.
    public let directory: String
    public private(set) var hosts: [Host] = []
    private var switchNamespace: String { prefix + "-switch" }
    private var processes: [Process] = []
    /// Run at teardown after the processes started with `run` are killed, before the namespaces go.
    private var stops: [@Sendable () -> Void] = []
    private let lock = NSLock()
    private var tornDown = false

    /// Removes what a crashed earlier run left, then makes the switch and the test's link to it.
    public init(directory: String) throws {
        precondition(Self.unavailableReason == nil, Self.unavailableReason ?? "")
        prefix = "cns\(getpid())"
        self.directory = directory
        try Self.removeLeftovers()
        subnet = try Self.freeSubnet(start: Int(getpid()) % 250 + 1)
        do {
            try Self.ip("netns", "add", switchNamespace)
            try Self.ip("-n", switchNamespace, "link", "set", "dev", "lo", "up")
            try Self.ip("-n", switchNamespace, "link", "add", "br0", "type", "bridge")
            try Self.ip("-n", switchNamespace, "link", "set", "dev", "br0", "up")
            try Self.ip("link", "add", prefix, "type", "veth", "peer", "name", "uplink", "netns", switchNamespace)
            try Self.ip("-n", switchNamespace, "link", "set", "dev", "uplink", "master", "br0", "up")
            try Self.ip("addr", "add", "\(testAddress)/24", "dev", prefix)
            try Self.ip("link", "set", "dev", prefix, "up")
        } catch {
            tearDown()
            throw error
        }
    }

    deinit { tearDown() }

    /// A new host on the bridge at 10.231.N.`index` (1 to 250), with lo and eth0 up.
    @discardableResult
    public func addHost(_ name: String, index: Int) throws -> Host {
        let host = Host(
            name: name, namespace: "\(prefix)-\(name)", address: "10.231.\(subnet).\(index)",
            directory: directory + "/" + name, port: "port\(index)"
        )
        try FileManager.default.createDirectory(atPath: host.directory, withIntermediateDirectories: true)
        try Self.ip("netns", "add", host.namespace)
        lock.withLock { hosts.append(host) }
        try Self.ip("-n", host.namespace, "link", "set", "dev", "lo", "up")
        try Self.ip("-n", host.namespace, "link", "add", "eth0", "type", "veth", "peer", "name", host.port, "netns", switchNamespace)
        try Self.ip("-n", switchNamespace, "link", "set", "dev", host.port, "master", "br0", "up")
        try Self.ip("-n", host.namespace, "addr", "add", "\(host.address)/24", "dev", "eth0")
        try Self.ip("-n", host.namespace, "link", "set", "dev", "eth0", "up")
        return host
    }

    /// Starts `arguments` inside `host` (`ip netns exec`, which execs in
    /// place: the returned process's pid is the program's), output appended
    /// to `log` (a path), in `workingDirectory` (default: the test's).
    /// Stopped at teardown if still running.
    public func run(on host: Host, _ arguments: [String], environment: [String: String], log: String, workingDirectory: String? = nil) throws -> Process {
        let process = Process()
        if let workingDirectory { process.currentDirectoryURL = URL(fileURLWithPath: workingDirectory) }
        process.executableURL = URL(fileURLWithPath: Self.ipPath!)
        process.arguments = ["netns", "exec", host.namespace] + arguments
        process.environment = environment
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        lock.withLock { processes.append(process) }
        return process
    }

    /// Has `stop` run at teardown, once the processes started with `run`
    /// are gone and before the namespaces are deleted: for a server that
    /// must shut down in its own way (PostgreSQL releasing its shared memory).
    public func atTearDown(_ stop: @escaping @Sendable () -> Void) {
        lock.withLock { stops.append(stop) }
    }

    /// SIGKILLs `process` and every process under it at once, as a host that
    /// loses power: all are stopped first, so none restarts or reaps another
    /// in between. Waits until the top one has exited; returns every pid killed.
    @discardableResult
    public static func killTree(_ process: Process) -> [Int32] {
        guard process.isRunning else { return [] }
        let top = process.processIdentifier
        kill(top, SIGSTOP)
        var tree: [Int32] = [top]
        var frontier: [Int32] = [top]
        // Stopping a level before reading the next one: a stopped parent forks nothing more.
        while !frontier.isEmpty {
            let children = childrenByParent()
            frontier = frontier.flatMap { children[$0] ?? [] }
            for pid in frontier { kill(pid, SIGSTOP) }
            tree += frontier
        }
        for pid in tree { kill(pid, SIGKILL) }
        process.waitUntilExit()
        return tree
    }

    /// Whether `pid` has ended: no such process, or a zombie its new parent has not reaped yet.
    public static func hasEnded(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(close, offsetBy: 2)...].first == "Z"
    }

    /// Every process's children, from /proc/<pid>/stat.
    static func childrenByParent() -> [Int32: [Int32]] {
        var children: [Int32: [Int32]] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")") else { continue }
            // pid (comm) state ppid ...: comm may hold spaces, so fields count from the last ')'.
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            if fields.count > 1, let parent = Int32(fields[1]) { children[parent, default: []].append(pid) }
        }
        return children
    }

    /// Takes `host`'s bridge port down: its packets go nowhere, its
    /// connections stall (no reset), as when a machine's cable is pulled.
    public func cut(_ host: Host) throws {
        try Self.ip("-n", switchNamespace, "link", "set", "dev", host.port, "down")
    }

    /// Brings `host`'s bridge port back up.
    public func restore(_ host: Host) throws {
        try Self.ip("-n", switchNamespace, "link", "set", "dev", host.port, "up")
    }

    /// Kills what still runs, deletes the namespaces (the veths go with
    /// them) and the hosts' directories (kept with CHATD_KEEP_TEST_DATA=1).
    /// Safe to call more than once.
    public func tearDown() {
        let (started, stopping, names): ([Process], [@Sendable () -> Void], [String]) = lock.withLock {
            defer { tornDown = true }
            return tornDown ? ([], [], []) : (processes, stops, hosts.map(\.namespace) + [switchNamespace])
        }
        guard !names.isEmpty else { return }
        for process in started { Self.killTree(process) }
        for stop in stopping { stop() }
        for name in names {
            Self.killProcesses(in: name)
            _ = try? Self.ip("netns", "del", name)
        }
        // Normally gone with its peer in the switch namespace.
        if Self.linkExists(prefix) { _ = try? Self.ip("link", "del", prefix) }
        if ProcessInfo.processInfo.environment["CHATD_KEEP_TEST_DATA"] == nil {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// The machine's routes, IPv4 and IPv6, every table: what teardown must leave as it found.
    public static func machineRoutes() throws -> String {
        try ip("-4", "route", "show", "table", "all") + (try ip("-6", "route", "show", "table", "all"))
    }

    // MARK: Below the harness

    /// Where directories named for a run (`cns<pid>-...`) are made: a PostgreSQL host's cluster.
    static let leftoversDirectory = "/tmp"

    /// Namespaces, links and directories (in `leftoversDirectory`) of earlier
    /// runs whose process is gone (`cns<pid>-...` with no such pid): their
    /// processes killed, the namespaces and directories deleted.
    static func removeLeftovers() throws {
        let names = try ip("netns", "list").split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
        let directories = (try? FileManager.default.contentsOfDirectory(atPath: leftoversDirectory)) ?? []
        let links = try ip("-o", "link", "show").split(separator: "\n").compactMap { line -> String? in
            // "7: cns1234@if3: <...": the name before '@' or ':'.
            let name = line.split(separator: ":").dropFirst().first?.trimmingCharacters(in: .whitespaces)
            return name?.split(separator: "@").first.map(String.init)
        }
        for name in names + links {
            guard name.hasPrefix("cns"), let pid = Int32(name.dropFirst(3).prefix { $0.isNumber }),
                kill(pid, 0) != 0 && errno == ESRCH else { continue }
            if names.contains(name) {
                killProcesses(in: name)
                _ = try? ip("netns", "del", name)
            } else if linkExists(name) {
                _ = try? ip("link", "del", name)
            }
        }
        // After the namespaces: a server still using one was killed with them.
        for name in directories where name.hasPrefix("cns") {
            guard let pid = Int32(name.dropFirst(3).prefix { $0.isNumber }), kill(pid, 0) != 0 && errno == ESRCH else { continue }
            try? FileManager.default.removeItem(atPath: leftoversDirectory + "/" + name)
        }
    }

    /// SIGKILLs every process in namespace `name` (only ours: its name has our prefix).
    static func killProcesses(in name: String) {
        let pids = ((try? ip("netns", "pids", name)) ?? "").split(separator: "\n").compactMap { Int32($0) }
        for pid in pids { kill(pid, SIGKILL) }
    }

    /// Whether the machine's namespace has a link `name`.
    public static func linkExists(_ name: String) -> Bool {
        (try? ip("link", "show", "dev", name)) != nil
    }

    /// The first 10.231.N.0/24 from `start` that no route of the machine touches.
    static func freeSubnet(start: Int) throws -> Int {
        let routes = try machineRoutes()
        for offset in 0..<250 {
            let candidate = (start - 1 + offset) % 250 + 1
            if !routes.contains("10.231.\(candidate).") { return candidate }
        }
        throw TestServerError(description: "no free 10.231.N.0/24")
    }

    /// Runs `ip` with `arguments`; its standard output, or an error with its standard error.
    @discardableResult
    public static func ip(_ arguments: String...) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ipPath ?? "/usr/sbin/ip")
        process.arguments = arguments
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Read before waiting: a full pipe would block ip forever.
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let problem = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestServerError(description: "ip \(arguments.joined(separator: " ")): \(problem)")
        }
        return text
    }
}
