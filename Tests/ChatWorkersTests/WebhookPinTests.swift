import AsyncHTTPClient
import ChatTesting
import Testing

@testable import ChatWorkers

/// A delivery connects to the address the SSRF guard checked, not to what
/// the HTTP client would look up again (DNS rebinding: a public answer for
/// the check, an internal one for the connection; review finding).
@Suite struct WebhookPinTests {
    @Test func aPinnedClientConnectsToTheVettedAddress() throws {
        let harness = try WorkerHarness()
        let worker = WebhooksWorker(database: harness.database, config: harness.config, logger: harness.logger)
        let receiver = try WebhookReceiver()
        defer { receiver.stop() }
        // A name no resolver answers (RFC 6761's .invalid): only the pin takes the request to the receiver.
        let host = "chatd-pinned.invalid"
        let client = worker.pinnedClient(host: host, address: "127.0.0.1")
        #expect(worker.pinnedClient(host: host, address: "127.0.0.1") === client)
        #expect(worker.pinnedClient(host: "127.0.0.1", address: "127.0.0.1") === worker.client)
        let response = try client.post(url: "http://\(host):\(receiver.port)/pinned", body: .string("{}")).wait()
        #expect(response.status == .ok)
        #expect(receiver.requests.map(\.path) == ["/pinned"])
        // The request still names its host.
        #expect(receiver.requests.first?.headers["host"] == "\(host):\(receiver.port)")
        // Unpinned, the same URL does not resolve.
        #expect(throws: (any Error).self) { try worker.client.post(url: "http://\(host):\(receiver.port)/unpinned", body: .string("{}")).wait() }
    }
}
