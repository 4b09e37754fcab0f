import ArgumentParser
import ChatTesting
import Foundation

/// chatd-load: starts a real `chatd serve` (temporary data, free port), fills
/// rooms with WebSocket clients and measures messages sent, persisted and
/// delivered per second. Every loop is bounded by `--messages`.
///
///     chatd-load --store-workers 2 --rooms 8 --senders 4 --messages 2000 --window 200
@main
struct ChatdLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatd-load",
        abstract: "Measure a real `chatd serve`: messages sent, persisted and delivered per second.",
        discussion: """
            Without a mode flag, measures throughput: --rooms rooms of --senders WebSocket \
            clients, each sending --messages messages. --rest-fixture, --fanout, --search, \
            --recovery, --chaos and --bursts each run another benchmark instead \
            (docs/benchmarks.md).
            """
    )

    @OptionGroup var options: Options

    func run() async throws {
        if let rounds = options.chaos { await chaosRun(rounds: rounds, options) }
        if let bursts = options.bursts { await burstsRun(bursts: bursts, options) }
        if let count = options.recovery {
            await orExit { try await recoveryBench(count: count) }
            return
        }
        if let total = options.search {
            await orExit { try await searchBench(total: total) }
            return
        }
        if let members = options.fanout {
            await orExit { for _ in 0..<options.runs { try await fanout(members: members, messages: options.messages, window: options.window) } }
            return
        }
        if let path = options.restFixture {
            await orExit { try await restFixture(path: path) }
            return
        }
        await throughputRuns(options)
    }
}

/// The flags of every mode. Names and defaults are what docs/benchmarks.md
/// and docs/bench/*.sh call: keep them.
struct Options: ParsableArguments {
    @Option(help: "Store workers the server runs.")
    var storeWorkers = 1
    @Option(help: "Rooms, each with its own sockets.")
    var rooms = 8
    @Option(help: "Sockets (each its own user) per room.")
    var senders = 4
    @Option(help: "Messages each sender sends (per burst with --bursts).")
    var messages = 1000
    @Option(help: "Messages a sender may have unconfirmed at once.")
    var window = 100
    @Option(help: "Runs, each on a fresh server; the median is reported.")
    var runs = 1

    @Option(help: ArgumentHelp("Instead of measuring: seed the REST benchmark's data, write where it is to this file, and serve until SIGINT/SIGTERM.", valueName: "file"))
    var restFixture: String?
    @Option(help: ArgumentHelp("Instead of measuring throughput: fan-out of one room with this many members.", valueName: "members"))
    var fanout: Int?
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
    @Option(help: ArgumentHelp("With --bursts: idle seconds after each burst before RSS is read.", valueName: "seconds"))
    var settle = 3

    @Flag(help: "One second into each throughput run: `chatd ctl restart store`.")
    var rollingRestart = false
    @Option(help: ArgumentHelp("One second into each throughput run: `chatd ctl scale store N`.", valueName: "N"))
    var scaleStore: Int?

    /// The `chatd ctl` command issued one second into the throughput run, if any.
    var duringRun: [String]? {
        if rollingRestart { return ["restart", "store"] }
        return scaleStore.map { ["scale", "store", String($0)] }
    }

    func validate() throws {
        // Each of these is a loop bound or a divisor; zero would run nothing or crash.
        for (flag, value) in [("--runs", runs), ("--senders", senders), ("--window", window)] where value < 1 {
            throw ValidationError("\(flag) must be at least 1.")
        }
        if rollingRestart && scaleStore != nil {
            throw ValidationError("--rolling-restart and --scale-store are alternatives.")
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
    exit(clean ? 0 : 1)
}

/// The default mode: `--runs` throughput runs, each on a fresh server, and their median.
func throughputRuns(_ options: Options) async {
    var rates: [Double] = []
    for run in 1...options.runs {
        let result = await orExit { try await measure(options) }
        let rate = Double(result.messages) / result.seconds
        rates.append(rate)
        print(String(format: "run %d: %d messages (%d stored) in %.2f s = %.0f messages/s persisted and delivered, %.0f deliveries/s",
                     run, result.messages, result.stored, result.seconds, rate, Double(result.deliveries) / result.seconds))
        // Where the time goes: CPU per message of each process, and its share of a core.
        let breakdown = result.cpu.map { name, seconds in
            String(format: "%@ %.1f µs/msg (%.0f%%)", name, seconds / Double(result.messages) * 1e6, seconds / result.seconds * 100)
        }
        print("  cpu: " + breakdown.joined(separator: ", "))
        if result.stored != result.messages { print("MISMATCH: stored \(result.stored) of \(result.messages)"); exit(1) }
    }
    let sorted = rates.sorted()
    print(String(format: "median: %.0f messages/s over %d runs (store workers: %d, rooms: %d, senders/room: %d, window: %d)",
                 sorted[sorted.count / 2], sorted.count, options.storeWorkers, options.rooms, options.senders, options.window))
}
