import Glibc
import Testing

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

    @Test func silenceTimesOutAndAGonePeerThrows() throws {
        var (old, new): (HandoverSocket?, HandoverSocket) = try HandoverSocket.pair()
        #expect(try new.receive(timeoutMillis: 10) == nil)
        #expect(old != nil)
        old = nil
        #expect(throws: HandoverSocket.Failure.self) { try new.receive(timeoutMillis: 1_000) }
    }
}
