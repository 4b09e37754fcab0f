import ChatCore
import Foundation
import JWTKit

/// The claims chatd reads from a token (api-contract.md "Authentication").
public struct ChatClaims: JWTPayload {
    public var sub: SubjectClaim
    public var exp: ExpirationClaim
    public var nbf: NotBeforeClaim?
    public var iss: IssuerClaim?
    public var aud: AudienceClaim?
    public var email: String?
    public var name: String?
    public var picture: String?

    public init(sub: String, expires: Date, email: String?, name: String?, picture: String? = nil) {
        self.sub = SubjectClaim(value: sub)
        self.exp = ExpirationClaim(value: expires)
        self.email = email
        self.name = name
        self.picture = picture
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
        try nbf?.verifyNotBefore()
    }
}

/// Verifies bearer tokens. HS256 with the configured secret today; the key
/// collection takes RS256/ES256 keys from a JWKS document the same way
/// (`keys.add(jwks:)`), which is where that support slots in.
public struct Authenticator: Sendable {
    let keys: JWTKeyCollection
    let issuer: String?
    let audience: String?

    public init(secret: String, issuer: String? = nil, audience: String? = nil) async {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
    }

    public struct Failure: Error, Sendable {
        public let detail: String
    }

    /// The token of an `Authorization` header value; only the `Bearer` scheme, any case.
    public static func bearerToken(_ header: String?) -> String? {
        guard let header else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : token
    }

    /// Verifies a token and returns the caller it names.
    public func identity(token: String?) async throws(Failure) -> Identity {
        guard let token else { throw Failure(detail: "Authentication credentials were not provided.") }
        let claims: ChatClaims
        do {
            claims = try await keys.verify(token, as: ChatClaims.self)
        } catch {
            throw Failure(detail: "Invalid or expired token.")
        }
        if let issuer, claims.iss?.value != issuer { throw Failure(detail: "Invalid token issuer.") }
        if let audience {
            do { try claims.aud?.verifyIntendedAudience(includes: audience) } catch { throw Failure(detail: "Invalid token audience.") }
            if claims.aud == nil { throw Failure(detail: "Invalid token audience.") }
        }
        guard !claims.sub.value.isEmpty else { throw Failure(detail: "Token has no subject.") }
        return Identity(sub: claims.sub.value, email: claims.email, name: claims.name, picture: claims.picture)
    }

    /// Mints a development token (`chatd token`).
    public func mint(_ claims: ChatClaims) async throws -> String {
        try await keys.sign(claims)
    }
}
