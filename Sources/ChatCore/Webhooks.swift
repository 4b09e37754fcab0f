import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Issue 16's webhooks: what the frontend, the store shard and the webhooks
/// worker share (api-contract.md "Webhooks").
public enum Webhooks {
    /// The events a webhook may subscribe to, in the contract's order.
    public static let events = ["message_created", "message_edited", "message_deleted", "member_joined", "member_left"]

    /// `X-Chat-Signature`'s value: `sha256=` and the hex HMAC-SHA256 of the body with the secret.
    public static func signature(body: [UInt8], secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Array(secret.utf8)))
        return "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    /// A new secret: 32 random bytes as hex (for outgoing signatures and incoming URLs).
    public static func newSecret() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }.map { String(format: "%02x", $0) }.joined()
    }

    /// How an incoming webhook's token is kept: its SHA-256, so a copy of the database does not post.
    public static func tokenHash(_ token: String) -> String {
        SHA256.hash(data: Array(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The delivery's body, rendered once when the event is stored.
    public static func deliveryBody(id: String, event: String, room: String, data: [UInt8], at: Timestamp) -> [UInt8] {
        var w = JSONWriter(capacity: 128 + data.count)
        w.beginObject()
        w.field("id", id)
        w.field("event", event)
        w.field("room", room)
        w.key("data")
        w.raw(data)
        w.field("timestamp", at)
        w.endObject()
        return w.bytes
    }

    /// A `member_joined` / `member_left` event's data: `{"user": {...}}`.
    public static func memberData(_ user: User) -> [UInt8] {
        var w = JSONWriter(capacity: 160)
        w.beginObject()
        w.key("user")
        ClientJSON.write(user, to: &w)
        w.endObject()
        return w.bytes
    }
}

extension Requests {
    /// `POST .../webhooks/`: checked by the frontend (URL, events, target), stored by the shard.
    public struct WebhookCreate: Codable, Sendable {
        public var id: String
        public var roomID: String
        public var url: String
        public var events: [String]
        public var secret: String

        public init(id: String, roomID: String, url: String, events: [String], secret: String) {
            (self.id, self.roomID, self.url, self.events, self.secret) = (id, roomID, url, events, secret)
        }
    }

    /// One webhook of a room (`DELETE`, `failures/`); `page` for lists.
    public struct WebhookRef: Codable, Sendable {
        public var roomID: String
        public var webhookID: String

        public init(roomID: String, webhookID: String) { (self.roomID, self.webhookID) = (roomID, webhookID) }
    }

    /// `GET .../webhooks/{wid}/failures/`: the webhook and the page.
    public struct WebhookFailures: Codable, Sendable {
        public var ref: WebhookRef
        public var page: Page

        public init(ref: WebhookRef, page: Page) { (self.ref, self.page) = (ref, page) }
    }

    /// `POST .../webhooks/incoming/`: the bot's name, the new ids, the URL's
    /// token and the URL itself (the frontend knows the public address).
    public struct IncomingWebhookCreate: Codable, Sendable {
        public var id: String
        public var roomID: String
        public var name: String
        public var token: String
        public var botUserID: String
        public var url: String

        public init(id: String, roomID: String, name: String, token: String, botUserID: String, url: String) {
            (self.id, self.roomID, self.name, self.token, self.botUserID, self.url) = (id, roomID, name, token, botUserID, url)
        }
    }

    /// A message posted to an incoming webhook's URL (no caller: the token is the credential).
    public struct IncomingWebhookPost: Codable, Sendable {
        public var roomID: String
        public var hookID: String
        public var token: String
        public var messageID: String
        public var content: String

        public init(roomID: String, hookID: String, token: String, messageID: String, content: String) {
            (self.roomID, self.hookID, self.token, self.messageID, self.content) = (roomID, hookID, token, messageID, content)
        }
    }
}

/// The SSRF guard: which addresses a webhook may reach. A URL's host is
/// resolved and every address checked, when the webhook is created and again
/// before each delivery (DNS may change in between).
public enum WebhookTarget {
    public enum Refusal: Error, Equatable, Sendable {
        case badURL(String)
        case unresolvable(String)
        case privateAddress(String)

        public var message: String {
            switch self {
            case .badURL(let why): why
            case .unresolvable(let host): "The host \(host) does not resolve."
            // Not the address: the answer would map internal names for anyone (the
            // check runs before the room's permission is known).
            case .privateAddress: "The URL resolves to a loopback, private or link-local address."
            }
        }
    }

    /// The URL's scheme and host, or why it is not a webhook URL.
    public static func parse(_ text: String) -> Result<(scheme: String, host: String, port: Int), Refusal> {
        guard text.utf8.count <= 2000, let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(),
              ["http", "https"].contains(scheme) else {
            return .failure(.badURL("Enter a valid http:// or https:// URL."))
        }
        guard let host = url.host, !host.isEmpty else { return .failure(.badURL("Enter a valid URL with a host.")) }
        guard url.user == nil, url.password == nil else { return .failure(.badURL("A webhook URL carries no user or password.")) }
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        return .success((scheme, bare, url.port ?? (scheme == "https" ? 443 : 80)))
    }

    /// Whether an IPv4 or IPv6 address (text) is on a loopback, private,
    /// link-local, unspecified, CGNAT or multicast network: none a public
    /// webhook should reach.
    public static func isPrivate(_ address: String) -> Bool {
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 {
            let b = withUnsafeBytes(of: v4.s_addr) { Array($0) }
            return isPrivateV4(b)
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, address, &v6) == 1 else { return true }
        let b = withUnsafeBytes(of: v6) { Array($0) }
        // ::ffff:a.b.c.d and ::a.b.c.d carry an IPv4 address.
        if b[0..<10].allSatisfy({ $0 == 0 }) && ((b[10] == 0xff && b[11] == 0xff) || (b[10] == 0 && b[11] == 0)) {
            if b[10] == 0 && b[0..<16].dropLast(1).allSatisfy({ $0 == 0 }) { return true }  // :: and ::1
            return isPrivateV4(Array(b[12..<16]))
        }
        if b[0] == 0xfe && (b[1] & 0xc0) == 0x80 { return true }  // fe80::/10 link-local
        if (b[0] & 0xfe) == 0xfc { return true }  // fc00::/7 unique local
        if b[0] == 0xff { return true }  // multicast
        if b[0] == 0x20 && b[1] == 0x02 { return isPrivateV4(Array(b[2..<6])) }  // 6to4 of a private IPv4
        // NAT64 (RFC 6052's 64:ff9b::/96 carries an IPv4 address; RFC 8215's
        // 64:ff9b:1::/48 is local use) and SIIT's ::ffff:0:a.b.c.d: a gateway
        // turns them into IPv4 on the inside.
        if b[0..<12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] { return isPrivateV4(Array(b[12..<16])) }
        if b[0..<6] == [0, 0x64, 0xff, 0x9b, 0, 1] { return true }
        if b[0..<8].allSatisfy({ $0 == 0 }) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0 {
            return isPrivateV4(Array(b[12..<16]))
        }
        return false
    }

    static func isPrivateV4(_ b: [UInt8]) -> Bool {
        switch (b[0], b[1]) {
        case (0, _), (10, _), (127, _): true
        case (169, 254), (192, 168): true
        case (172, 16...31): true
        case (100, 64...127): true  // carrier-grade NAT
        case (224...255, _): true  // multicast, reserved, broadcast
        default: false
        }
    }

    /// The host's addresses (getaddrinfo; blocks, so callers run it off an event loop).
    public static func resolve(_ host: String) -> [String] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { return [] }
        defer { freeaddrinfo(list) }
        var addresses: [String] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                addresses.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
            cursor = info.pointee.ai_next
        }
        return addresses
    }

    /// Checks a URL as the guard does: parsed, resolved, and (unless
    /// `allowPrivate`) every address public. Blocks on DNS.
    public static func check(_ url: String, allowPrivate: Bool) -> Refusal? {
        if case .failure(let refusal) = vet(url, allowPrivate: allowPrivate) { return refusal }
        return nil
    }

    /// What `check` does, and the URL's host with the address a request must
    /// connect to: one of those checked (an IPv4 one when there is one), so
    /// that a second lookup by the HTTP client (DNS rebinding: public for the
    /// check, internal for the connection) cannot take it elsewhere.
    public static func vet(_ url: String, allowPrivate: Bool) -> Result<(host: String, address: String), Refusal> {
        let host: String
        switch parse(url) {
        case .failure(let refusal): return .failure(refusal)
        case .success(let parsed): host = parsed.host
        }
        let addresses = resolve(host)
        guard !addresses.isEmpty else { return .failure(.unresolvable(host)) }
        if !allowPrivate, let address = addresses.first(where: isPrivate) { return .failure(.privateAddress(address)) }
        var v4 = in_addr()
        return .success((host, addresses.first { inet_pton(AF_INET, $0, &v4) == 1 } ?? addresses[0]))
    }
}
