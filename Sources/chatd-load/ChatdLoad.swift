import ArgumentParser
import ChatTesting
import Foundation

/// chatd-load: starts a real `chatd serve` (temporary data, free port),
/// loads it as clients do and measures it. Every loop is bounded (by
/// `--messages`, `--idle`, `--duration` ...). Each mode ends with one line
/// starting `summary:`, the figure docs/benchmarks.md quotes.
///
///     chatd-load --rooms 10 --members 10 --senders 1 --window 10 --message-bytes 128 --messages 3000
@main
struct ChatdLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatd-load",
        abstract: "Measure a real `chatd serve`: messages sent, persisted and delivered per second.",
        discussion: """
            Without a mode flag, measures throughput: --rooms rooms of --members WebSocket \
            clients, the first --senders of each sending --messages messages (as fast as \
            --window allows, or paced with --rate). --fanout, --idle, --rest, --memory, \
            --recovery, --search, --rest-fixture, --chaos and --bursts each run another \
            benchmark instead (docs/benchmarks.md). --target measures throughput on a \
            deployment already running (several frontend hosts: --split spreads each \
            room's members over them; docs/capacity.md §9).
            """
    )

    @OptionGroup var options: Options

    func run() async throws {
        if let roomsFile = options.idleClient {
            await orExit {
                try idleClient(roomsFile: roomsFile, port: options.port, first: options.first, count: options.count,
                               sources: options.sources ?? 1, threads: options.connectThreads ?? 8)
            }
            return
        }
        if let rounds = options.chaos { await chaosRun(rounds: rounds, options) }
        if let bursts = options.bursts { await burstsRun(bursts: bursts, options) }
        if await orExit({ try await runMode(options) }) { return }
        await throughputRuns(options)
    }
}

/// Runs the mode `options` names, if any; false: none did (throughput).
func runMode(_ options: Options) async throws -> Bool {
    if let count = options.recovery {
        try await recoveryBench(count: count)
    } else if let total = options.search {
        try await searchBench(total: total)
    } else if let members = options.fanout {
        for _ in 0..<options.runs {
            if let rate = options.rate {
                try await fanoutPaced(members: members, rate: rate, messages: options.messages, frontends: options.frontends ?? 1)
            } else {
                try await fanout(members: members, messages: options.messages, window: options.window, frontends: options.frontends ?? 1)
            }
        }
    } else if let count = options.idle {
        try await idleBench(options, count: count)
    } else if let count = options.handover {
        try await handoverBench(count: count, runs: options.runs, frontends: options.frontends ?? 1)
    } else if let endpoint = options.rest {
        try await restBench(endpoint: endpoint, options)
    } else if options.memory {
        try await memoryBench(settle: options.settle, storeWorkers: options.storeWorkers)
    } else if let path = options.restFixture {
        try await restFixture(path: path)
    } else {
        return false
    }
    return true
}

/// The flags of every mode. Names and defaults are what docs/benchmarks.md
/// and docs/bench/*.sh call: keep them.
struct Options: ParsableArguments {
    @Option(help: "Store workers the server runs.")
    var storeWorkers = 1
    @Option(help: "Rooms, each with its own sockets.")
    var rooms = 8
    @Option(help: "Sockets per room that send (the first of its members).")
    var senders = 4
    @Option(help: "Sockets (each its own user) per room; default: --senders.")
    var members: Int?
    @Option(help: "Messages each sender sends (per burst with --bursts; in all with --fanout --rate).")
    var messages = 1000
    @Option(help: "Messages a sender may have unconfirmed at once.")
    var window = 100
    @Option(help: "Bytes of each message's content.")
    var messageBytes = 128
    @Option(help: ArgumentHelp("Paced, open loop: messages per second in all, each sent at its scheduled time; latency is taken from that time.", valueName: "msg/s"))
    var rate: Double?
    @Option(help: "Runs, each on a fresh server (wrk runs on one server with --rest); the median is reported.")
    var runs = 1

    @Option(help: ArgumentHelp("Instead of measuring throughput: fan-out of one room with this many members (paced with --rate).", valueName: "members"))
    var fanout: Int?
    @Option(help: ArgumentHelp("Instead of measuring throughput: this many idle WebSockets in public rooms of 10; the frontends' RSS per socket and the open rate.", valueName: "sockets"))
    var idle: Int?
    @Option(help: ArgumentHelp("Instead of measuring throughput: this many WebSockets, then --runs times `ctl restart frontend` (a handover each): the sockets' pause.", valueName: "sockets"))
    var handover: Int?
    @Option(help: "With --idle: client processes opening the sockets (default: one per 15,000).")
    var clients: Int?
    @Option(help: "With --idle: loopback source addresses 127.0.0.2 ... (default: one per 25,000 sockets).")
    var sources: Int?
    @Option(help: "Frontends the server runs, as CHAT_FRONTENDS (default: 1; with --idle, one per 15,000 sockets).")
    var frontends: Int?
    // Each thread has one handshake in flight. With 8, one client process
    // left the server idle between answers (6,000 sockets, one frontend:
    // 568/s against 1,006/s with 64); but 7 processes of 64 threads took
    // 1,280 µs of client CPU a socket at 100,000 (docs/benchmarks.md §11f).
    @Option(help: "With --idle: threads per client process opening sockets, one handshake in flight each (default: 64 in all, at least 8 a process).")
    var connectThreads: Int?
    @Option(help: "With --idle: seconds the sockets are held before they are counted.")
    var hold = 5
    @Option(help: ArgumentHelp("Instead of measuring throughput: seed the REST data, then wrk on one endpoint: rooms, messages or cursor.", valueName: "endpoint"))
    var rest: String?
    @Option(help: "With --rest: messages in the big room.")
    var roomMessages = 100_000
    @Option(help: "With --rest: seconds of each wrk run.")
    var duration = 10
    @Option(help: "With --rest: wrk's connections.")
    var connections = 16
    @Flag(help: "Instead of measuring throughput: an idle server's RSS per process, and where it goes (smaps).")
    var memory = false

    @Option(help: ArgumentHelp("Instead of measuring: seed the REST benchmark's data, write where it is to this file, and serve until SIGINT/SIGTERM.", valueName: "file"))
    var restFixture: String?
    @Option(help: ArgumentHelp("Instead of measuring throughput: search over this many indexed messages.", valueName: "messages"))
    var search: Int?
    @Option(help: ArgumentHelp("Instead of measuring throughput: this many SIGKILLs of a store worker, timed.", valueName: "kills"))
    var recovery: Int?
    @Option(help: ArgumentHelp("Instead of measuring throughput: the chaos run, this many kill rounds.", valueName: "rounds"))
    var chaos: Int?
    @Option(help: ArgumentHelp("Instead of measuring throughput: this many bursts on one server, each process's RSS after each.", valueName: "bursts"))
    var bursts: Int?
    @Flag(help: "With --bursts: SIGSTOP the search worker for the bursts.")
    var stopSearch = false
    @Option(help: ArgumentHelp("With --bursts and --memory: idle seconds before RSS is read.", valueName: "seconds"))
    var settle = 3

    @Option(help: ArgumentHelp("Throughput of a deployment already running instead of a server of our own: its frontend hosts' URLs. Tokens are signed with CHAT_JWT_SECRET from the environment; users and rooms are made through the API.", valueName: "URL[,URL…]"))
    var target: String?
    @Flag(help: "With --target: each room's members spread over the targets in turn (without: each room on one target, the rooms in turn).")
    var split = false
    @Option(help: ArgumentHelp("With --target: the control sockets (or data directories) of the deployment's hosts, on this machine, whose `ctl status` pids the `cpu:` line reads; without, it is left out.", valueName: "PATH[,PATH…]"))
    var control: String?
    @Option(help: ArgumentHelp("With --target: seconds a run may take from its first send before it fails (a deployment that stops answering).", valueName: "seconds"))
    var runDeadline = 600.0

    @Flag(help: "One second into each throughput run: `chatd ctl restart store`.")
    var rollingRestart = false
    @Option(help: ArgumentHelp("One second into each throughput run: `chatd ctl scale store N`.", valueName: "N"))
    var scaleStore: Int?

    // --idle's child processes: chatd-load runs itself with these.
    @Option(help: .hidden) var idleClient: String?
    @Option(help: .hidden) var port = 0
    @Option(help: .hidden) var first = 0
    @Option(help: .hidden) var count = 0

    var membersPerRoom: Int { members ?? senders }
    /// `--target`'s URLs; nil: chatd-load starts its own server.
    var targetURLs: [String]? { target.map(Self.list) }
    var controlPaths: [String] { control.map(Self.list) ?? [] }

    static func list(_ commaSeparated: String) -> [String] {
        commaSeparated.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// The `chatd ctl` command issued one second into the throughput run, if any.
    var duringRun: [String]? {
        if rollingRestart { return ["restart", "store"] }
        return scaleStore.map { ["scale", "store", String($0)] }
    }

    func validate() throws {
        // Each of these is a loop bound or a divisor; zero would run nothing or crash.
        for (flag, value) in [("--runs", runs), ("--senders", senders), ("--window", window), ("--messages", messages)] where value < 1 {
            throw ValidationError("\(flag) must be at least 1.")
        }
        if membersPerRoom < senders { throw ValidationError("--members must be at least --senders.") }
        if let rate, !(rate > 0) { throw ValidationError("--rate must be positive.") }
        if let idle, idle < 1 { throw ValidationError("--idle must be at least 1.") }
        if let rest, !["rooms", "messages", "cursor"].contains(rest) { throw ValidationError("--rest: rooms, messages or cursor.") }
        try validateTarget()
        if rollingRestart && scaleStore != nil {
            throw ValidationError("--rolling-restart and --scale-store are alternatives.")
        }
    }
}

extension Options {
    /// `--target` loads a deployment in the throughput mode only: the other
    /// modes need a server of their own (to kill, restart or seed).
    func validateTarget() throws {
        guard let urls = targetURLs else {
            if split || control != nil { throw ValidationError("--split and --control go with --target.") }
            return
        }
        if urls.isEmpty { throw ValidationError("--target: at least one URL.") }
        // chatd refuses a secret under 32 bytes, so no deployment verifies tokens signed with one.
        let secret = ProcessInfo.processInfo.environment["CHAT_JWT_SECRET"] ?? ""
        if secret.utf8.count < 32 {
            throw ValidationError("--target: set CHAT_JWT_SECRET to the deployment's secret (at least 32 bytes, as chatd requires; got \(secret.utf8.count)).")
        }
        if !(runDeadline > 0) { throw ValidationError("--run-deadline: a positive number of seconds.") }
        let modes: [Any?] = [fanout, idle, handover, rest, restFixture, search, recovery, chaos, bursts, scaleStore, frontends]
        if modes.contains(where: { $0 != nil }) || memory || rollingRestart {
            throw ValidationError("--target measures throughput only (with --rate or --window); the other modes and server options start their own server.")
        }
    }
}

/// The long chaos run: the end-to-end test's, with more of everything.
func chaosRun(rounds: Int, _ options: Options) async -> Never {
    let outcome = await orExit {
        let server = try await TestServer.start(storeWorkers: max(2, options.storeWorkers), environment: loadEnvironment)
        defer { server.stop() }
        var chaos = Chaos.Options()
        chaos.rooms = options.rooms
        chaos.perRoom = options.senders
        chaos.messagesPerClient = options.messages
        chaos.killRounds = rounds
        chaos.rollingRestarts = max(1, rounds / 3)
        chaos.killPause = 1.2
        return try await Chaos.run(server, chaos)
    }
    print(outcome.summary)
    print(String(format: "took %.1f s", outcome.seconds))
    let clean = outcome.stored == outcome.sent && outcome.storedTwice == 0 && outcome.missingDeliveries == 0
        && outcome.duplicateDeliveries == 0 && outcome.closedSockets == 0 && outcome.restOther == 0 && outcome.clientErrors.isEmpty
    print(clean ? "invariants held" : "INVARIANT BROKEN")
    print(String(format: "summary: chaos, %d kill rounds, %d messages sent, %d stored: %@ (%.1f s)",
                 rounds, outcome.sent, outcome.stored, clean ? "invariants held" : "INVARIANT BROKEN", outcome.seconds))
    exit(clean ? 0 : 1)
}

/// Memory after repeated bursts: every process's RSS once each burst has settled.
func burstsRun(bursts: Int, _ options: Options) async -> Never {
    let outcome = await orExit {
        let server = try await TestServer.start(storeWorkers: options.storeWorkers, environment: [
            // info shows each trim's RSS before and after (with CHATD_KEEP_TEST_DATA=1, the log stays).
            "CHAT_LOG_LEVEL": ProcessInfo.processInfo.environment["CHAT_LOG_LEVEL"] ?? "warning", "CHAT_RATE_LIMITS": "off",
            // A stopped search worker must not be killed as hung (10 s) and replaced.
            "CHAT_HANG_TIMEOUT_SECONDS": options.stopSearch ? "600" : "10",
        ])
        defer { server.stop() }
        var soak = Soak.Options()
        soak.rooms = options.rooms
        soak.perRoom = options.senders
        soak.messagesPerBurst = options.messages
        soak.window = options.window
        soak.bursts = bursts
        soak.stopSearch = options.stopSearch
        soak.settleSeconds = Double(options.settle)
        return try await Soak.run(server, soak)
    }
    print(outcome.summary)
    let clean = outcome.clientErrors.isEmpty && outcome.missingDeliveries == 0 && outcome.confirmedStored == outcome.confirmed
    print(clean ? "nothing lost" : "LOST: \(outcome.clientErrors.prefix(3))")
    let peaks = outcome.bursts.last?.rss.map { String(format: "%@ %.0f", $0.process, Double($0.bytes) / 1e6) } ?? []
    print("summary: \(bursts) bursts, \(clean ? "nothing lost" : "LOST"); MB RSS after the last: " + peaks.joined(separator: ", "))
    exit(clean ? 0 : 1)
}
