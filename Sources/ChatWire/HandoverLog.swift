/// Where a handed-over socket's room stream goes on. Room events carry no
/// sequence number the frontend reads, but the broker is one thread and
/// every subscriber's pipe is FIFO: the old and the new frontend receive a
/// room's events as the same byte strings in the same order. So the old one
/// logs a hash of each room event it receives from the moment it offers a
/// handover (before the new one subscribes), and sends with each socket the
/// log up to the moment that socket stopped; the new one buffers each room's
/// events from its subscription on (after the offer). The old log's end
/// overlaps the buffer's start by exactly the events both received before the
/// socket stopped; the new one delivers the buffer after that overlap.
public enum HandoverLog {
    /// Most hashes sent per socket: the events of its room from the offer
    /// to the socket's stop. A handover takes well under a second; a room
    /// busier than this over it is cut short (`logTruncated`).
    public static let capacity = 4_096

    /// FNV-1a (64 bits) of the event's key frame, a zero byte, and its body:
    /// the same on both sides, computed per event, not per socket.
    public static func hash(key: some Sequence<UInt8>, body: some Sequence<UInt8>) -> UInt64 {
        var hash = FNV1a()
        hash.add(key)
        hash.add(0)
        hash.add(body)
        return hash.value
    }

    /// How many of `buffered`'s first events the socket already got: the
    /// longest run that ends `written` and starts `buffered`, or, when the
    /// buffer began before the log, up to where the whole log ends in it.
    ///
    /// The true overlap is such a run (the two are one stream), so a longer
    /// one would mean a run of events repeating byte for byte; every message
    /// and session event carries its own id, so only typing or receipt
    /// events could, and mistaking them costs one of those, never a message.
    /// A truncated log may have lost the overlap's start: then the log must
    /// appear whole in the buffer, and the overlap ends where it does; nil
    /// when it does not (events on both sides, nothing in common known): the
    /// store fills the socket's room.
    public static func overlap(written: [UInt64], truncated: Bool, buffered: [UInt64]) -> Int? {
        if let first = buffered.first {
            // Candidates are the places `buffered` could start in the log,
            // earliest (longest overlap) first; event hashes rarely repeat,
            // so there are few, and the scan stays linear.
            for start in written.indices.dropFirst(max(0, written.count - buffered.count)) where written[start] == first {
                if written[start...].elementsEqual(buffered.prefix(written.count - start)) { return written.count - start }
            }
        }
        guard !written.isEmpty && !buffered.isEmpty else { return 0 }
        // The whole log inside the buffer: the buffer began before the log
        // (a room the new process held already, before its start was a
        // barrier): the socket got everything up to the log's end.
        if let end = endOfFirstRun(written, in: buffered) { return end }
        // A truncated log that does not appear whole: nothing in common is known.
        if truncated { return nil }
        // Nothing in common, and the buffer begins after the log (a barrier
        // after the offer) and before the old process stopped the socket (it
        // caught up to `ready` first): the socket stopped right before the
        // buffer's first event.
        return 0
    }

    /// Where the first occurrence of `run` in `stream` ends.
    static func endOfFirstRun(_ run: [UInt64], in stream: [UInt64]) -> Int? {
        guard let first = run.first, run.count <= stream.count else { return nil }
        for start in 0...(stream.count - run.count) where stream[start] == first {
            if stream[start..<start + run.count].elementsEqual(run) { return start + run.count }
        }
        return nil
    }
}
