import ChatConfig
import Foundation
import Testing

/// `frontends:` is `auto` (one per CPU) or a count from 1 to 64.
@Suite struct FrontendCountTests {
    @Test func autoByDefaultIsOnePerCPU() async throws {
        let config = try await ChatConfig.load(file: nil, environment: [:])
        #expect(config.frontends == 0)
        #expect(config.resolvedFrontends == min(64, max(1, ProcessInfo.processInfo.activeProcessorCount)))
    }

    @Test(arguments: [("auto", 0), ("1", 1), ("3", 3), ("64", 64)])
    func aCountOrAutoIsTaken(text: String, count: Int) async throws {
        let config = try await ChatConfig.load(file: nil, environment: ["CHAT_FRONTENDS": text])
        #expect(config.frontends == count)
        if count > 0 { #expect(config.resolvedFrontends == count) }
    }

    @Test(arguments: ["0", "65", "-1", "two", "3.0", "1e2"])
    func anythingElseIsRefusedNamingTheKey(text: String) async throws {
        let error = await #expect(throws: ConfigError.self) { try await ChatConfig.load(file: nil, environment: ["CHAT_FRONTENDS": text]) }
        #expect(error.map { "\($0)" }?.contains("frontends") == true)
    }

    @Test func theFileSetsItToo() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("frontends-\(UUID()).yaml").path
        try "chat:\n  frontends: 2\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try await ChatConfig.load(file: path, environment: [:]).frontends == 2)
        #expect(try await ChatConfig.load(file: path, environment: ["CHAT_FRONTENDS": "auto"]).frontends == 0)
    }
}
