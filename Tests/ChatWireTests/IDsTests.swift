@testable import ChatCore
import Foundation
import Testing

/// Name-based ids (UUIDv5) against vectors from outside this code base, so
/// swapping the SHA-1 underneath cannot change a user's id unnoticed.
@Suite struct IDsTests {
    static let dns = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    static let url = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"

    func uuid5(_ namespace: String, _ name: String) -> String {
        let uuid = UUID(uuidString: namespace)!.uuid
        let bytes = withUnsafeBytes(of: uuid) { Array($0) }
        return IDs.format(IDs.uuid5(namespace: bytes, name: name))
    }

    @Test func uuid5MatchesPublishedVectors() {
        // Python: uuid.uuid5(uuid.NAMESPACE_DNS, "python.org").
        #expect(uuid5(Self.dns, "python.org") == "886313e1-3b8a-5372-9b90-0c9aee199e5d")
        // RFC 9562 appendix A.4.
        #expect(uuid5(Self.dns, "www.example.com") == "2ed6657d-e927-568b-95e1-2665a8aea6a2")
    }

    /// Names of no bytes, of non-ASCII bytes and of several SHA-1 blocks
    /// (Python's `uuid.uuid5(uuid.NAMESPACE_URL, ...)`).
    @Test func uuid5MatchesPythonAcrossBlockSizes() {
        #expect(uuid5(Self.url, "") == "1b4db7eb-4057-5ddf-91e0-36dec72071f5")
        #expect(uuid5(Self.url, String(repeating: "é", count: 40)) == "22483c2c-ec8d-5af1-a490-c5569e601627")
        #expect(uuid5(Self.url, String(repeating: "x", count: 200)) == "cd3580b9-d244-586a-8077-74317319b48d")
    }

    /// UUIDv7 (RFC 9562 §5.7): version 7, variant 10, the millisecond time in
    /// the first 48 bits, and the rest random (no two alike, every random
    /// byte position used).
    @Test func uuid7HasItsVersionTimeAndRandomBits() {
        let now = Date(timeIntervalSince1970: 1_700_000_000.5)
        let ids = (0..<200).map { _ in IDs.uuid7(now: now) }
        #expect(Set(ids).count == ids.count)
        for id in ids {
            let hex = Array(id.replacingOccurrences(of: "-", with: ""))
            #expect(hex.count == 32 && UUID(uuidString: id) != nil && id == id.lowercased())
            #expect(String(hex[0..<12]) == String(1_700_000_000_500, radix: 16).leftPadded(to: 12))
            #expect(hex[12] == "7" && ["8", "9", "a", "b"].contains(hex[16]))
        }
        // Each random hex digit (after the version and variant) takes more than one value.
        for position in [13, 14, 15, 17, 18, 19] + Array(20..<32) {
            #expect(Set(ids.map { Array($0.replacingOccurrences(of: "-", with: ""))[position] }).count > 1)
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
