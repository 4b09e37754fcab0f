import ChatConfig
import Foundation
import Testing

/// The settings a reload does not apply are pinned in a child's environment
/// (`fixedEnvironment`): a file that changed them is overruled.
@Suite struct FixedSettingsTests {
    @Test func theRunningValuesWinOverAChangedFile() async throws {
        let path = NSTemporaryDirectory() + "chatd-fixed-\(UUID().uuidString).yaml"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let original = "chat:\n  listen: 127.0.0.1:8100\n  dataDir: /tmp/chatd-a\n  maxFrameBytes: 2048\n"
        try original.write(toFile: path, atomically: true, encoding: .utf8)
        let running = try await ChatConfig.load(file: path, environment: [:])
        let changed = """
            chat:
              listen: 127.0.0.1:8200
              dataDir: /tmp/chatd-b
              runtimeDir: /tmp/chatd-b-run
              bus: tcp://127.0.0.1:7400
              run: workers
              maxFrameBytes: 4096

            """
        try changed.write(toFile: path, atomically: true, encoding: .utf8)
        let child = try await ChatConfig.load(file: path, environment: running.fixedEnvironment)
        #expect(child.listen == running.listen && child.dataDir == running.dataDir)
        #expect(child.resolvedRuntimeDir == running.resolvedRuntimeDir && child.resolvedRuntimeDir == "/tmp/chatd-a/run")
        #expect(child.bus == nil && !child.busInsecure && child.run == .all)
        #expect(child.maxFrameBytes == 4096, "the other settings come from the file")
        let fromFile = try await ChatConfig.load(file: path, environment: [:])
        #expect(child == fromFile.keepingFixedSettings(of: running).withRuntimeDir(child.runtimeDir))
    }

    @Test func aTCPBusIsPinnedToo() async throws {
        let running = try await ChatConfig.load(file: nil, environment: ["CHAT_BUS": "tcp://10.0.0.5:7400", "CHAT_BUS_INSECURE": "true", "CHAT_RUN": "frontend"])
        let child = try await ChatConfig.load(file: nil, environment: running.fixedEnvironment)
        #expect(child.bus == "tcp://10.0.0.5:7400" && child.busInsecure && child.run == .frontend)
    }
}

extension ChatConfig {
    func withRuntimeDir(_ dir: String?) -> ChatConfig {
        var config = self
        config.runtimeDir = dir
        return config
    }
}
