import Testing

@testable import ChatFrontend

/// What the access log writes of a request target: every `token` and `q`
/// value replaced, however the name is spelled in the query, the rest as it came.
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

    @Test func searchTermsAreRedacted() {
        #expect(AccessLog.redacted("/api/chat/search/messages/?q=my+secret+plan&room_id=r1") == "/api/chat/search/messages/?q=REDACTED&room_id=r1")
        #expect(AccessLog.redacted("/api/chat/search/rooms/?%71=x") == "/api/chat/search/rooms/?%71=REDACTED")
        #expect(AccessLog.redacted("/api/chat/search/rooms/?query=x&qq=y") == "/api/chat/search/rooms/?query=x&qq=y")
    }

    @Test func namesAreReadAsTheHandshakeReadsThem() {
        // `+` is a space in a name: `to+ken` is not `token`, and the value's `+` goes with it.
        #expect(AccessLog.redacted("/ws/chat/r1/?to+ken=a&token=a+b") == "/ws/chat/r1/?to+ken=a&token=REDACTED")
        // Case-sensitive, as the handshake: `Token` is not its credential (it would refuse the socket).
        #expect(AccessLog.redacted("/ws/chat/r1/?Token=a.b.c") == "/ws/chat/r1/?Token=a.b.c")
        #expect(ChatChannel.splitURI("/ws/chat/r1/?Token=a.b.c").query["token"] == nil)
        // A `#` is not a separator for the handshake: it takes it into the value, and so does the redaction.
        #expect(AccessLog.redacted("/ws/chat/r1/?token=a.b.c#frag&x=1") == "/ws/chat/r1/?token=REDACTED&x=1")
        #expect(ChatChannel.splitURI("/ws/chat/r1/?token=a.b.c#frag&x=1").query["token"] == "a.b.c#frag")
        #expect(AccessLog.redacted("/ws/chat/r1/#frag?token=a.b.c") == "/ws/chat/r1/#frag?token=REDACTED")
    }
}
