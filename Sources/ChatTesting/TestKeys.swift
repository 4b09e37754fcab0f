import Crypto
import Foundation
import _CryptoExtras

/// A signing key a test plays identity provider with: an RSA (RS256) or EC
/// P-256 (ES256) key pair, its public JWK, and raw signing, so tests can
/// build correct tokens and every wrong one (any header, any key).
public struct TestSigningKey: Sendable {
    public enum Kind: Sendable { case rsa, ec }

    public let kid: String
    public let kind: Kind
    private let rsa: _RSA.Signing.PrivateKey?
    private let ec: P256.Signing.PrivateKey?

    /// An RSA-2048 key for RS256.
    public static func rsa(kid: String) throws -> TestSigningKey {
        TestSigningKey(kid: kid, kind: .rsa, rsa: try _RSA.Signing.PrivateKey(keySize: .bits2048), ec: nil)
    }

    /// A P-256 key for ES256.
    public static func ec(kid: String) -> TestSigningKey {
        TestSigningKey(kid: kid, kind: .ec, rsa: nil, ec: P256.Signing.PrivateKey())
    }

    /// The algorithm this key signs with.
    public var algorithm: String { kind == .rsa ? "RS256" : "ES256" }

    /// The public key as a JWK (with `alg` and `use` unless `minimal`).
    public func jwk(minimal: Bool = false) throws -> [String: String] {
        var jwk: [String: String] = ["kid": kid]
        if !minimal {
            jwk["alg"] = algorithm
            jwk["use"] = "sig"
        }
        switch kind {
        case .rsa:
            let primitives = try rsa!.publicKey.getKeyPrimitives()
            jwk["kty"] = "RSA"
            jwk["n"] = TestTokens.base64URL(primitives.modulus)
            jwk["e"] = TestTokens.base64URL(primitives.publicExponent)
        case .ec:
            let point = ec!.publicKey.x963Representation  // 0x04 || x || y
            jwk["kty"] = "EC"
            jwk["crv"] = "P-256"
            jwk["x"] = TestTokens.base64URL(point[1..<33])
            jwk["y"] = TestTokens.base64URL(point[33..<65])
        }
        return jwk
    }

    /// The public key's DER (SubjectPublicKeyInfo), what a confused verifier
    /// would use as an HMAC secret.
    public var publicKeyDER: Data {
        switch kind {
        case .rsa: rsa!.publicKey.derRepresentation
        case .ec: ec!.publicKey.derRepresentation
        }
    }

    /// This key's signature over `input` (RS256: PKCS#1 v1.5 SHA-256; ES256: raw r||s).
    public func sign(_ input: Data) throws -> Data {
        switch kind {
        case .rsa: try rsa!.signature(for: SHA256.hash(data: input), padding: .insecurePKCS1v1_5).rawRepresentation
        case .ec: try ec!.signature(for: SHA256.hash(data: input)).rawRepresentation
        }
    }

    /// A correct token: this key's algorithm and kid in the header.
    public func token(sub: String, expiresIn: Double = 3600, extraClaims: [String: Any] = [:]) throws -> String {
        try TestTokens.token(
            header: ["alg": algorithm, "typ": "JWT", "kid": kid], claims: TestTokens.claims(sub: sub, expiresIn: expiresIn, extra: extraClaims)
        ) { try sign($0) }
    }
}

/// Building compact JWS tokens and JWKS documents by hand.
public enum TestTokens {
    public static func base64URL(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// The claims chatd reads, for `sub`.
    public static func claims(sub: String, expiresIn: Double = 3600, extra: [String: Any] = [:]) -> [String: Any] {
        var claims: [String: Any] = [
            "sub": sub, "exp": Int(Date().timeIntervalSince1970 + expiresIn), "email": "\(sub)@example.com", "name": sub.capitalized,
        ]
        for (key, value) in extra { claims[key] = value }
        return claims
    }

    /// `base64url(header).base64url(claims).base64url(sign(input))`.
    public static func token(header: [String: Any], claims: [String: Any], sign: (Data) throws -> Data) throws -> String {
        let input = base64URL(try JSONSerialization.data(withJSONObject: header, options: .sortedKeys)) + "."
            + base64URL(try JSONSerialization.data(withJSONObject: claims, options: .sortedKeys))
        return input + "." + base64URL(try sign(Data(input.utf8)))
    }

    /// HMAC-SHA256 of `input` with `secret` (what HS256 signs with).
    public static func hmac(_ input: Data, secret: some DataProtocol) -> Data {
        Data(HMAC<SHA256>.authenticationCode(for: input, using: SymmetricKey(data: Data(secret))))
    }

    /// A JWKS document of these JWKs.
    public static func jwks(_ keys: [[String: String]]) throws -> Data {
        try JSONSerialization.data(withJSONObject: ["keys": keys], options: .sortedKeys)
    }

    /// Writes a JWKS file the way a deploy should: to a temporary name, then
    /// renamed over the old one, so a reader never sees half a document.
    public static func writeJWKS(_ keys: [[String: String]], to path: String) throws {
        let temporary = path + ".tmp"
        try jwks(keys).write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path) == 0 else { throw TestServerError(description: "rename \(temporary): \(errno)") }
    }
}
