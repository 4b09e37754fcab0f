import ChatConfig
import Foundation
import Logging
import Testing

/// `logFormat: json`: each line one JSON object that a JSON parser reads
/// back to exactly what was logged, whatever the message and metadata hold.
@Suite struct LogFormatTests {
    private func decoded(_ handler: JSONLogHandler, message: String, metadata: Logger.Metadata = [:], error: String? = nil) throws -> [String: Any] {
        let line = handler.encode(level: .warning, message: message, metadata: metadata, error: error, time: Date(timeIntervalSince1970: 1_796_072_841.1239))
        #expect(!line.contains(UInt8(ascii: "\n")), "a line break inside the line")
        return try #require(try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
    }

    @Test func theFixedFieldsAreThere() throws {
        let object = try decoded(JSONLogHandler(label: "chatd.supervisor", role: "store.1", pid: 4242), message: "child exited")
        #expect(object["time"] as? String == "2026-11-30T21:07:21.123Z")
        #expect(object["level"] as? String == "warning")
        #expect(object["label"] as? String == "chatd.supervisor")
        #expect(object["role"] as? String == "store.1")
        #expect(object["pid"] as? Int == 4242)
        #expect(object["message"] as? String == "child exited")
        #expect(object["metadata"] == nil)
        #expect(object["error"] == nil)
    }

    @Test func quotesNewlinesControlsAndUnicodeSurviveTheRoundTrip() throws {
        let tricky = "say \"hi\"\\ now\nnext line\r\ttab \u{1} \u{7f} é 日本 🙂 \u{2028}"
        let object = try decoded(JSONLogHandler(label: "a\"b", role: "frontend.0"), message: tricky, metadata: [tricky: .string(tricky)], error: tricky)
        #expect(object["message"] as? String == tricky)
        #expect(object["label"] as? String == "a\"b")
        #expect(object["error"] as? String == tricky)
        #expect((object["metadata"] as? [String: Any])?[tricky] as? String == tricky)
    }

    @Test func nestedMetadataBecomesObjectsAndArrays() throws {
        let metadata: Logger.Metadata = [
            "child": "store.0",
            "count": .stringConvertible(42),
            "nested": .dictionary(["list": .array(["a", .dictionary(["deep": "x\"y"]), .array([])]), "empty": .dictionary([:])]),
        ]
        let object = try decoded(JSONLogHandler(label: "l", role: "r"), message: "m", metadata: metadata)
        let fields = try #require(object["metadata"] as? [String: Any])
        #expect(fields["child"] as? String == "store.0")
        #expect(fields["count"] as? String == "42")
        let nested = try #require(fields["nested"] as? [String: Any])
        let list = try #require(nested["list"] as? [Any])
        #expect(list.count == 3)
        #expect(list[0] as? String == "a")
        #expect((list[1] as? [String: Any])?["deep"] as? String == "x\"y")
        #expect((list[2] as? [Any])?.isEmpty == true)
        #expect((nested["empty"] as? [String: Any])?.isEmpty == true)
    }

    @Test func theHandlersMetadataIsMergedUnderTheEventsOwn() throws {
        var handler = JSONLogHandler(label: "l", role: "r")
        handler[metadataKey: "worker"] = "store.0"
        handler[metadataKey: "shared"] = "handler"
        #expect(handler[metadataKey: "worker"] == "store.0")
        // `log(event:)` merges the same way; `encode` is given the result.
        var merged = handler.metadata
        merged.merge(["shared": "event"]) { $1 }
        let fields = try #require(try decoded(handler, message: "m", metadata: merged)["metadata"] as? [String: Any])
        #expect(fields["worker"] as? String == "store.0")
        #expect(fields["shared"] as? String == "event")
    }

    @Test func logFormatIsCheckedAtLoad() async throws {
        #expect(try await ChatConfig.load(file: nil, environment: [:]).logFormat == .text)
        #expect(try await ChatConfig.load(file: nil, environment: ["CHAT_LOG_FORMAT": "json"]).logFormat == .json)
        let error = await #expect(throws: ConfigError.self) { try await ChatConfig.load(file: nil, environment: ["CHAT_LOG_FORMAT": "xml"]) }
        #expect(error.map { "\($0)" } == "CHAT_LOG_FORMAT=xml: invalid value for logFormat: xml: one of text, json")
        #expect(try await ChatConfig.load(file: nil, environment: ["CHAT_ACCESS_LOG": "true"]).accessLog)
        #expect(try await !ChatConfig.load(file: nil, environment: [:]).accessLog)
    }
}
