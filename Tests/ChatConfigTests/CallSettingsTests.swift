import ChatConfig
import Foundation
import Testing

/// `calls:` (issue 17): the ICE servers `ice_servers` lists, from the file as
/// a list or the environment comma-separated; a `turn:` URL needs the
/// secret its credentials are signed with; their lifetime is bounded.
@Suite struct CallSettingsTests {
    @Test func serversAndSecretFromTheEnvironment() async throws {
        let config = try await ChatConfig.load(file: nil, environment: [
            "CHAT_CALLS_ICE_SERVERS": "stun:turn.example.com:3478, turn:turn.example.com:3478?transport=udp",
            "CHAT_CALLS_TURN_SECRET": "s3cret", "CHAT_CALLS_TURN_CREDENTIAL_SECONDS": "3600", "CHAT_CALLS_RING_SECONDS": "2.5",
        ])
        #expect(config.callRingMicros == 2_500_000)
        #expect(config.iceServers == ["stun:turn.example.com:3478", "turn:turn.example.com:3478?transport=udp"])
        #expect(config.turnSecret == "s3cret" && config.turnCredentialSeconds == 3600)
        let none = try await ChatConfig.load(file: nil, environment: [:])
        #expect(none.iceServers.isEmpty && none.turnSecret == nil && none.turnCredentialSeconds == 86_400 && none.callRingMicros == 45_000_000)
    }

    @Test func theFileTakesAList() async throws {
        let path = NSTemporaryDirectory() + "calls-\(getpid()).yaml"
        defer { unlink(path) }
        try "chat:\n  calls:\n    iceServers:\n      - stun:a.example:3478\n      - turns:a.example:5349\n    turnSecret: x\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        let config = try await ChatConfig.load(file: path, environment: [:])
        #expect(config.iceServers == ["stun:a.example:3478", "turns:a.example:5349"] && config.turnSecret == "x")
    }

    @Test(arguments: [
        ["CHAT_CALLS_ICE_SERVERS": "turn:a.example:3478"],  // no secret to sign with
        ["CHAT_CALLS_ICE_SERVERS": "https://a.example/"],  // not an ICE URL
        ["CHAT_CALLS_ICE_SERVERS": "stun:"],
        ["CHAT_CALLS_TURN_CREDENTIAL_SECONDS": "10"],
        ["CHAT_CALLS_TURN_CREDENTIAL_SECONDS": "1e300"],  // would overflow the expiry
        ["CHAT_CALLS_RING_SECONDS": "0.5"],  // shorter than the once-a-second sweep
        ["CHAT_CALLS_RING_SECONDS": "3600"],
    ])
    func badSettingsAreRefused(_ environment: [String: String]) async throws {
        await #expect(throws: ConfigError.self) { try await ChatConfig.load(file: nil, environment: environment) }
    }
}
