import ChatConfig
import Testing

/// The edge's settings: out-of-range values are refused when the
/// configuration loads, not when a connection arrives.
@Suite struct EdgeLimitTests {
    @Test func defaultsLoadAndRateLimitsTurnOff() async throws {
        let defaults = try await ChatConfig.load(file: nil, environment: [:])
        #expect(defaults.rateLimits && defaults.maxURLBytes == 8192 && defaults.headTimeoutSeconds == 10)
        #expect(try await ChatConfig.load(file: nil, environment: ["CHAT_RATE_LIMITS": "off"]).rateLimits == false)
        // The environment names follow the keys (`maxUrlBytes` is CHAT_MAX_URL_BYTES).
        #expect(try await ChatConfig.load(file: nil, environment: ["CHAT_MAX_URL_BYTES": "4096"]).maxURLBytes == 4096)
    }

    @Test func outOfRangeValuesAreRefused() async throws {
        for (key, value) in [
            ("CHAT_HEAD_TIMEOUT_SECONDS", "1e12"), ("CHAT_KEEP_ALIVE_TIMEOUT_SECONDS", "0"), ("CHAT_BODY_TIMEOUT_SECONDS", "-1"),
            ("CHAT_MAX_URL_BYTES", "0"), ("CHAT_REST_BURST", "nan"), ("CHAT_RATE_LIMITS", "sometimes"),
        ] {
            await #expect(throws: (any Error).self, "\(key)=\(value)") { try await ChatConfig.load(file: nil, environment: [key: value]) }
        }
    }
}
