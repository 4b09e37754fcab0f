import ChatConfig
import Foundation
import Testing

/// A tcp:// bus is refused off loopback until `bus.insecure` says so.
@Suite struct BusExposureTests {
    func load(_ environment: [String: String]) async throws -> ChatConfig {
        try await ChatConfig.load(file: nil, environment: environment)
    }

    @Test func ipcAndLoopbackBusesAreAccepted() async throws {
        try await load([:]).checkBusExposure()
        for bus in ["tcp://127.0.0.1:7400", "tcp://127.1.2.3:7400", "tcp://localhost:7400", "tcp://[::1]:7400"] {
            try await load(["CHAT_BUS": bus]).checkBusExposure()
        }
    }

    @Test func aNonLoopbackBusIsRefusedWithTheReason() async throws {
        for bus in ["tcp://10.0.0.5:7400", "tcp://0.0.0.0:7400", "tcp://*:7400", "tcp://chat-broker.internal:7400", "tcp://127.0.0.1.evil.example:7400"] {
            let config = try await load(["CHAT_BUS": bus])
            #expect(!config.busInsecure)
            do {
                try config.checkBusExposure()
                Issue.record("\(bus) was accepted")
            } catch {
                let text = "\(error)"
                #expect(text.contains("no authentication"), "\(text)")
                #expect(text.contains("bus.insecure: true"), "\(text)")
            }
        }
    }

    @Test func theEnvironmentCanAcceptTheRisk() async throws {
        let config = try await load(["CHAT_BUS": "tcp://10.0.0.5:7400", "CHAT_BUS_INSECURE": "true"])
        #expect(config.busInsecure)
        try config.checkBusExposure()
    }

    @Test func theFileCanAcceptTheRisk() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-bus-\(UUID().uuidString).yaml").path
        try "chat:\n  bus: \"tcp://10.0.0.5:7400\"\n  bus.insecure: true\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let config = try await ChatConfig.load(file: path, environment: [:])
        #expect(config.bus == "tcp://10.0.0.5:7400")
        #expect(config.busInsecure)
        try config.checkBusExposure()
    }
}
