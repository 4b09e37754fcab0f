import ChatConfig
import ChatCore
import ChatTesting
import Foundation
import Logging
import Testing

@testable import ChatFrontend

/// Key selection, header parsing, the JWKS refresh policy and the
/// authenticator itself, without a server (RFC 8725 §3.1, RFC 7517).
@Suite struct TokenKeys {
    static func header(_ json: String) -> String {
        TestTokens.base64URL(Data(json.utf8))
    }

    @Test func headerParsing() throws {
        #expect(try TokenHeader.parse("\(Self.header(#"{"alg":"RS256","kid":"k1"}"#)).e30.c2ln") == TokenHeader(alg: "RS256", kid: "k1"))
        #expect(try TokenHeader.parse("\(Self.header(#"{"typ":"JWT"}"#)).e30.c2ln") == TokenHeader(alg: nil, kid: nil))
        // An unsigned token (empty signature) still has three segments.
        #expect(try TokenHeader.parse("\(Self.header(#"{"alg":"none"}"#)).e30.") == TokenHeader(alg: "none", kid: nil))
        #expect(throws: TokenHeader.Problem.badHeader) { try TokenHeader.parse("\(Self.header(#"{"alg":1}"#)).e30.c2ln") }
        #expect(throws: TokenHeader.Problem.badHeader) { try TokenHeader.parse("\(Self.header(#"{"alg":"HS256","kid":7}"#)).e30.c2ln") }
        #expect(throws: TokenHeader.Problem.badHeader) { try TokenHeader.parse("\(Self.header(#"{"alg":"HS256","crit":["x"]}"#)).e30.c2ln") }
        #expect(throws: TokenHeader.Problem.badHeader) { try TokenHeader.parse("\(Self.header("[1]")).e30.c2ln") }
        #expect(throws: TokenHeader.Problem.badHeader) { try TokenHeader.parse("bm90IGpzb24.e30.c2ln") }
        #expect(throws: TokenHeader.Problem.badHeader) { try TokenHeader.parse(".e30.c2ln") }
        #expect(throws: TokenHeader.Problem.malformed) { try TokenHeader.parse("a.b") }
        #expect(throws: TokenHeader.Problem.malformed) { try TokenHeader.parse("a.b.c.d") }
        #expect(throws: TokenHeader.Problem.malformed) { try TokenHeader.parse("a b.c.d") }
        #expect(throws: TokenHeader.Problem.malformed) { try TokenHeader.parse("a=.b.c") }
        #expect(throws: TokenHeader.Problem.malformed) { try TokenHeader.parse(String(repeating: "a", count: 9000) + ".b.c") }
        #expect(throws: TokenHeader.Problem.badHeader) { try TokenHeader.parse(String(repeating: "a", count: 3000) + ".b.c") }
        // Parsed headers are remembered by segment: a second parse answers
        // the same, a refused one is refused again, and the token's shape is
        // still checked whatever its header.
        let known = Self.header(#"{"alg":"ES256","kid":"again"}"#)
        for _ in 0..<2 {
            #expect(try TokenHeader.parse("\(known).e30.c2ln") == TokenHeader(alg: "ES256", kid: "again"))
            #expect(throws: TokenHeader.Problem.badHeader) { try TokenHeader.parse("\(Self.header(#"{"alg":"HS256","crit":["x"]}"#)).e30.c2ln") }
        }
        #expect(throws: TokenHeader.Problem.malformed) { try TokenHeader.parse("\(known).e30") }
        #expect(throws: TokenHeader.Problem.malformed) { try TokenHeader.parse("\(known).e3 0.c2ln") }
    }

    static func key(_ algorithm: TokenAlgorithm, _ kid: String?) -> VerificationKey {
        VerificationKey(algorithm: algorithm, kid: kid, keys: .init())
    }

    @Test func keySelection() {
        let jwks = [Self.key(.rs256, "r1"), Self.key(.es256, "e1"), Self.key(.rs256, "r2")]
        func select(_ alg: String?, _ kid: String?, hmac: Bool = true, jwks: [VerificationKey]? = jwks) -> KeySelection {
            KeySelection.select(TokenHeader(alg: alg, kid: kid), hmac: hmac, jwks: jwks)
        }
        #expect(select("RS256", "r1") == .jwk(0))
        #expect(select("RS256", "r2") == .jwk(2))
        #expect(select("ES256", "e1") == .jwk(1))
        #expect(select("ES256", nil) == .jwk(1))
        #expect(select("HS256", nil) == .hmac)
        #expect(select("HS256", "provider-hs-kid") == .hmac)
        // Mismatches: the header's alg is not the key's.
        #expect(select("ES256", "r1") == .refused(KeySelection.algorithmMismatch))
        #expect(select("RS256", "e1") == .refused(KeySelection.algorithmMismatch))
        #expect(select("HS256", "r1") == .refused(KeySelection.algorithmMismatch))
        #expect(select(nil, "r1") == .refused(KeySelection.noAlgorithm))
        #expect(select(nil, nil) == .refused(KeySelection.noAlgorithm))
        for alg in ["none", "None", "NONE", "RS512", "PS256", "ES384", "HS384", "EdDSA", "", "rs256"] {
            #expect(select(alg, "r1") == .refused(KeySelection.algorithmNotAllowed), "\(alg)")
        }
        // Keys chatd does not have.
        #expect(select("RS256", "r9") == .unknownKid)
        #expect(select("RS256", nil) == .refused(KeySelection.ambiguousKey))
        #expect(select("RS256", nil, jwks: [Self.key(.es256, "e1")]) == .unknownKid)
        #expect(select("RS256", nil, jwks: []) == .unknownKid)
        #expect(select("RS256", "r1", jwks: nil) == .refused(KeySelection.algorithmNotAllowed))
        #expect(select("ES256", nil, jwks: nil) == .refused(KeySelection.algorithmNotAllowed))
        #expect(select("HS256", nil, hmac: false) == .refused(KeySelection.algorithmNotAllowed))
        #expect(select("HS256", "r9", hmac: false) == .refused(KeySelection.algorithmNotAllowed))
    }

    @Test func refreshPolicy() {
        var policy = JWKSRefreshPolicy(minInterval: 60, maxAge: 600)
        #expect(policy.routine(now: 0) == .none)  // nothing loaded yet: unknown kids drive the first fetch
        #expect(policy.unknownKid(now: 0) == .fetch)
        #expect(policy.unknownKid(now: 0.1) == .join)
        #expect(policy.routine(now: 0.1) == .none)
        policy.finished(now: 1, success: false)
        // The provider was down before any document arrived: retried after 5 s, not 60.
        #expect(policy.unknownKid(now: 4) == .none)
        #expect(policy.unknownKid(now: 5) == .fetch)
        policy.finished(now: 5.5, success: true)
        // Known keys now: at most one fetch a minute however many unknown kids come.
        #expect(policy.unknownKid(now: 6) == .none)
        #expect(policy.unknownKid(now: 64.9) == .none)
        #expect(policy.unknownKid(now: 65) == .fetch)
        policy.finished(now: 66, success: false)
        #expect(policy.unknownKid(now: 100) == .none)
        #expect(policy.unknownKid(now: 125) == .fetch)
        policy.finished(now: 125, success: true)
        // An old document is refreshed by ordinary traffic.
        #expect(policy.routine(now: 700) == .none)
        #expect(policy.routine(now: 725) == .fetch)
        #expect(policy.unknownKid(now: 725) == .join)
        policy.finished(now: 726, success: true)
        #expect(policy.routine(now: 727) == .none)

        var eager = JWKSRefreshPolicy(minInterval: 0, maxAge: 0)
        #expect(eager.unknownKid(now: 0) == .fetch)
        eager.finished(now: 0, success: true)
        #expect(eager.unknownKid(now: 0) == .fetch)
    }

    @Test func jwksDocument() async throws {
        let rsa = try TestSigningKey.rsa(kid: "r1")
        let ec = TestSigningKey.ec(kid: "e1")
        var mislabelled = try rsa.jwk()
        mislabelled["kid"] = "r-es"
        mislabelled["alg"] = "ES256"
        var encryption = try rsa.jwk()
        encryption["kid"] = "r-enc"
        encryption["use"] = "enc"
        var p384 = try ec.jwk()
        p384["kid"] = "e-384"
        p384["crv"] = "P-384"
        let symmetric = ["kty": "oct", "kid": "o1", "k": "c2VjcmV0", "alg": "HS256"]
        var duplicate = try ec.jwk()
        duplicate["kid"] = "r1"
        let data = try TestTokens.jwks([try rsa.jwk(minimal: true), try ec.jwk(), mislabelled, encryption, p384, symmetric, duplicate])
        let (keys, skipped) = try await JWKSDocument.keys(from: data)
        #expect(keys.map(\.kid) == ["r1", "e1"])
        #expect(keys.map(\.algorithm) == [.rs256, .es256])
        #expect(skipped.count == 5, "\(skipped)")
        await #expect(throws: JWKSDocument.Invalid.self) { try await JWKSDocument.keys(from: Data("{\"keys\": 1}".utf8)) }
        await #expect(throws: JWKSDocument.Invalid.self) { try await JWKSDocument.keys(from: Data("[]".utf8)) }
    }

    /// Every way a header can disagree with the key, against the authenticator
    /// itself; EndToEnd.JWKS repeats them at the server's doors.
    @Test func authenticatorRefusesEveryMismatch() async throws {
        let dir = try TestServer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let rsa = try TestSigningKey.rsa(kid: "r1")
        let ec = TestSigningKey.ec(kid: "e1")
        let path = dir + "/jwks.json"
        try TestTokens.writeJWKS([try rsa.jwk(), try ec.jwk()], to: path)
        let secret = String(repeating: "s", count: 32)
        let provider = JWKSProvider(source: .file(path), logger: Logger(label: "test"))
        await provider.load()
        let auth = await Authenticator(secret: secret, jwks: provider, leeway: 60)

        for token in [try rsa.token(sub: "alice"), try ec.token(sub: "alice"), try Forged.hs256(secret: secret)] {
            #expect(try await auth.identity(token: token).sub == "alice")
        }
        for (name, token) in try Forged.all(secret: secret, rsa: rsa, ec: ec) {
            await #expect(throws: Authenticator.Failure.self, "\(name)") { try await auth.identity(token: token) }
        }
        // The expiry a socket opened with the token is bound by: exp plus the leeway.
        let exp = Int(Date().timeIntervalSince1970) + 600
        #expect(try await auth.verify(token: try ec.token(sub: "alice", extraClaims: ["exp": exp])).expires.timeIntervalSince1970 == Double(exp + 60))
        // Clock leeway: a minute either way, not more.
        #expect(try await auth.identity(token: try rsa.token(sub: "alice", expiresIn: -30)).sub == "alice")
        await #expect(throws: Authenticator.Failure.self) { try await auth.identity(token: try rsa.token(sub: "alice", expiresIn: -90)) }
        let soon = Int(Date().timeIntervalSince1970) + 30
        #expect(try await auth.identity(token: try rsa.token(sub: "alice", extraClaims: ["nbf": soon])).sub == "alice")
        await #expect(throws: Authenticator.Failure.self) {
            try await auth.identity(token: try rsa.token(sub: "alice", extraClaims: ["nbf": soon + 60]))
        }
        // Header control characters.
        #expect(throws: Authenticator.Failure.self) { try Authenticator.bearerToken("Bearer abc\u{01}def") }
        #expect(throws: Authenticator.Failure.self) { try Authenticator.bearerToken("Bearer\tabc") }
        #expect(try Authenticator.bearerToken("bearer abc") == "abc")
        #expect(try Authenticator.bearerToken("Basic abc") == nil)
    }

    /// The bearer token's trimming is Foundation's `.whitespaces`, done natively.
    @Test func tokenTrimmingMatchesFoundation() throws {
        for text in ["abc", "  abc  ", "\u{00A0}abc\u{3000}", "a b", "\u{2003}", "", "abc\u{200B}", "\u{1680}x\u{202F}"] {
            #expect(String(Authenticator.trimmingSpaces(text[...])) == text.trimmingCharacters(in: .whitespaces), "\(Array(text.unicodeScalars))")
        }
        #expect(try Authenticator.bearerToken("Bearer   abc  ") == "abc")
        #expect(try Authenticator.bearerToken("Bearer \u{00A0}") == nil)
    }

    /// A verified token is served from memory until it expires and for at
    /// most a minute; a refusal is verified again every time.
    @Test func verifiedTokensExpire() async throws {
        let now = Date()
        let tokens = VerifiedTokens()
        let identity = Authenticator.Verified(identity: Identity(sub: "alice", email: nil, name: nil, picture: nil), expires: now.addingTimeInterval(30))
        tokens.insert("t", identity, now: now)
        #expect(tokens.lookup("t", now: now.addingTimeInterval(29))?.identity.sub == "alice")
        #expect(tokens.lookup("t", now: now.addingTimeInterval(30)) == nil, "expired")
        #expect(tokens.lookup("t", now: now) == nil, "an expired entry is gone")
        let long = Authenticator.Verified(identity: identity.identity, expires: now.addingTimeInterval(3_600))
        tokens.insert("t", long, now: now)
        #expect(tokens.lookup("t", now: now.addingTimeInterval(59)) != nil)
        #expect(tokens.lookup("t", now: now.addingTimeInterval(VerifiedTokens.lifetime)) == nil, "verified again after a minute")

        // Through the authenticator: a token twice is one caller, encoded as
        // commands carry it; a bad one stays refused.
        let secret = String(repeating: "s", count: 32)
        let auth = await Authenticator(secret: secret)
        let token = try Forged.hs256(secret: secret, sub: "bob")
        #expect(try await auth.identity(token: token).sub == "bob")
        let again = try await auth.verify(token: token)
        #expect(try JSONDecoder().decode(Identity.self, from: Data(again.identityJSON)) == again.identity)
        for _ in 0..<2 {
            await #expect(throws: Authenticator.Failure.self) { try await auth.identity(token: token + "x") }
        }
    }
}

/// Tokens whose header does not match the key that signed them, by name.
enum Forged {
    /// A correct HS256 token for the secret.
    static func hs256(secret: String, sub: String = "alice") throws -> String {
        try TestTokens.token(header: ["alg": "HS256", "typ": "JWT"], claims: TestTokens.claims(sub: sub)) {
            TestTokens.hmac($0, secret: Data(secret.utf8))
        }
    }

    static func all(secret: String, rsa: TestSigningKey, ec: TestSigningKey, sub: String = "alice") throws -> [(String, String)] {
        let claims = TestTokens.claims(sub: sub)
        let withSecret: (Data) -> Data = { TestTokens.hmac($0, secret: Data(secret.utf8)) }
        let other = TestSigningKey.ec(kid: "stranger")
        return [
            ("no alg, HMAC-signed", try TestTokens.token(header: ["typ": "JWT"], claims: claims, sign: withSecret)),
            ("alg none, HMAC signature", try TestTokens.token(header: ["alg": "none", "typ": "JWT"], claims: claims, sign: withSecret)),
            ("alg none, no signature", try TestTokens.token(header: ["alg": "none"], claims: claims) { _ in Data() }),
            ("alg None, HMAC signature", try TestTokens.token(header: ["alg": "None"], claims: claims, sign: withSecret)),
            ("RS256 with kid, HMAC-signed", try TestTokens.token(header: ["alg": "RS256", "kid": rsa.kid], claims: claims, sign: withSecret)),
            ("RS256 without kid, HMAC-signed", try TestTokens.token(header: ["alg": "RS256"], claims: claims, sign: withSecret)),
            ("ES256 with kid, HMAC-signed", try TestTokens.token(header: ["alg": "ES256", "kid": ec.kid], claims: claims, sign: withSecret)),
            ("ES256 without kid, HMAC-signed", try TestTokens.token(header: ["alg": "ES256"], claims: claims, sign: withSecret)),
            // The classic confusion: the public key's bytes as an HMAC secret.
            ("HS256 naming the RSA kid, HMAC over the public key", try TestTokens.token(header: ["alg": "HS256", "kid": rsa.kid], claims: claims) {
                TestTokens.hmac($0, secret: rsa.publicKeyDER)
            }),
            ("HS256, HMAC over the RSA public key", try TestTokens.token(header: ["alg": "HS256"], claims: claims) {
                TestTokens.hmac($0, secret: rsa.publicKeyDER)
            }),
            ("HS256, RSA-signed", try TestTokens.token(header: ["alg": "HS256", "kid": rsa.kid], claims: claims) { try rsa.sign($0) }),
            ("ES256 naming the RSA kid, EC-signed", try TestTokens.token(header: ["alg": "ES256", "kid": rsa.kid], claims: claims) { try ec.sign($0) }),
            ("RS256 naming the EC kid, RSA-signed", try TestTokens.token(header: ["alg": "RS256", "kid": ec.kid], claims: claims) { try rsa.sign($0) }),
            ("RS512 with the RSA kid", try TestTokens.token(header: ["alg": "RS512", "kid": rsa.kid], claims: claims) { try rsa.sign($0) }),
            ("PS256 with the RSA kid", try TestTokens.token(header: ["alg": "PS256", "kid": rsa.kid], claims: claims) { try rsa.sign($0) }),
            ("crit header", try TestTokens.token(header: ["alg": "RS256", "kid": rsa.kid, "crit": ["exp"]], claims: claims) { try rsa.sign($0) }),
            ("unknown kid", try TestTokens.token(header: ["alg": "ES256", "kid": other.kid], claims: claims) { try other.sign($0) }),
            ("known kid, other key", try TestTokens.token(header: ["alg": "ES256", "kid": ec.kid], claims: claims) { try other.sign($0) }),
        ]
    }
}

extension TokenKeys {
    @Test func settings() async throws {
        let dir = try TestServer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/chatd.yaml"
        try "chat:\n  auth:\n    jwks: \"/etc/chatd/jwks.json\"\n    jwksRefreshSeconds: 5\n    leewaySeconds: 10\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let fromFile = try await ChatConfig.load(file: file, environment: [:])
        #expect(fromFile.jwks == "/etc/chatd/jwks.json")
        #expect(fromFile.jwksRefreshSeconds == 5)
        #expect(fromFile.jwtLeewaySeconds == 10)
        // The environment wins over the file, under either name.
        #expect(try await ChatConfig.load(file: file, environment: ["CHAT_JWKS": "https://idp.example/jwks"]).jwks == "https://idp.example/jwks")
        #expect(try await ChatConfig.load(file: file, environment: ["CHAT_AUTH_JWKS": "/other.json"]).jwks == "/other.json")
        let defaults = try await ChatConfig.load(file: nil, environment: ["CHAT_DATA_DIR": dir])
        #expect(defaults.jwks == nil && defaults.jwksRefreshSeconds == 60 && defaults.jwtLeewaySeconds == 60)
        // With a JWKS alone there is no HS256 secret to verify with, and none is generated.
        #expect(try fromFile.verifyingJWTSecret() == nil)
        var withSecret = fromFile
        withSecret.jwtSecret = String(repeating: "k", count: 32)
        #expect(try withSecret.verifyingJWTSecret() == withSecret.jwtSecret)
        #expect(try defaults.verifyingJWTSecret()?.isEmpty == false)
        #expect(FileManager.default.fileExists(atPath: dir + "/jwt-secret"))
    }

    @Test func jwksSources() {
        #expect(JWKSProvider.Source("https://idp.example/.well-known/jwks.json") == .url(URL(string: "https://idp.example/.well-known/jwks.json")!))
        #expect(JWKSProvider.Source("HTTP://127.0.0.1:9/jwks") == .url(URL(string: "HTTP://127.0.0.1:9/jwks")!))
        #expect(JWKSProvider.Source("file:///etc/chatd/jwks.json") == .file("/etc/chatd/jwks.json"))
        #expect(JWKSProvider.Source("etc/jwks.json") == .file("etc/jwks.json"))
    }

    /// A JWKS file that turns invalid or disappears leaves the known keys in place.
    @Test func fileProviderKeepsKeysThroughBadWrites() async throws {
        let dir = try TestServer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/jwks.json"
        let first = TestSigningKey.ec(kid: "e1")
        let second = TestSigningKey.ec(kid: "e2")
        try TestTokens.writeJWKS([try first.jwk()], to: path)
        let provider = JWKSProvider(source: .file(path), logger: Logger(label: "test"))
        await provider.load()
        #expect(await provider.currentKeys().map(\.kid) == ["e1"])
        try Data("{\"keys\": [".utf8).write(to: URL(fileURLWithPath: path))
        #expect(await provider.keysAfterUnknownKid().map(\.kid) == ["e1"])
        try TestTokens.writeJWKS([try first.jwk(), try second.jwk()], to: path)
        #expect(await provider.keysAfterUnknownKid().map(\.kid) == ["e1", "e2"])
        try FileManager.default.removeItem(atPath: path)
        #expect(await provider.keysAfterUnknownKid().map(\.kid) == ["e1", "e2"])
        try TestTokens.writeJWKS([try second.jwk()], to: path)
        #expect(await provider.keysAfterUnknownKid().map(\.kid) == ["e2"])
    }

    /// The fetch of a JWKS URL gives up on a document over the bound and on a provider that is gone.
    @Test func boundedFetch() async throws {
        let provider = try LocalHTTPServer(body: Data("{\"keys\": []}".utf8))
        defer { provider.stop() }
        let url = URL(string: provider.url)!
        #expect(try await BoundedFetch.get(url, timeout: 5, limit: 1024) == Data("{\"keys\": []}".utf8))
        provider.setBody(Data(repeating: UInt8(ascii: " "), count: 4096))
        await #expect(throws: BoundedFetch.Failure.self) { try await BoundedFetch.get(url, timeout: 5, limit: 1024) }
        provider.stop()
        await #expect(throws: (any Error).self) { try await BoundedFetch.get(url, timeout: 5, limit: 1024) }
    }
}
