import ChatConfig
import Testing

/// `run:` is one of three modes, and a split one needs a TCP bus.
@Suite struct RunModeTests {
    @Test func allByDefaultAndTheSplitModesWithABus() async throws {
        let all = try await ChatConfig.load(file: nil, environment: [:])
        #expect(all.run == .all && all.run.runsFrontend && all.run.runsWorkers)
        let frontend = try await ChatConfig.load(file: nil, environment: ["CHAT_RUN": "frontend", "CHAT_BUS": "tcp://127.0.0.1:7400"])
        #expect(frontend.run == .frontend && frontend.run.runsFrontend && !frontend.run.runsWorkers)
        let workers = try await ChatConfig.load(file: nil, environment: ["CHAT_RUN": "workers", "CHAT_BUS": "tcp://127.0.0.1:7400"])
        #expect(workers.run == .workers && !workers.run.runsFrontend && workers.run.runsWorkers)
        // Only a host that serves /metrics counts and reports.
        #expect(all.collectsMetrics && frontend.collectsMetrics && !workers.collectsMetrics)
        let off = try await ChatConfig.load(file: nil, environment: ["CHAT_METRICS": "false"])
        #expect(!off.collectsMetrics)
    }

    @Test func anUnknownModeOrASplitWithoutABusIsRefused() async throws {
        await #expect(throws: ConfigError.self) { try await ChatConfig.load(file: nil, environment: ["CHAT_RUN": "everything"]) }
        await #expect(throws: ConfigError.self) { try await ChatConfig.load(file: nil, environment: ["CHAT_RUN": "workers"]) }
    }

    @Test func portZeroIsAValidListenAddress() async throws {
        let config = try await ChatConfig.load(file: nil, environment: ["CHAT_LISTEN": "127.0.0.1:0"])
        #expect(config.listenAddress?.port == 0)
    }
}
