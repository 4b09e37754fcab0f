import ChatCore
import Foundation
import JWTKit
import Synchronization

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

    /// Nothing here: `Authenticator` checks `exp` and `nbf` itself, with its
    /// configured clock leeway, which this protocol method cannot be given.
    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Verifies bearer tokens (api-contract.md "Authentication"): HS256 with the
/// configured secret, RS256 and ES256 with the keys of a JWKS document. The
/// header's `alg` must be the algorithm of the key that verifies the token
/// (RFC 8725 §3.1): chatd reads the header itself, picks the one key by
/// (`alg`, `kid`) and verifies with a collection holding only that key.
public struct Authenticator: Sendable {
    let hmac: VerificationKey?
    let jwks: JWKSProvider?
    let issuer: String?
    let audience: String?
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    let leeway: Double
    /// Tokens verified in the last `VerifiedTokens.lifetime`, when the HS256
    /// secret is the only key (it cannot change while the process runs;
    /// JWKS keys can, and are checked on every request): a client sends
    /// the same token with every request, and verifying it (base64, JSON,
    /// HMAC or RSA) was most of the frontend's own work on a REST read.
    let verified = VerifiedTokens()

    /// HS256 with `secret` only (development, `chatd token`, tests).
    public init(secret: String, issuer: String? = nil, audience: String? = nil) async {
        await self.init(secret: secret, jwks: nil, issuer: issuer, audience: audience, leeway: 0)
    }

    /// - Parameters:
    ///   - secret: the HS256 secret; nil or empty: HS256 tokens are refused.
    ///   - jwks: the RS256/ES256 keys; nil: RS256 and ES256 tokens are refused.
    public init(secret: String?, jwks: JWKSProvider?, issuer: String? = nil, audience: String? = nil, leeway: Double = 60) async {
        if let secret, !secret.isEmpty {
            hmac = await VerificationKey.hmac(secret: secret)
        } else {
            hmac = nil
        }
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.leeway = max(0, leeway)
    }

    public struct Failure: Error, Sendable {
        public let detail: String
    }

    /// The token of an `Authorization` header value; only the `Bearer` scheme,
    /// any case. Nil for another scheme; a value with a control character
    /// (a smuggling attempt, never a token) is refused outright.
    public static func bearerToken(_ header: String?) throws(Failure) -> String? {
        guard let header else { return nil }
        if header.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            throw Failure(detail: "Invalid token header. Token string should not contain invalid characters.")
        }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = trimmingSpaces(parts[1])
        return token.isEmpty ? nil : String(token)
    }

    /// `text` without leading and trailing white space, as Foundation's
    /// `trimmingCharacters(in: .whitespaces)`; a token that starts and ends
    /// with a printable ASCII character (every real one) skips the bridge to
    /// `NSString`, which was 4% of the frontend's CPU on a REST read.
    static func trimmingSpaces(_ text: Substring) -> Substring {
        func plain(_ scalar: Unicode.Scalar?) -> Bool { scalar.map { $0.value > 0x20 && $0.value < 0x7F } ?? false }
        if plain(text.unicodeScalars.first) && plain(text.unicodeScalars.last) { return text }
        return Substring(text.trimmingCharacters(in: .whitespaces))
    }

    /// The token of a request's `Authorization` fields: more than one is
    /// refused (RFC 9110 §11.6.2 makes it a single credential, and two let a
    /// proxy and chatd each read a different one).
    public static func bearerToken(values: [String]) throws(Failure) -> String? {
        guard values.count <= 1 else { throw Failure(detail: "Invalid token header. Only one Authorization header is allowed.") }
        return try bearerToken(values.first)
    }

    static let invalid = "Invalid or expired token."

    /// Verifies a token and returns the caller it names.
    public func identity(token: String?) async throws(Failure) -> Identity {
        try await verify(token: token).identity
    }

    /// A verified token: its caller, and when it stops being valid (`exp`
    /// plus the leeway), which bounds a WebSocket opened with it (4401).
    public struct Verified: Sendable {
        public let identity: Identity
        public let expires: Date
        /// `identity` as commands carry it, encoded once per token.
        public let identityJSON: [UInt8]

        init(identity: Identity, expires: Date) {
            self.identity = identity
            self.expires = expires
            identityJSON = (try? JSONEncoder().encode(identity)).map { [UInt8]($0) } ?? []
        }

        var pair: (Identity, Date) { (identity, expires) }
    }

    /// Verifies a token; see `identity(token:)`.
    public func verify(token: String?) async throws(Failure) -> Verified {
        guard let token else { throw Failure(detail: "Authentication credentials were not provided.") }
        // Only with the secret alone: a JWKS can withdraw a key at any
        // moment, and a token it signed must fail from then on.
        guard jwks == nil else { return try await verifyAnew(token) }
        let now = Date()
        if let known = verified.lookup(token, now: now) { return known }
        let result = try await verifyAnew(token)
        verified.insert(token, result, now: now)
        return result
    }

    /// Verifies a token from scratch; see `identity(token:)`.
    func verifyAnew(_ token: String) async throws(Failure) -> Verified {
        let header: TokenHeader
        do {
            header = try TokenHeader.parse(token)
        } catch .malformed {
            throw Failure(detail: Self.invalid)
        } catch {
            throw Failure(detail: "Invalid token header.")
        }
        let verifier = try await key(for: header)
        let claims: ChatClaims
        do {
            claims = try await verifier.keys.verify(token, as: ChatClaims.self)
        } catch {
            throw Failure(detail: Self.invalid)
        }
        let now = Date()
        do {
            try claims.exp.verifyNotExpired(currentDate: now.addingTimeInterval(-leeway))
            try claims.nbf?.verifyNotBefore(currentDate: now.addingTimeInterval(leeway))
        } catch {
            throw Failure(detail: Self.invalid)
        }
        if let issuer, claims.iss?.value != issuer { throw Failure(detail: "Invalid token issuer.") }
        if let audience {
            do { try claims.aud?.verifyIntendedAudience(includes: audience) } catch { throw Failure(detail: "Invalid token audience.") }
            if claims.aud == nil { throw Failure(detail: "Invalid token audience.") }
        }
        guard !claims.sub.value.isEmpty else { throw Failure(detail: "Token has no subject.") }
        // The claims become the user's row: PostgreSQL cannot store a NUL (22021),
        // and that upsert rides along with every other command of its batch.
        if [claims.sub.value, claims.email, claims.name, claims.picture].contains(where: { $0.map(Validation.hasNUL) ?? false }) {
            throw Failure(detail: "Token claims must not contain NUL characters.")
        }
        return Verified(
            identity: Identity(sub: claims.sub.value, email: claims.email, name: claims.name, picture: claims.picture),
            expires: claims.exp.value.addingTimeInterval(leeway)
        )
    }

    /// The one key allowed to verify a token with this header; an unknown
    /// `kid` refreshes the JWKS once (as its policy allows) before refusal.
    func key(for header: TokenHeader) async throws(Failure) -> VerificationKey {
        var published = await jwks?.currentKeys()
        var selection = KeySelection.select(header, hmac: hmac != nil, jwks: published)
        if selection == .unknownKid, let jwks {
            published = await jwks.keysAfterUnknownKid()
            selection = KeySelection.select(header, hmac: hmac != nil, jwks: published)
        }
        switch selection {
        case .hmac:
            if let hmac { return hmac }
        case .jwk(let index):
            if let published, published.indices.contains(index) { return published[index] }
        case .unknownKid:
            throw Failure(detail: KeySelection.unknownKey)
        case .refused(let detail):
            throw Failure(detail: detail)
        }
        throw Failure(detail: Self.invalid)
    }

    /// Mints a development token (`chatd token`) with the HS256 secret.
    public func mint(_ claims: ChatClaims) async throws -> String {
        guard let hmac else { throw Failure(detail: "No HS256 secret configured.") }
        return try await hmac.keys.sign(claims)
    }
}

/// Verified tokens and their callers, by token. A token is served from here
/// until it expires (`exp` plus the leeway) and for at most `lifetime`
/// after it was verified. Refusals are not kept. `nbf` needs no check
/// on a hit: a token valid once stays valid until it expires.
final class VerifiedTokens: Sendable {
    static let lifetime: TimeInterval = 60
    /// Bound on memory (~1 KB an entry); when full, the table starts over.
    static let capacity = 4_096

    private struct Entry {
        var verified: Authenticator.Verified
        var until: Date
    }

    private let entries = Mutex<[String: Entry]>([:])

    func lookup(_ token: String, now: Date) -> Authenticator.Verified? {
        entries.withLock { table in
            guard let entry = table[token] else { return nil }
            guard now < entry.until else {
                table[token] = nil
                return nil
            }
            return entry.verified
        }
    }

    func insert(_ token: String, _ verified: Authenticator.Verified, now: Date) {
        let until = min(verified.expires, now.addingTimeInterval(Self.lifetime))
        entries.withLock { table in
            if table.count >= Self.capacity { table.removeAll() }
            table[token] = Entry(verified: verified, until: until)
        }
    }
}
