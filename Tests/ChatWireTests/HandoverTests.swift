import ChatWire
import Testing

@Suite struct HandoverTests {
    static let connection = HandoverConnection(
        frontendID: "f-1234", number: 77, identityJSON: Array(#"{"id":"u1"}"#.utf8), expiresMicros: 1_800_000_000_000_000,
        roomID: "0190a3c4-0000-7000-8000-000000000001", sessionJSON: Array(#"{"session_id":"s"}"#.utf8), idleMillis: 12_345,
        pinged: true, eventTokens: 17.5, written: [1, 2, 0xffff_ffff_ffff_ffff], logTruncated: true, unread: [0x81, 0x85, 1],
        stoppedAt: 123_456_789
    )

    @Test func messagesRoundTrip() throws {
        var plain = Self.connection
        plain.eventTokens = nil
        plain.pinged = false
        plain.logTruncated = false
        plain.written = []
        plain.unread = []
        for message: HandoverMessage in [
            .offer(rooms: ["a", "b", "ü"], connections: 3), .offer(rooms: [], connections: 0), .refuse(reason: "stopping"), .ready,
            .connection(Self.connection), .connection(plain), .done(connections: 1_000), .seeded,
            .delivered(keys: [
                .message(id: "a", change: .created), .message(id: "b", change: .edited(at: -5)), .message(id: "ü", change: .deleted),
                .session(id: "c", change: .joined), .session(id: "d", change: .left),
            ]),
            .delivered(keys: []),
        ] {
            #expect(try HandoverMessage(bytes: message.encode()) == message)
        }
    }

    /// Keys go compact (a kind byte, the id, an edit's time), about half
    /// their key frames' size, and only idempotent ones: no other is deduplicated.
    @Test func deliveredKeysGoCompactAndOnlyIdempotentOnes() throws {
        let created = EventKey.message(id: "01JD0000000000000000000042", change: .created)
        let keys: [EventKey] = [created, .none, .removeEveryone, .removeUser("u"), .except(ConnectionRef(frontend: "f", number: 1))]
        #expect(try HandoverMessage(bytes: HandoverMessage.delivered(keys: keys).encode()) == .delivered(keys: [created]))
        let one = HandoverMessage.delivered(keys: [created]).encode().count - HandoverMessage.delivered(keys: []).encode().count
        #expect(one == 1 + 4 + 26)
        // An id with `:` is no key a worker writes; a kind past 5 none at all.
        var colon = HandoverMessage.delivered(keys: [.message(id: "ab", change: .created)]).encode()
        colon[colon.count - 1] = UInt8(ascii: ":")
        #expect(throws: HandoverError.malformed) { try HandoverMessage(bytes: colon) }
        var kind = HandoverMessage.delivered(keys: [.message(id: "ab", change: .created)]).encode()
        kind[kind.count - 7] = 6
        #expect(throws: HandoverError.malformed) { try HandoverMessage(bytes: kind) }
        // A count past what the bytes could hold is a lie.
        var lying = HandoverMessage.delivered(keys: []).encode()
        lying.replaceSubrange(lying.count - 4..<lying.count, with: [0, 0, 0, 1])
        #expect(throws: HandoverError.malformed) { try HandoverMessage(bytes: lying) }
    }

    @Test func anotherVersionIsRefusedBeforeItsBodyIsRead() {
        var bytes = HandoverMessage.ready.encode()
        #expect(Array(bytes.prefix(3)) == Array("CHH".utf8))
        bytes[3] = 0xff
        bytes[4] = 0x02
        // Whatever follows, the version alone decides: a newer binary's record is never guessed at.
        bytes.append(contentsOf: [9, 9, 9])
        #expect(throws: HandoverError.version(0xff02)) { try HandoverMessage(bytes: bytes) }
        #expect(throws: HandoverError.notHandover) { try HandoverMessage(bytes: Array("XYZ\u{0}\u{1}\u{3}".utf8)) }
    }

    @Test func malformedMessagesAreRefused() {
        let whole = HandoverMessage.connection(Self.connection).encode()
        // Every cut of a record fails cleanly; none reads past its end.
        for length in 0..<whole.count {
            #expect(throws: (any Error).self) { try HandoverMessage(bytes: Array(whole.prefix(length))) }
        }
        #expect(throws: HandoverError.malformed) { try HandoverMessage(bytes: whole + [0]) }
        var lying = HandoverMessage.offer(rooms: [], connections: 0).encode()
        lying.replaceSubrange(lying.count - 4..<lying.count, with: [0xff, 0xff, 0xff, 0xff])
        #expect(throws: HandoverError.malformed) { try HandoverMessage(bytes: lying) }
        #expect(throws: HandoverError.malformed) { try HandoverMessage(bytes: Array("CHH".utf8) + [UInt8(HandoverMessage.version >> 8), UInt8(HandoverMessage.version & 0xff), 99]) }
    }

    @Test func hashTellsKeyFromBody() {
        let a = HandoverLog.hash(key: Array("m:1:new".utf8), body: Array("{}".utf8))
        #expect(a == HandoverLog.hash(key: Array("m:1:new".utf8), body: Array("{}".utf8)))
        #expect(a != HandoverLog.hash(key: Array("m:1:new{".utf8), body: Array("}".utf8)))
        #expect(a != HandoverLog.hash(key: Array("m:2:new".utf8), body: Array("{}".utf8)))
    }

    @Test func overlapIsWhatBothReceived() {
        // The log began before the buffer: the events 3, 4 reached the socket and are buffered too.
        #expect(HandoverLog.overlap(written: [1, 2, 3, 4], truncated: false, buffered: [3, 4, 5, 6]) == 2)
        // The socket stopped before the buffer's first event.
        #expect(HandoverLog.overlap(written: [1, 2], truncated: false, buffered: [5, 6]) == 0)
        #expect(HandoverLog.overlap(written: [], truncated: false, buffered: [5, 6]) == 0)
        #expect(HandoverLog.overlap(written: [1, 2], truncated: false, buffered: []) == 0)
        // The buffer holds all of it and nothing after.
        #expect(HandoverLog.overlap(written: [1, 2, 3], truncated: false, buffered: [2, 3]) == 2)
        // Repeated bytes (the same typing event twice): the longest run wins.
        #expect(HandoverLog.overlap(written: [7, 7, 7], truncated: false, buffered: [7, 7, 8]) == 2)
    }

    /// A room the new process held already: its buffer may begin before the
    /// old process's log (events from before the offer still on their way
    /// through its bus thread). The socket got the whole log: only what
    /// follows its end is owed, not the whole buffer (the review's duplicates).
    @Test func aBufferThatBeganBeforeTheLogReplaysOnlyWhatFollowsIt() {
        #expect(HandoverLog.overlap(written: [3, 4], truncated: false, buffered: [1, 2, 3, 4, 5, 6]) == 4)
        #expect(HandoverLog.overlap(written: [3, 4], truncated: false, buffered: [1, 2, 3, 4]) == 4)
    }

    @Test func truncatedLogIsFoundInsideTheBuffer() {
        // Events 1 and 2 fell out of the log; the buffer began before them.
        #expect(HandoverLog.overlap(written: [3, 4], truncated: true, buffered: [1, 2, 3, 4, 5]) == 4)
        #expect(HandoverLog.overlap(written: [3, 4], truncated: true, buffered: [3, 4, 5]) == 2)
        // Nothing known in common: the gap is the store's to fill.
        #expect(HandoverLog.overlap(written: [3, 4], truncated: true, buffered: [8, 9]) == nil)
        #expect(HandoverLog.overlap(written: [3, 4], truncated: true, buffered: []) == 0)
    }

    @Test func overlapScanStaysLinearOnDistinctEvents() {
        let written = (0..<UInt64(HandoverLog.capacity)).map { $0 }
        let buffered = (UInt64(HandoverLog.capacity - 10)..<UInt64(HandoverLog.capacity + 500)).map { $0 }
        #expect(HandoverLog.overlap(written: written, truncated: false, buffered: buffered) == 10)
    }

    @Test func reportsRoundTrip() {
        for report in [
            HandoverReport(adopted: 120, replayed: 37, gaps: 1, millis: 41, pauseMedianMicros: 2_100, pauseMaxMicros: 9_800), HandoverReport(),
            HandoverReport(refused: "state version 2; this frontend reads 1"),
        ] {
            #expect(HandoverReport(report.description) == report, "\(report)")
        }
        #expect(HandoverReport(adopted: 3, replayed: 2, gaps: 0, millis: 9).description == "v=1 adopted=3 replayed=2 gaps=0 ms=9 pause50us=0 pausemaxus=0")
        for text in [
            "v=1", "v=1 adopted=1", "v=1 adopted=1 replayed=2 gaps=0 ms=x pause50us=0 pausemaxus=0",
            "v=1 adopted=1 replayed=2 gaps=0 ms=3 pause50us=0 pausemaxus=0 extra=4", "v=x adopted=1",
        ] {
            #expect(HandoverReport(text) == nil && HandoverReport.read(text) == .failure(.malformed), "\(text)")
        }
        #expect(HandoverReport.socketPath(runtimeDir: "/run/chatd", pid: 42) == "/run/chatd/handover.42.sock")
    }

    /// A report of another binary (`ctl upgrade`: a new frontend, the old
    /// supervisor) is told apart by its version, not read as if it were ours:
    /// a report from before the version existed is version 0.
    @Test func aReportInAnotherVersionIsToldApartNotMisread() {
        #expect(HandoverReport.read("adopted=3 replayed=2 gaps=0 ms=9 pause50us=0 pausemaxus=0") == .failure(.version(0)))
        #expect(HandoverReport.read("refused=state version 2; this frontend reads 1") == .failure(.version(0)))
        #expect(HandoverReport.read("v=2 adopted=3 replayed=2 gaps=0 ms=9 pause50us=0 pausemaxus=0") == .failure(.version(2)))
        #expect(HandoverReport.read("v=1 refused=no offer in time") == .success(HandoverReport(refused: "no offer in time")))
        #expect(HandoverReport.read("") == .failure(.version(0)))
    }

    @Test func tokenBucketsCarryTheLowerCount() {
        var buckets = TokenBuckets(rate: 1, burst: 10)
        #expect(buckets.tokens("u", now: 0) == 10)
        buckets.limit("u", to: 3, now: 0)
        #expect(buckets.tokens("u", now: 0) == 3)
        buckets.limit("u", to: 8, now: 0)
        #expect(buckets.tokens("u", now: 0) == 3, "a handover never adds tokens")
        #expect(buckets.tokens("u", now: 2_000_000_000) == 5)
    }
}
