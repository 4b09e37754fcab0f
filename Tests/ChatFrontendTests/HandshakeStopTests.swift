import Foundation
import NIOHTTP1
import Testing

@testable import ChatFrontend

/// A handshake that finishes after the frontend's stop began would open a
/// socket the server's shutdown already passed over: it never gets its close
/// code. It is refused instead.
@Suite struct HandshakeStopTests {
    @Test func aHandshakeAfterTheStopBeganIsRefused() async throws {
        let refused: Int? = try await InProcessServer.run(configure: Steps.noRateLimits) { server in
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/ws/chat/\(room)/?token=\(tokens[0])")
            let before = await ChatChannel.authorize(head: head, peer: nil, services: server.services)
            var accepted = false
            if case .accepted = before { accepted = true }
            #expect(accepted, "refused while serving: \(before)")
            server.services.bus.unsubscribe(room: room)
            server.services.life.stopForRestart()
            #expect(server.services.life.isStopping && server.services.life.shutdownCloseCode == 1012)
            if case .refused(let status, _) = await ChatChannel.authorize(head: head, peer: nil, services: server.services) { return status.code }
            return nil
        }
        #expect(refused == 503, "accepted after the stop began")
    }

    @Test func aStopForGoodSays1001() {
        let life = FrontendLife()
        #expect(!life.isStopping)
        life.stopForGood()
        #expect(life.isStopping && life.shutdownCloseCode == 1001)
    }
}
