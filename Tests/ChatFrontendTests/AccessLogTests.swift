import Testing

@testable import ChatFrontend

/// What the access log writes of a request target: every `token` value
/// replaced, however the name is spelled in the query, the rest as it came.
@Suite struct AccessLogTests {
    @Test func tokenValuesAreRedactedAndTheRestKept() {
        #expect(AccessLog.redacted("/ws/chat/r1/?token=eyJ.abc.def") == "/ws/chat/r1/?token=REDACTED")
        #expect(AccessLog.redacted("/ws/chat/r1/?session_type=web&token=a.b.c&x=1") == "/ws/chat/r1/?session_type=web&token=REDACTED&x=1")
        // The name as the handshake decodes it: percent-encoded, repeated.
        #expect(AccessLog.redacted("/x?%74oken=secret&token=again") == "/x?%74oken=REDACTED&token=REDACTED")
        #expect(AccessLog.redacted("/api/chat/rooms/?tokens=1&page=2") == "/api/chat/rooms/?tokens=1&page=2")
        #expect(AccessLog.redacted("/api/chat/rooms/") == "/api/chat/rooms/")
        #expect(AccessLog.redacted("/x?token") == "/x?token")
    }
}
