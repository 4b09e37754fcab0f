import ChatWire
import Testing

/// A room event's key frame with the users it is hidden from (blocks).
@Suite struct HiddenFromTests {
    @Test func aKeyWithHiddenUsersRoundTrips() throws {
        let key = EventKey.message(id: "m1", change: .created)
        #expect(key.frame(hiddenFrom: []) == "m:m1:new")
        #expect(key.frame(hiddenFrom: ["u1", "u2"]) == "m:m1:new|u1,u2")
        let parsed = try #require(EventKey.parse("m:m1:new|u1,u2"))
        #expect(parsed.key == key && parsed.hiddenFrom == ["u1", "u2"])
        let plain = try #require(EventKey.parse("m:m1:new"))
        #expect(plain.key == key && plain.hiddenFrom.isEmpty)
        #expect(EventKey.parse("")?.key == EventKey.none)
        let event = Event.room("r", key: key, hiddenFrom: ["u1"], body: [])
        #expect(event.key == "m:m1:new|u1")
    }

    @Test func aMalformedKeyBeforeTheBarIsRefused() {
        #expect(EventKey.parse("q:1|u1") == nil)
        #expect(EventKey.parse("m:1:old|u1") == nil)
    }
}
