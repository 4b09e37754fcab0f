import ChatCore
import Testing

/// The SSRF guard's address rules and URL parsing (ChatCore's WebhookTarget).
struct WebhookTargetTests {
    @Test func privateAddresses() {
        for address in ["127.0.0.1", "127.9.9.9", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
                        "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fd00::1", "fc00::1",
                        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "ff02::1", "2002:0a00:0001::1", "not an address",
                        // NAT64 and SIIT spellings of private IPv4 (review finding), and NAT64's local-use prefix.
                        "64:ff9b::7f00:1", "64:ff9b::a00:5", "64:ff9b:1::808:808", "::ffff:0:10.0.0.1"] {
            #expect(WebhookTarget.isPrivate(address), "\(address)")
        }
    }

    @Test func publicAddresses() {
        for address in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "192.169.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "2002:0808:0808::1",
                        "64:ff9b::808:808", "::ffff:0:8.8.8.8"] {
            #expect(!WebhookTarget.isPrivate(address), "\(address)")
        }
    }

    @Test func urls() throws {
        #expect(try WebhookTarget.parse("https://example.com/hook").get().port == 443)
        #expect(try WebhookTarget.parse("http://[::1]:8080/").get().host == "::1")
        for bad in ["ftp://example.com/", "example.com/hook", "http:///nohost", "https://user:pw@example.com/", ""] {
            #expect((try? WebhookTarget.parse(bad).get()) == nil, "\(bad)")
        }
        #expect(WebhookTarget.check("http://localhost:1/", allowPrivate: false) != nil)
        #expect(WebhookTarget.check("http://127.0.0.1:1/", allowPrivate: true) == nil)
        // The address a delivery connects to is one the guard checked; an IPv4 one first.
        let vetted = try WebhookTarget.vet("http://localhost:1/", allowPrivate: true).get()
        #expect(vetted.host == "localhost" && WebhookTarget.resolve("localhost").contains(vetted.address))
        #expect(try WebhookTarget.vet("http://[::1]:1/", allowPrivate: true).get().address == "::1")
        // Refused with no address in the message: the answer would map internal names.
        #expect(WebhookTarget.check("http://127.0.0.1:1/", allowPrivate: false)?.message == "The URL resolves to a loopback, private or link-local address.")
    }

    @Test func signatureIsTheHexHMAC() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        #expect(Webhooks.signature(body: Array("what do ya want for nothing?".utf8), secret: "Jefe")
            == "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }
}
