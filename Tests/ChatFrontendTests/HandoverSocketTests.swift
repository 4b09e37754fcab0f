import Foundation
import Glibc
import Testing
import ChatWire

@testable import ChatFrontend

/// SCM_RIGHTS over a real socketpair: a descriptor sent arrives as a working
/// descriptor of the same open file, packets keep their boundaries.
@Suite struct HandoverSocketTests {
    @Test func aDescriptorRidesWithItsPacket() throws {
        let (old, new) = try HandoverSocket.pair()
        var pipeEnds: [CInt] = [-1, -1]
        try #require(pipe(&pipeEnds) == 0)
        defer { close(pipeEnds[0]) }
        try old.send([1, 2, 3], descriptor: pipeEnds[1])
        // The sender's copy may go at once: the one in flight keeps the file open.
        close(pipeEnds[1])
        try old.send([4])
        let first = try #require(try new.receive(timeoutMillis: 1_000))
        #expect(first.bytes == [1, 2, 3])
        let received = try #require(first.descriptor)
        defer { close(received) }
        #expect(fcntl(received, F_GETFD) & FD_CLOEXEC != 0, "a new frontend's children must not inherit client sockets")
        var byte: UInt8 = 42
        #expect(write(received, &byte, 1) == 1)
        var read: UInt8 = 0
        #expect(Glibc.read(pipeEnds[0], &read, 1) == 1)
        #expect(read == 42)
        let second = try #require(try new.receive(timeoutMillis: 1_000))
        #expect(second.bytes == [4] && second.descriptor == nil, "packets keep their boundaries")
    }

    @Test func aRecordAsLargeAsAFrameFitsOnePacket() throws {
        let (old, new) = try HandoverSocket.pair()
        let big = (0..<(HandoverSocket.maxPacket - 1)).map { UInt8(truncatingIfNeeded: $0) }
        try old.send(big)
        #expect(try new.receive(timeoutMillis: 1_000)?.bytes == big)
    }

    /// The offer of every room and the delivered keys outgrow a packet (the
    /// review found the offer failing past ~5,000 rooms): a message is sent
    /// as fragments and read back whole, its descriptor with it.
    @Test func aMessageLargerThanAPacketArrivesWholeWithItsDescriptor() throws {
        let (old, new) = try HandoverSocket.pair()
        var pipeEnds: [CInt] = [-1, -1]
        try #require(pipe(&pipeEnds) == 0)
        defer { close(pipeEnds[0]) }
        let big = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        // Larger than the socket's buffer: the receiver reads while it is sent.
        let writeEnd = pipeEnds[1]
        let sender = Thread {
            try? old.send(big, descriptor: writeEnd)
            close(writeEnd)
            try? old.send([9, 9])
        }
        sender.start()
        let first = try #require(try new.receive(timeoutMillis: 5_000))
        #expect(first.bytes == big)
        let received = try #require(first.descriptor, "the descriptor rides on the last fragment")
        defer { close(received) }
        var byte: UInt8 = 42
        #expect(write(received, &byte, 1) == 1)
        var read: UInt8 = 0
        #expect(Glibc.read(pipeEnds[0], &read, 1) == 1 && read == 42)
        let second = try #require(try new.receive(timeoutMillis: 5_000))
        #expect(second.bytes == [9, 9] && second.descriptor == nil, "the next message is its own")
    }

    /// A broken peer cannot make the receiver allocate without bound: a
    /// message past the limit, or a descriptor on a fragment but the last, is refused.
    @Test func fragmentsPastTheLimitOrOutOfShapeAreRefused() throws {
        let limit = HandoverSocket.maxPacket * 2
        let (old, new) = try HandoverSocket.pair(limit: limit)
        #expect(throws: HandoverSocket.Failure.self) { try old.send([UInt8](repeating: 1, count: limit + 1)) }
        // Raw fragments that never end.
        let fragment = HandoverSocket.fragmentMagic + [1] + [UInt8](repeating: 2, count: HandoverSocket.maxPacket - 4)
        // More than the socket's buffer holds: sent while the receiver reads.
        Thread { for _ in 0..<3 { _ = Glibc.send(old.fd, fragment, fragment.count, 0) } }.start()
        #expect(throws: HandoverSocket.Failure.self) { try new.receive(timeoutMillis: 5_000) }

        let (other, reader) = try HandoverSocket.pair()
        var pipeEnds: [CInt] = [-1, -1]
        try #require(pipe(&pipeEnds) == 0)
        defer { close(pipeEnds[0]); close(pipeEnds[1]) }
        // A middle fragment with a descriptor: refused, the descriptor closed (not leaked).
        let middle = Array(HandoverSocket.fragmentMagic + [1, 5])
        try other.send(middle, descriptor: pipeEnds[0])
        #expect(throws: HandoverSocket.Failure.self) { try reader.receive(timeoutMillis: 1_000) }
    }

    /// The old process sends every key its dedupe holds (a worker's resend
    /// window), not the last 2,048: a message of ~2 MiB (compact keys), read back whole.
    @Test func everyDeliveredKeyTheDedupeHoldsGoesOver() throws {
        #expect(HandoverSource.deliveredKeys == RecentKeys().capacity)
        let keys = (0..<HandoverSource.deliveredKeys).map { EventKey.message(id: String(format: "01JD%022d", $0), change: .created) }
        let message = HandoverMessage.delivered(keys: keys)
        let (old, new) = try HandoverSocket.pair()
        Thread { try? old.send(message.encode()) }.start()
        let received = try #require(try new.receive(timeoutMillis: 10_000))
        #expect(try HandoverMessage(bytes: received.bytes) == message)
    }

    /// Tests set the drain bound; anything not a sane count of ms leaves 2 s.
    @Test func theDrainBoundComesFromTheEnvironment() {
        let variable = HandoverReport.drainBoundVariable
        #expect(HandoverSource.drainBound([:]) == 2_000_000_000)
        #expect(HandoverSource.drainBound([variable: "250"]) == 250_000_000)
        for bad in ["", "0", "-5", "2s", "600001"] { #expect(HandoverSource.drainBound([variable: bad]) == 2_000_000_000, "\(bad)") }
    }

    @Test func silenceTimesOutAndAGonePeerThrows() throws {
        var (old, new): (HandoverSocket?, HandoverSocket) = try HandoverSocket.pair()
        #expect(try new.receive(timeoutMillis: 10) == nil)
        #expect(old != nil)
        old = nil
        #expect(throws: HandoverSocket.Failure.self) { try new.receive(timeoutMillis: 1_000) }
    }
}
