import ChatCore
import Foundation
import Testing

@testable import ChatFrontend

/// The handshake's command bodies, written by `JSONWriter`: the store and
/// receipts workers read them with `JSONDecoder`, as they read what
/// `JSONEncoder` wrote before.
@Suite struct HandshakeJSONTests {
    @Test func theSessionBodyDecodesToTheSession() throws {
        let agents = ["", "Mozilla/5.0 (X11; Linux x86_64)", "\"quoted\" \\ / \n\t\u{01}", "é 漢字 🎉"]
        for agent in agents {
            for (ip, frontend): (String?, String?) in [(nil, nil), ("127.0.0.1", "frontend"), ("::1", "frontend.3")] {
                let session = Requests.Session(sessionID: UUID().uuidString.lowercased(), roomID: IDs.uuid7(), sessionType: "web",
                                               userAgent: agent, ipAddress: ip, frontend: frontend)
                let decoded = try JSONDecoder().decode(Requests.Session.self, from: Data(session.commandBytes))
                #expect(decoded.sessionID == session.sessionID && decoded.roomID == session.roomID && decoded.sessionType == "web")
                #expect(decoded.userAgent == agent && decoded.ipAddress == ip && decoded.frontend == frontend)
            }
        }
    }

    @Test func theRoomEnterBodyDecodesToTheRoom() throws {
        let room = IDs.uuid7()
        #expect(try JSONDecoder().decode(Requests.RoomRef.self, from: Data(Requests.RoomRef(roomID: room).commandBytes)).roomID == room)
    }
}
