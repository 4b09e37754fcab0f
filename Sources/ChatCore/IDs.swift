import Crypto
import Foundation

/// Identifier helpers. Every id the API shows is a UUID in lowercase hyphenated form.
public enum IDs {
    /// A time-ordered UUIDv7 (RFC 9562): consecutive ids land next to each other
    /// in the primary-key index, which keeps batched inserts fast.
    public static func uuid7(now: Date = Date()) -> String {
        let millis = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: millis >> (8 * (5 - UInt64(i)))) }
        // Two draws of 8 bytes, not ten of one: each is a `getrandom` call.
        var random = SystemRandomNumberGenerator()
        let high = random.next(), low = random.next()
        for i in 6..<8 { bytes[i] = UInt8(truncatingIfNeeded: high >> (8 * UInt64(i - 6))) }
        for i in 8..<16 { bytes[i] = UInt8(truncatingIfNeeded: low >> (8 * UInt64(i - 8))) }
        bytes[6] = (bytes[6] & 0x0F) | 0x70
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        return format(bytes)
    }

    /// The user id for a token subject: the subject itself when it is a UUID
    /// (in lowercase: a UUID in any letter case is the same UUID, so `ABC…`
    /// and `abc…` are deliberately one user), otherwise a UUIDv5 of it, so the
    /// same `sub` always maps to the same user. Non-UUID subjects are compared
    /// exactly, as RFC 7519 compares `sub`.
    /// The namespace is the Django reference's (`uuid5(NAMESPACE_URL,
    /// "chat-api:user-subject")`), so both servers give a subject the same id.
    public static func userID(forSubject sub: String) -> String {
        if let uuid = canonical(sub) { return uuid }
        return format(uuid5(namespace: subjectNamespace, name: sub))
    }

    /// A name-based UUIDv5 (RFC 9562 §5.5). SHA-1 is what the RFC mandates;
    /// nothing here relies on it for security.
    static func uuid5(namespace: [UInt8], name: String) -> [UInt8] {
        var digest = Array(Insecure.SHA1.hash(data: namespace + Array(name.utf8)))
        digest[6] = (digest[6] & 0x0F) | 0x50
        digest[8] = (digest[8] & 0x3F) | 0x80
        return Array(digest.prefix(16))
    }

    // RFC 9562's NAMESPACE_URL.
    private static let urlNamespace: [UInt8] = [
        0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8,
    ]
    private static let subjectNamespace = uuid5(namespace: urlNamespace, name: "chat-api:user-subject")

    /// The lowercase hyphenated form of a UUID string, or nil if it is not one.
    public static func canonical(_ text: String) -> String? {
        guard text.utf8.count == 36, let uuid = UUID(uuidString: text) else { return nil }
        return uuid.uuidString.lowercased()
    }

    static func format(_ bytes: [UInt8]) -> String {
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(36)
        for (i, b) in bytes.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { out.append(UInt8(ascii: "-")) }
            out.append(hex[Int(b >> 4)])
            out.append(hex[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
