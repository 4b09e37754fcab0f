import ChatWire

/// Per-socket order across a worker crash.
///
/// A frontend numbers the commands it sends to each store shard (`stream`)
/// and tells, with each, the lowest number it still waits for (`floor`). When
/// a worker dies with commands in its queue, those come back by resend, later
/// than commands sent after them; a fresh worker would otherwise store the
/// later ones first. The sequencer hands commands on in stream order: it
/// holds a command until every lower number still awaited has arrived.
///
/// - A worker's first command of a stream sets where it starts: `floor`.
/// - A number below the expected one is a resend of something handled (its
///   reply was lost): passed on at once, writes are idempotent.
/// - A floor above the expected number means the frontend gave up on the gap
///   (its senders were told it failed): the gap is skipped, never stored.
/// Pure state; unit-tested without sockets.
public struct StreamSequencer {
    struct Stream {
        var expected: UInt64
        var held: [UInt64: Command] = [:]
        var lastSeen: UInt64
    }

    private var streams: [String: Stream] = [:]
    /// Most commands held per stream; past it, order gives way to progress.
    public let maxHeld: Int

    public init(maxHeld: Int = 10_000) {
        self.maxHeld = maxHeld
    }

    public var heldCount: Int { streams.values.reduce(0) { $0 + $1.held.count } }

    /// The commands that may run now, in order (possibly none, possibly
    /// several: the arrival of a missing one releases those it held up).
    public mutating func accept(_ command: Command, now: UInt64) -> [Command] {
        guard let position = command.stream else { return [command] }
        var stream = streams[command.origin] ?? Stream(expected: position.floor, lastSeen: now)
        stream.lastSeen = now
        defer { streams[command.origin] = stream }
        if position.floor > stream.expected {
            // The frontend stopped waiting for what lies below its floor.
            stream.held = stream.held.filter { $0.key >= position.floor }
            stream.expected = position.floor
        }
        var ready: [Command] = []
        if position.seq < stream.expected {
            ready.append(command)
        } else if position.seq > stream.expected {
            stream.held[position.seq] = command
            if stream.held.count > maxHeld {
                // Never wait without bound: release everything in order.
                for seq in stream.held.keys.sorted() { ready.append(stream.held[seq]!) }
                stream.expected = (stream.held.keys.max() ?? stream.expected) + 1
                stream.held.removeAll()
            }
            // No early return: a floor raised above may have made a held
            // command the expected one; the loop below releases it.
        } else {
            // A copy held from an earlier send of this same command is stale now.
            stream.held[position.seq] = nil
            ready.append(command)
            stream.expected += 1
        }
        while let next = stream.held.removeValue(forKey: stream.expected) {
            ready.append(next)
            stream.expected += 1
        }
        return ready
    }

    /// Forgets streams silent since `before` (their frontend is gone).
    public mutating func forget(silentSince before: UInt64) {
        streams = streams.filter { $0.value.lastSeen >= before }
    }
}
