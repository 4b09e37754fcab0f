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

    /// Attachments go over the bus where the files worker is on another
    /// host, through the disk where it is on this one; either may be named.
    @Test func attachmentsFollowTheRunModeUnlessNamed() async throws {
        let bus = ["CHAT_BUS": "tcp://127.0.0.1:7400"]
        #expect(try await ChatConfig.load(file: nil, environment: [:]).resolvedAttachments == .local)
        #expect(try await ChatConfig.load(file: nil, environment: bus.merging(["CHAT_RUN": "frontend"]) { $1 }).resolvedAttachments == .bus)
        #expect(try await ChatConfig.load(file: nil, environment: ["CHAT_ATTACHMENTS": "bus"]).resolvedAttachments == .bus)
        let shared = bus.merging(["CHAT_RUN": "frontend", "CHAT_ATTACHMENTS": "local"]) { $1 }
        #expect(try await ChatConfig.load(file: nil, environment: shared).resolvedAttachments == .local)
        #expect(try await ChatConfig.load(file: nil, environment: ["CHAT_ATTACHMENTS": "auto"]).attachments == nil)
        await #expect(throws: ConfigError.self) { try await ChatConfig.load(file: nil, environment: ["CHAT_ATTACHMENTS": "s3"]) }
    }

    /// Every workers host but one turns the files worker off: the broker
    /// would split an upload's chunks between two hosts' files workers.
    @Test func filesWorkersZeroRunsNoFilesWorkerAndSendsAttachmentsOverTheBus() async throws {
        let workers = ["CHAT_RUN": "workers", "CHAT_BUS": "tcp://127.0.0.1:7400"]
        #expect(try await ChatConfig.load(file: nil, environment: workers).runsFilesWorker)
        let off = try await ChatConfig.load(file: nil, environment: workers.merging(["CHAT_FILES_WORKERS": "0"]) { $1 })
        #expect(!off.runsFilesWorker)
        let all = try await ChatConfig.load(file: nil, environment: ["CHAT_FILES_WORKERS": "0"])
        #expect(!all.runsFilesWorker && all.resolvedAttachments == .bus)
        #expect(!(try await ChatConfig.load(file: nil, environment: ["CHAT_RUN": "frontend", "CHAT_BUS": "tcp://127.0.0.1:7400"]).runsFilesWorker))
        await #expect(throws: ConfigError.self) { try await ChatConfig.load(file: nil, environment: ["CHAT_FILES_WORKERS": "2"]) }
    }

    @Test func portZeroIsAValidListenAddress() async throws {
        let config = try await ChatConfig.load(file: nil, environment: ["CHAT_LISTEN": "127.0.0.1:0"])
        #expect(config.listenAddress?.port == 0)
    }
}
