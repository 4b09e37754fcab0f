import NIOCore
import Testing

@testable import ChatFrontend

/// The handover's message boundary: what a socket has read splits into
/// whole messages (parsed) and the unfinished rest (carried over).
@Suite struct HandoverFramingTests {
    /// A masked client frame (the mask is zero: the payload reads as is).
    static func frame(fin: Bool = true, opcode: UInt8, _ payload: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        switch payload.count {
        case ..<126: bytes.append(0x80 | UInt8(payload.count))
        case ..<65_536: bytes += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xff)]
        default: bytes += [0x80 | 127] + (0..<8).reversed().map { UInt8(truncatingIfNeeded: payload.count >> ($0 * 8)) }
        }
        return bytes + [0, 0, 0, 0] + payload
    }

    func whole(_ bytes: [UInt8], max: Int = 1_000) -> Int {
        HandoverFraming.wholeMessages(ByteBuffer(bytes: bytes), maxFrameSize: max)
    }

    @Test func everyCutFallsOnTheLastWholeMessage() {
        let one = Self.frame(opcode: 1, Array("hello".utf8))
        let two = Self.frame(opcode: 1, Array(repeating: 65, count: 300))
        let stream = one + two
        for cut in 0...stream.count {
            let expected = cut < one.count ? 0 : cut < stream.count ? one.count : stream.count
            #expect(whole(Array(stream.prefix(cut))) == expected, "cut at \(cut)")
        }
    }

    @Test func fragmentsAreOneMessageWithControlFramesBetween() {
        let first = Self.frame(fin: false, opcode: 1, Array("hel".utf8))
        let ping = Self.frame(opcode: 9, [])
        let last = Self.frame(fin: true, opcode: 0, Array("lo".utf8))
        #expect(whole(first) == 0)
        #expect(whole(first + ping) == 0, "a ping inside a message waits with it")
        #expect(whole(first + ping + last) == first.count + ping.count + last.count)
        #expect(whole(ping + first) == ping.count, "a ping outside a message is one by itself")
    }

    @Test func longLengthsAndOversizedFrames() {
        let long = Self.frame(opcode: 1, Array(repeating: 66, count: 70_000))
        #expect(whole(long, max: 100_000) == long.count)
        #expect(whole(Array(long.prefix(20)), max: 100_000) == 0)
        // Past the limit: handed to NIO's decoder at once, which refuses it.
        #expect(whole(Array(long.prefix(20)), max: 1_000) == 20)
    }
}
