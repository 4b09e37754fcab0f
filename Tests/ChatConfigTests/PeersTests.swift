import ChatConfig
import ChatWire
import Foundation
import Testing

/// `peers:` (every frontend host's broker) and `host:` (this host's name in
/// `ctl status`): read from the file as a list and from the environment
/// comma-separated, checked, and kept as fixed settings.
@Suite struct PeersTests {
    let two = "tcp://10.0.0.1:7400,tcp://10.0.0.2:7400"

    @Test func aWorkersHostLinksToEveryPeerWithoutABus() async throws {
        let config = try await ChatConfig.load(file: nil, environment: ["CHAT_RUN": "workers", "CHAT_PEERS": two, "CHAT_HOST": "w1"])
        #expect(config.peers == ["tcp://10.0.0.1:7400", "tcp://10.0.0.2:7400"])
        #expect(config.host == "w1")
        let buses: [BusAddress] = [.tcp(host: "10.0.0.1", basePort: 7400), .tcp(host: "10.0.0.2", basePort: 7400)]
        #expect(config.workerBuses == buses)
        #expect(config.statusBrokers == buses)
        // Beyond loopback, as with bus: only with bus.insecure (or, later, keys).
        #expect(throws: ConfigError.self) { try config.checkPeerExposure() }
        var insecure = config
        insecure.busInsecure = true
        try insecure.checkPeerExposure()
    }

    @Test func aFrontendHostReadsTheOtherBrokersAndItsWorkersUseItsOwn() async throws {
        let config = try await ChatConfig.load(file: nil, environment: [
            "CHAT_RUN": "frontend", "CHAT_BUS": "tcp://10.0.0.1:7400", "CHAT_PEERS": two,
        ])
        // Its own broker (where workers hosts publish) and the other frontend host's.
        #expect(config.statusBrokers == [.tcp(host: "10.0.0.1", basePort: 7400), .tcp(host: "10.0.0.2", basePort: 7400)])
        #expect(config.workerBuses == [config.busAddress])
        // Today's single bus without peers: unchanged, and nobody to read from on one host.
        let single = try await ChatConfig.load(file: nil, environment: ["CHAT_RUN": "workers", "CHAT_BUS": "tcp://127.0.0.1:7400"])
        #expect(single.workerBuses == [.tcp(host: "127.0.0.1", basePort: 7400)])
        #expect(single.statusBrokers == single.workerBuses)
        let one = try await ChatConfig.load(file: nil, environment: [:])
        #expect(one.statusBrokers.isEmpty && one.peers.isEmpty)
        #expect(one.host == ChatConfig.machineHostname() && !one.host.isEmpty)
    }

    @Test func theFileTakesAListAndBadValuesAreRefused() async throws {
        let path = NSTemporaryDirectory() + "peers-\(getpid()).yaml"
        defer { unlink(path) }
        try "chat:\n  run: workers\n  host: worker-1\n  peers:\n    - tcp://10.0.0.1:7400\n    - tcp://10.0.0.2:7400\n".write(toFile: path, atomically: true, encoding: .utf8)
        let config = try await ChatConfig.load(file: path, environment: [:])
        #expect(config.peers.count == 2 && config.host == "worker-1")
        await #expect(throws: ConfigError.self) {
            try await ChatConfig.load(file: nil, environment: ["CHAT_RUN": "workers", "CHAT_PEERS": "10.0.0.1:7400"])
        }
        await #expect(throws: ConfigError.self) { try await ChatConfig.load(file: nil, environment: ["CHAT_HOST": "two words"]) }
        // A frontend host still needs its own broker's address.
        await #expect(throws: ConfigError.self) { try await ChatConfig.load(file: nil, environment: ["CHAT_RUN": "frontend", "CHAT_PEERS": two]) }
    }

    /// Peers are trimmed; a broker listed twice (after trimming and case)
    /// is refused, since every event would reach it twice; a frontend host's
    /// own broker is a peer whether listed or not; `run: all` takes none.
    @Test func peersAreTrimmedDuplicatesRefusedAndTheOwnBrokerImplicit() async throws {
        let spaced = try await ChatConfig.load(file: nil, environment: ["CHAT_RUN": "workers", "CHAT_PEERS": " tcp://10.0.0.1:7400 , tcp://10.0.0.2:7400"])
        #expect(spaced.peers == ["tcp://10.0.0.1:7400", "tcp://10.0.0.2:7400"])
        for twice in ["tcp://10.0.0.1:7400,tcp://10.0.0.1:7400", "tcp://host-a:7400, tcp://HOST-A:7400 "] {
            await #expect(throws: ConfigError.self, "\(twice)") {
                try await ChatConfig.load(file: nil, environment: ["CHAT_RUN": "workers", "CHAT_PEERS": twice])
            }
        }
        let own = BusAddress.tcp(host: "10.0.0.1", basePort: 7400)
        for listed in ["tcp://10.0.0.2:7400", "tcp://10.0.0.2:7400,tcp://10.0.0.1:7400"] {
            let frontend = try await ChatConfig.load(file: nil, environment: [
                "CHAT_RUN": "frontend", "CHAT_BUS": "tcp://10.0.0.1:7400", "CHAT_PEERS": listed,
            ])
            #expect(frontend.statusBrokers == [own, .tcp(host: "10.0.0.2", basePort: 7400)], "\(listed)")
        }
        await #expect(throws: ConfigError.self) {
            try await ChatConfig.load(file: nil, environment: ["CHAT_RUN": "all", "CHAT_BUS": "tcp://127.0.0.1:7400", "CHAT_PEERS": two])
        }
    }

    @Test func peersAndHostAreFixedSettings() async throws {
        var running = ChatConfig()
        running.peers = ["tcp://10.0.0.1:7400"]
        running.host = "fe-1"
        let child = try await ChatConfig.load(file: nil, environment: running.fixedEnvironment.merging(["CHAT_RUN": "workers"]) { $1 })
        #expect(child.peers == running.peers && child.host == "fe-1")
        let none = try await ChatConfig.load(file: nil, environment: ChatConfig().fixedEnvironment)
        #expect(none.peers.isEmpty)
    }
}
