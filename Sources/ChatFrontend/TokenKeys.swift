import Foundation
import JWTKit
import Synchronization

/// The algorithms chatd verifies. Each key verifies exactly one of them
/// (RFC 8725 §3.1): the HMAC secret HS256, an RSA key RS256, a P-256 key ES256.
public enum TokenAlgorithm: String, Sendable, CaseIterable {
    case hs256 = "HS256"
    case rs256 = "RS256"
    case es256 = "ES256"
}

/// One verification key, bound to its algorithm. `keys` holds this key and
/// nothing else, so jwt-kit cannot pick another one whatever the header says.
public struct VerificationKey: Sendable {
    public let algorithm: TokenAlgorithm
    /// The JWK's `kid`; nil for the HMAC secret.
    public let kid: String?
    let keys: JWTKeyCollection

    init(algorithm: TokenAlgorithm, kid: String?, keys: JWTKeyCollection) {
        self.algorithm = algorithm
        self.kid = kid
        self.keys = keys
    }

    static func hmac(secret: String) async -> VerificationKey {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return VerificationKey(algorithm: .hs256, kid: nil, keys: keys)
    }
}

/// The protected header of a compact JWS, read by chatd itself before any key
/// is chosen: jwt-kit picks a key by `kid` alone and lets the key's own
/// algorithm decide, which is how an `RS256` header once verified with the secret.
struct TokenHeader: Equatable {
    /// Nil when the header has no `alg`.
    var alg: String?
    var kid: String?

    /// A real header is well under 1 KiB (alg, typ, kid); the bound keeps
    /// base64 and JSON work per request small whatever a client sends.
    static let maxEncodedBytes = 2048
    /// Bigger than any token an identity provider issues (Clerk's are ~1 KiB),
    /// smaller than the header limits in front of it.
    static let maxTokenBytes = 8192

    enum Problem: Error, Equatable {
        case malformed
        case badHeader
    }

    /// Parses the header of `token`, checking the token's overall shape
    /// (three base64url segments) on the way.
    static func parse(_ token: String) throws(Problem) -> TokenHeader {
        let bytes = token.utf8
        guard bytes.count <= maxTokenBytes else { throw .malformed }
        var dots = 0
        var headerEnd: String.UTF8View.Index?
        for index in bytes.indices {
            let byte = bytes[index]
            if byte == UInt8(ascii: ".") {
                dots += 1
                if headerEnd == nil { headerEnd = index }
            } else if !isBase64URL(byte) {
                throw .malformed
            }
        }
        guard dots == 2, let headerEnd else { throw .malformed }
        let encoded = token.utf8[..<headerEnd]
        guard !encoded.isEmpty, encoded.count <= maxEncodedBytes else { throw .badHeader }
        let segment = String(token[..<headerEnd])
        if let known = parsed.withLock({ $0[segment] }) { return known }
        guard let json = base64URLDecode(encoded), let fields = try? JSONDecoder().decode(Fields.self, from: json) else { throw .badHeader }
        // RFC 7515 §4.1.11: a `crit` chatd does not understand makes the token invalid; it understands none.
        if fields.hasCrit { throw .badHeader }
        let header = TokenHeader(alg: fields.alg, kid: fields.kid)
        parsed.withLock { table in
            if table.count >= parsedCapacity { table.removeAll() }
            table[segment] = header
        }
        return header
    }

    /// Headers parsed before, by their encoded segment: an issuer's tokens
    /// share a handful of headers (one per key), and decoding one with
    /// JSONDecoder was ~2.5% of the frontend's CPU per WebSocket handshake.
    /// Only valid headers are kept; a parse is a function of the segment alone.
    private static let parsed = Mutex<[String: TokenHeader]>([:])
    /// Bound on memory (a header is at most `maxEncodedBytes`); when full, the table starts over.
    static let parsedCapacity = 64

    /// The members chatd reads; a present `alg` or `kid` that is not a string fails decoding.
    private struct Fields: Decodable {
        var alg: String?
        var kid: String?
        var hasCrit: Bool

        enum CodingKeys: String, CodingKey { case alg, kid, crit }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            alg = try container.decodeIfPresent(String.self, forKey: .alg)
            kid = try container.decodeIfPresent(String.self, forKey: .kid)
            hasCrit = container.contains(.crit)
        }
    }

    static func isBase64URL(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "_"): true
        default: false
        }
    }

    /// Unpadded base64url (RFC 7515 §2) to bytes; nil for a length no encoding has.
    static func base64URLDecode(_ text: some Collection<UInt8>) -> Data? {
        guard text.count % 4 != 1 else { return nil }
        var bytes = Data(capacity: text.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        for byte in text {
            let value: UInt8
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): value = 62
            case UInt8(ascii: "_"): value = 63
            default: return nil
            }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                bytes.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        return bytes
    }
}

/// Which key verifies a token: a pure function of its header and the keys
/// configured, so every refusal rule is unit-tested without a server.
enum KeySelection: Equatable {
    /// The HS256 secret.
    case hmac
    /// The JWKS key at this index.
    case jwk(Int)
    /// The `kid` names no key of that algorithm: worth one JWKS refresh.
    case unknownKid
    case refused(String)

    static let noAlgorithm = "Token header has no algorithm."
    static let algorithmNotAllowed = "Token algorithm is not allowed."
    static let algorithmMismatch = "Token algorithm does not match its key."
    static let ambiguousKey = "Token has no key id."
    static let unknownKey = "Token key is unknown."

    /// - Parameters:
    ///   - hmac: whether an HS256 secret is configured.
    ///   - jwks: the keys of the JWKS document (never an HMAC key); nil when no JWKS is configured.
    static func select(_ header: TokenHeader, hmac: Bool, jwks: [VerificationKey]?) -> KeySelection {
        guard let alg = header.alg else { return .refused(noAlgorithm) }
        // `none` and everything else chatd has no key type for (HS384, PS256, EdDSA ...).
        guard let algorithm = TokenAlgorithm(rawValue: alg) else { return .refused(algorithmNotAllowed) }
        let published = jwks ?? []
        if let kid = header.kid {
            let named = published.indices.filter { published[$0].kid == kid }
            if let index = named.first(where: { published[$0].algorithm == algorithm }) { return .jwk(index) }
            // The kid names a public key of another algorithm: the classic confusion, refused whatever the signature.
            if !named.isEmpty { return .refused(algorithmMismatch) }
        }
        if algorithm == .hs256 {
            // The secret has no kid; an identity provider's HS256 token may carry one anyway.
            return hmac ? .hmac : .refused(algorithmNotAllowed)
        }
        guard jwks != nil else { return .refused(algorithmNotAllowed) }
        if header.kid != nil { return .unknownKid }
        let candidates = published.indices.filter { published[$0].algorithm == algorithm }
        switch candidates.count {
        // Nothing loaded yet (the provider was down at start), or a provider that just began to use this algorithm.
        case 0: return .unknownKid
        case 1: return .jwk(candidates[0])
        // Without a kid, several keys of one algorithm (a rotation) cannot be told apart.
        default: return .refused(ambiguousKey)
        }
    }
}

/// Reads a JWKS document (RFC 7517) into verification keys: RSA keys for
/// RS256, EC P-256 keys for ES256. Keys of other types, for encryption, or
/// with an `alg` chatd does not verify are skipped, not fatal: a provider's
/// set may hold them for other consumers.
enum JWKSDocument {
    /// Largest document accepted: a set of a few dozen RSA-4096 keys fits in 64 KiB.
    static let maxBytes = 256 << 10

    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    static func keys(from data: Data) async throws -> (keys: [VerificationKey], skipped: [String]) {
        guard data.count <= maxBytes else { throw Invalid(description: "document over \(maxBytes) bytes") }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let entries = object["keys"] as? [Any]
        else { throw Invalid(description: "not a JWKS document (no \"keys\" array)") }
        var keys: [VerificationKey] = []
        var skipped: [String] = []
        var seen = Set<String>()
        for (index, entry) in entries.enumerated() {
            guard let jwk = entry as? [String: Any] else {
                skipped.append("#\(index): not an object")
                continue
            }
            let kid = jwk["kid"] as? String
            let name = kid.map { "kid \($0)" } ?? "#\(index)"
            do {
                guard let key = try await key(jwk, kid: kid) else {
                    skipped.append("\(name): not an RS256 or ES256 signing key")
                    continue
                }
                // Two keys under one kid would make the kid choose nothing; keep the first.
                if let kid, !seen.insert(kid).inserted {
                    skipped.append("\(name): duplicate kid")
                    continue
                }
                keys.append(key)
            } catch {
                skipped.append("\(name): \(error)")
            }
        }
        return (keys, skipped)
    }

    /// One JWK as a verification key; nil for a key chatd does not verify with.
    static func key(_ jwk: [String: Any], kid: String?) async throws -> VerificationKey? {
        if let use = jwk["use"] as? String, use != "sig" { return nil }
        if let ops = jwk["key_ops"] as? [String], !ops.contains("verify") { return nil }
        let declared = jwk["alg"] as? String
        let collection = JWTKeyCollection()
        switch jwk["kty"] as? String {
        case "RSA":
            // A JWK's own alg, when present, must be the one its key is used for.
            guard declared == nil || declared == TokenAlgorithm.rs256.rawValue else { return nil }
            guard let n = jwk["n"] as? String, let e = jwk["e"] as? String else { throw Invalid(description: "RSA key without n or e") }
            // Only the public parts are read: a set that leaks "d" still only verifies.
            await collection.add(rsa: try Insecure.RSA.PublicKey(modulus: n, exponent: e), digestAlgorithm: .sha256)
            return VerificationKey(algorithm: .rs256, kid: kid, keys: collection)
        case "EC":
            guard declared == nil || declared == TokenAlgorithm.es256.rawValue else { return nil }
            guard jwk["crv"] as? String == "P-256" else { return nil }
            guard let x = jwk["x"] as? String, let y = jwk["y"] as? String else { throw Invalid(description: "EC key without x or y") }
            await collection.add(ecdsa: try ES256PublicKey(parameters: (x, y)))
            return VerificationKey(algorithm: .es256, kid: kid, keys: collection)
        default:
            // "oct" above all: a symmetric key from a document is never an HMAC secret here.
            return nil
        }
    }
}
