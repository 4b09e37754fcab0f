import ChatWire

/// The new frontend's side of a handover, pure like `HandoverSender`:
///
///     WAITING     --offer in our version-->   SUBSCRIBING (subscribe to every room)
///     WAITING     --another version, or malformed--> REFUSED (send refuse; the old serves on)
///     SUBSCRIBING --every room in force-->    BUFFERING (a barrier, then buffer every room)
///     BUFFERING   --the barrier passed-->     ADOPTING (send ready)
///     SUBSCRIBING, BUFFERING --a room failed, deadline--> REFUSED (send refuse, release the rooms)
///     ADOPTING    --delivered-->              seed the keys; once every loop has them, send seeded
///     ADOPTING    --connection-->             adopt it (replay its room's buffer after the overlap)
///     ADOPTING    --done, peer gone-->        DONE (release the rooms: buffering ends)
///
/// Nothing is adopted before every room is in force, so each adopted
/// socket's buffer reaches back before the moment its old process stopped
/// it (the old catches up to `ready` before it stops any). And no buffer
/// begins before the old process's log: a room this process held already
/// is in force at once, with events from before the offer still on their
/// way through its bus thread; buffering begins only past a subscription
/// sync requested after the offer (`beginBuffering`), so every event
/// buffered was forwarded by the broker after the offer, and logged.
struct HandoverReceiver {
    enum State: Equatable {
        case waiting(deadline: UInt64)
        case subscribing(deadline: UInt64, left: Set<String>)
        case buffering(deadline: UInt64)
        case adopting
        case refused(String)
        case done
    }

    enum Action: Equatable {
        case send(HandoverMessage)
        /// Take a hold on each room's subscription and buffer its events;
        /// answer `roomReady` or `roomFailed` for each.
        case subscribe([String])
        /// Pass a barrier (a subscription sync requested now, answered, and
        /// the bus thread's events before it handed to the loops), then
        /// buffer every room's events; answer `bufferingBegan`.
        case beginBuffering
        /// Adopt this socket (its descriptor came with the message).
        case adopt(HandoverConnection)
        /// Count these keys as delivered on every loop (`HandoverMessage.delivered`);
        /// answer `keysSeeded`.
        case seed([EventKey])
        /// Give the holds back and stop buffering.
        case release([String])
        case finished(adopted: Int, refused: String?)
    }

    /// How long the old frontend may take to offer, and the rooms to come into force.
    let timeout: UInt64
    /// The state version this process reads.
    let reads: UInt16
    private(set) var state: State
    private(set) var rooms: [String] = []
    private(set) var adopted = 0

    init(timeout: UInt64, now: UInt64, reads: UInt16 = HandoverMessage.version) {
        self.timeout = timeout
        self.reads = reads
        state = .waiting(deadline: now + timeout)
    }

    /// A packet from the old frontend, decoded or not.
    mutating func received(_ message: Result<HandoverMessage, HandoverError>, now: UInt64) -> [Action] {
        switch (state, message) {
        case (.waiting, .success(.offer(let offered, _))):
            rooms = Array(Set(offered)).sorted()
            guard !rooms.isEmpty else {
                // WAITING -> ADOPTING: nothing to subscribe to.
                state = .adopting
                return [.send(.ready)]
            }
            // WAITING -> SUBSCRIBING
            state = .subscribing(deadline: now + timeout, left: Set(rooms))
            return [.subscribe(rooms)]
        case (.waiting, .failure(.version(let version))):
            return refuse("state version \(version); this frontend reads \(reads)")
        case (.adopting, .success(.connection(let connection))):
            adopted += 1
            return [.adopt(connection)]
        case (.adopting, .success(.delivered(let keys))):
            return [.seed(keys)]
        case (.adopting, .success(.done)):
            return finish()
        case (.adopting, _):
            // Out of turn once sockets have come: keep them, end here.
            return finish()
        case (.refused, _), (.done, _):
            return []
        default:
            return refuse("unexpected message")
        }
    }

    /// Every loop counts the delivered keys: the old may stop its sockets.
    mutating func keysSeeded(now: UInt64) -> [Action] {
        guard state == .adopting else { return [] }
        return [.send(.seeded)]
    }

    mutating func roomReady(_ room: String, now: UInt64) -> [Action] {
        guard case .subscribing(let deadline, var left) = state else { return [] }
        left.remove(room)
        guard left.isEmpty else {
            state = .subscribing(deadline: deadline, left: left)
            return []
        }
        // SUBSCRIBING -> BUFFERING
        state = .buffering(deadline: deadline)
        return [.beginBuffering]
    }

    /// The barrier passed: every room's buffer begins after the offer.
    mutating func bufferingBegan(now: UInt64) -> [Action] {
        guard case .buffering = state else { return [] }
        // BUFFERING -> ADOPTING
        state = .adopting
        return [.send(.ready)]
    }

    /// The barrier got no answer in time: where the buffers would begin is not known.
    mutating func bufferingFailed(now: UInt64) -> [Action] {
        guard case .buffering = state else { return [] }
        return refuse("the buffering barrier did not pass")
    }

    mutating func roomFailed(_ room: String, now: UInt64) -> [Action] {
        guard case .subscribing = state else { return [] }
        return refuse("the room \(room) could not be subscribed")
    }

    /// The old frontend's end closed.
    mutating func peerGone(now: UInt64) -> [Action] {
        switch state {
        case .waiting, .subscribing, .buffering: refuse("the old frontend is gone")
        case .adopting: finish()
        case .refused, .done: []
        }
    }

    mutating func tick(now: UInt64) -> [Action] {
        switch state {
        case .waiting(let deadline) where now >= deadline: refuse("no offer in time")
        case .subscribing(let deadline, _) where now >= deadline: refuse("the rooms were not subscribed in time")
        case .buffering(let deadline) where now >= deadline: refuse("the buffering barrier did not pass in time")
        default: []
        }
    }

    var nextWakeup: UInt64? {
        switch state {
        case .waiting(let deadline), .subscribing(let deadline, _), .buffering(let deadline): deadline
        default: nil
        }
    }

    private mutating func refuse(_ reason: String) -> [Action] {
        let subscribed: [String] =
            switch state {
            case .subscribing, .buffering: rooms
            default: []
            }
        // -> REFUSED
        state = .refused(reason)
        return [.send(.refuse(reason: reason))] + (subscribed.isEmpty ? [] : [.release(subscribed)]) + [.finished(adopted: 0, refused: reason)]
    }

    private mutating func finish() -> [Action] {
        // ADOPTING -> DONE
        state = .done
        return (rooms.isEmpty ? [] : [.release(rooms)]) + [.finished(adopted: adopted, refused: nil)]
    }
}
