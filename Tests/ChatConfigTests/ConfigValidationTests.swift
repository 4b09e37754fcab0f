import ChatConfig
import Foundation
import Testing

/// A configuration chatd cannot use is refused at load, naming where the
/// value is (the file and key, or the variable) and what would be accepted.
@Suite struct ConfigValidationTests {
    private func refusal(file contents: String?, environment: [String: String] = [:]) async throws -> (message: String, path: String) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-\(UUID()).yaml").path
        if let contents { try contents.write(toFile: path, atomically: true, encoding: .utf8) }
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = await #expect(throws: ConfigError.self) {
            try await ChatConfig.load(file: contents == nil ? nil : path, environment: environment)
        }
        return (error.map { "\($0)" } ?? "", path)
    }

    @Test func aMistypedKeyIsRefusedWithTheNearestKnownOne() async throws {
        let (message, path) = try await refusal(file: "chat:\n  listne: 127.0.0.1:9000\n")
        #expect(message == "\(path): listne: unknown key (did you mean listen?)")
    }

    @Test func aNestedKeyIsKnownAndItsTyposAreNot() async throws {
        let (message, path) = try await refusal(file: "chat:\n  auth:\n    leewaySecond: 5\n")
        #expect(message == "\(path): auth.leewaySecond: unknown key (did you mean auth.leewaySeconds?)")
    }

    @Test func aKeyFarFromEveryKnownOneGetsNoGuess() async throws {
        let (message, path) = try await refusal(file: "chat:\n  colour: blue\n")
        #expect(message == "\(path): colour: unknown key")
    }

    @Test func aSettingOutsideChatIsRefused() async throws {
        let (message, path) = try await refusal(file: "listen: 127.0.0.1:9000\n")
        #expect(message == "\(path): listen: unknown key (settings go under chat:; did you mean chat.listen?)")
    }

    @Test func aWordWhereANumberGoesIsRefused() async throws {
        let (message, path) = try await refusal(file: "chat:\n  maxMessageChars: lots\n")
        #expect(message == "\(path): maxMessageChars: must be a whole number")
    }

    @Test func anUnknownLogLevelIsRefusedListingTheLevels() async throws {
        let (message, path) = try await refusal(file: "chat:\n  logLevel: loud\n")
        #expect(message == "\(path): invalid value for logLevel: loud: one of trace, debug, info, notice, warning, error, critical")
    }

    @Test func badEnvironmentValuesNameTheVariable() async throws {
        #expect(try await refusal(file: nil, environment: ["CHAT_MAX_MESSAGE_CHARS": "lots"]).message
            == "CHAT_MAX_MESSAGE_CHARS=lots: must be a whole number")
        #expect(try await refusal(file: nil, environment: ["CHAT_HANG_TIMEOUT_SECONDS": "soon"]).message
            == "CHAT_HANG_TIMEOUT_SECONDS=soon: must be a number")
        #expect(try await refusal(file: nil, environment: ["CHAT_STANDBYS": "maybe"]).message
            == "CHAT_STANDBYS=maybe: must be true or false")
        #expect(try await refusal(file: nil, environment: ["CHAT_LOG_LEVEL": "loud"]).message
            == "CHAT_LOG_LEVEL=loud: invalid value for logLevel: loud: one of trace, debug, info, notice, warning, error, critical")
    }

    @Test func theEnvironmentOverridingABadFileValueIsStillAFaultInTheFile() async throws {
        // The environment wins, but the file would break the next start without it.
        let (message, path) = try await refusal(file: "chat:\n  listne: x\n", environment: ["CHAT_LISTEN": "127.0.0.1:0"])
        #expect(message.hasPrefix("\(path): listne: unknown key"))
    }

    @Test func everyKeyOfTheExampleFileIsKnown() async throws {
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../etc/chatd.yaml").path
        _ = try await ChatConfig.load(file: example, environment: [:])
    }

    /// docs/operations.md installs etc/chatd.yaml with the unit's directories
    /// (by a sed, so the comments stay): run that very line on the example
    /// file, and the result names /var/lib/chatd and /run/chatd. Fails when
    /// the example's lines and the install's patterns drift apart.
    @Test func theInstalledFileNamesTheUnitsDirectories() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized
        let guide = try String(contentsOf: root.appendingPathComponent("docs/operations.md"), encoding: .utf8)
        let line = try #require(guide.split(separator: "\n").first { $0.hasPrefix("sed ") && $0.contains("etc/chatd.yaml") })
        let command = line.hasSuffix(" \\") ? String(line.dropLast(2)) : String(line)
        let installed = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-\(UUID()).yaml").path
        defer { try? FileManager.default.removeItem(atPath: installed) }
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = ["-c", command + " > '\(installed)'"]
        shell.currentDirectoryURL = root
        try shell.run()
        shell.waitUntilExit()
        #expect(shell.terminationStatus == 0)
        let config = try await ChatConfig.load(file: installed, environment: [:])
        #expect(config.dataDir == "/var/lib/chatd")
        #expect(config.resolvedRuntimeDir == "/run/chatd")
    }

    @Test func theJWKSKeyIsKnownWhenTheVariableOverridesIt() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-\(UUID()).yaml").path
        try "chat:\n  auth:\n    jwks: /keys.json\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try await ChatConfig.load(file: path, environment: ["CHAT_JWKS": "/other.json"]).jwks == "/other.json")
    }
}
