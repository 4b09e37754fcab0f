import ChatCore
import Foundation

/// Calls in the store (issue 17, api-contract.md "Calls"): the tables of
/// migration `v17-calls`, SQLite and PostgreSQL alike, written once for both
/// engines in `WebhookStore`'s common SQL. A call is rows, so it outlives any
/// worker; every change is `CallRules` applied to the stored call inside the
/// write transaction, and written back only if nobody changed the call
/// meanwhile (`version`: two store workers may act on one call at once).
public enum CallStore {
    public static let schema = """
        CREATE TABLE calls (
            id TEXT PRIMARY KEY NOT NULL,
            room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
            media TEXT NOT NULL,
            started_by TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            state TEXT NOT NULL,
            started_at BIGINT NOT NULL,
            ended_at BIGINT,
            version BIGINT NOT NULL DEFAULT 0
        );
        CREATE INDEX calls_room ON calls(room_id, started_at);
        CREATE INDEX calls_ringing ON calls(started_at) WHERE state = 'ringing';
        CREATE TABLE call_participants (
            call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            presence TEXT NOT NULL,
            joined_at BIGINT,
            PRIMARY KEY (call_id, user_id)
        );
        """

    /// A room has one call at a time: a second one while one rings or runs is `400`.
    public static let busy = "This room already has a call in progress"

    /// How often a change that met another's write is tried again before
    /// giving up (a `400` that asks the client to retry); each retry reads
    /// the call anew, and one write wins each time, so five are plenty.
    static let attempts = 5

    /// What `change` did to a call.
    enum Change {
        case changed(Call, [CallEvent])
        /// Nothing changed: a repeat, or an expiry of a call not due or over.
        case unchanged(Call)
        case missing
        /// Another worker's write won every attempt.
        case contended
    }
}

/// A call's write met another worker's: nothing was written; try again.
struct CallWriteConflict: Error {}

extension StoreTransaction {
    /// `POST .../rooms/{id}/calls/`: a ringing call, by a member of an active
    /// room. `id` is the frontend's, so a resend returns the stored call.
    public func startCall(id: String, room roomID: String, media: CallMedia, user: String, now: Timestamp = .now()) throws -> (Call, [CallEvent]) {
        if let stored = try storedCall(id) { return (stored.call, []) }
        let info = try requireRoom(roomID, user: user, allowPublic: false)
        guard info.isActive else { throw StoreError.badRequest(error: "This room is no longer active") }
        guard try openCall(in: roomID) == nil else { throw StoreError.badRequest(error: CallStore.busy) }
        let call = CallRules.start(id: id, room: roomID, media: media, by: user, at: now)
        try run("INSERT INTO calls (id, room_id, media, started_by, state, started_at) VALUES ($1, $2, $3, $4, $5, $6)",
                [.text(call.id), .text(roomID), .text(media.rawValue), .text(user), .text(call.state.rawValue), .int(now.micros)])
        try writeParticipants(call)
        return (call, [.started])
    }

    /// `join/`, `leave/`, `decline/`, `end/` by a member of the call's room
    /// (`404` for an unknown call, `403` for anyone else, `400` for a
    /// `CallRefusal`). The call as it now is, and the events to send.
    public func callAction(_ action: CallAction, call callID: String, user: String, now: Timestamp = .now(), ring: Int64 = CallRules.ringMicros) throws -> (Call, [CallEvent]) {
        let changed = try change(callID) { stored in
            try requireRoom(stored.call.roomID, user: user, allowPublic: false)
            // Only a decline asks how many could still answer.
            let members = action == .decline
                ? Int(WebhookStore.int(try rows("SELECT COUNT(*) FROM room_participants WHERE room_id = $1", [.text(stored.call.roomID)]).first?[0]))
                : 0
            do {
                return try CallRules.apply(action, to: stored.call, by: user, memberCount: members, at: now, ring: ring)
            } catch let refusal as CallRefusal {
                throw StoreError.badRequest(error: refusal.message)
            }
        }
        switch changed {
        case .changed(let call, let events): return (call, events)
        case .unchanged(let call): return (call, [])
        case .missing: throw StoreError.notFound("Call not found")
        case .contended: throw StoreError.badRequest(error: "The call changed meanwhile; try again")
        }
    }

    /// A member's membership of `room` ends (they leave or are removed): out
    /// of its open call too, if they are in it, or the call would wait for
    /// someone who can no longer leave it (and the room could call no more).
    /// Called before the membership goes, while they may still act.
    public func leaveOpenCall(room: String, user: String, now: Timestamp = .now(), ring: Int64 = CallRules.ringMicros) throws -> (Call, [CallEvent])? {
        guard let id = try openCall(in: room),
            let call = try storedCall(id)?.call, call.joined.contains(user)
        else { return nil }
        return try callAction(.leave, call: id, user: user, now: now, ring: ring)
    }

    /// One call, for a member of its room.
    public func call(_ callID: String, viewer: String) throws -> Call {
        guard let stored = try storedCall(callID) else { throw StoreError.notFound("Call not found") }
        try requireRoom(stored.call.roomID, user: viewer, allowPublic: false)
        return stored.call
    }

    /// `GET .../rooms/{id}/calls/`: the room's calls, newest first, for its members.
    public func callPage(_ request: Requests.RoomPage, viewer: String) throws -> (count: Int64, calls: [Call]) {
        try requireRoom(request.roomID, user: viewer, allowPublic: false)
        let count = WebhookStore.int(try rows("SELECT COUNT(*) FROM calls WHERE room_id = $1", [.text(request.roomID)]).first?[0])
        guard Pagination.isValid(request.page, count: count), let offset = Pagination.offset(request.page) else { throw StoreError.invalidPage }
        let ids = try rows("SELECT id FROM calls WHERE room_id = $1 ORDER BY started_at DESC, id DESC LIMIT $2 OFFSET $3",
                           [.text(request.roomID), .int(Int64(request.page.pageSize)), .int(offset)]).compactMap { $0[0] }
        return (count, try ids.compactMap { try storedCall($0)?.call })
    }

    /// Ringing calls past their `ring` (at most `limit`, oldest first), with
    /// their rooms: what a frontend's sweep asks, to send each its
    /// `call.expire` at the room's shard.
    public func dueCalls(now: Timestamp = .now(), limit: Int = 100, ring: Int64 = CallRules.ringMicros) throws -> [(id: String, roomID: String)] {
        try rows("SELECT id, room_id FROM calls WHERE state = 'ringing' AND started_at <= $1 ORDER BY started_at LIMIT $2",
                 [.int(now.micros - ring), .int(Int64(limit))]).compactMap { row in
            guard let id = row[0], let room = row[1] else { return nil }
            return (id, room)
        }
    }

    /// A ringing call past its time, missed now, and its events; none for a
    /// call that is not due, or was answered or expired meanwhile.
    public func expireCall(_ callID: String, now: Timestamp = .now(), ring: Int64 = CallRules.ringMicros) throws -> (Call, [CallEvent])? {
        let changed = try change(callID) { stored in
            // The call's own starter applies it: `expire` needs no member's say.
            try CallRules.apply(.expire, to: stored.call, by: stored.call.startedBy, memberCount: 0, at: now, ring: ring)
        }
        guard case .changed(let call, let events) = changed, !events.isEmpty else { return nil }
        return (call, events)
    }

    /// `apply` to the stored call, written back unless another worker
    /// changed it meanwhile; then read anew and tried again, at most
    /// `CallStore.attempts` times. `apply`'s errors pass through.
    func change(_ callID: String, _ apply: ((call: Call, version: Int64)) throws -> (Call, [CallEvent])) throws -> CallStore.Change {
        for _ in 0..<CallStore.attempts {
            guard let stored = try storedCall(callID) else { return .missing }
            let (call, events) = try apply(stored)
            // Not the events: a decline that others may still answer changes the call and tells nobody.
            guard call != stored.call else { return .unchanged(call) }
            do {
                try save(call, over: stored)
                return .changed(call, events)
            } catch is CallWriteConflict {
                continue
            }
        }
        return .contended
    }

    /// Ringing calls past their time, missed now: `dueCalls` and
    /// `expireCall` in one transaction (one shard's worth, or a test's).
    public func expireCalls(now: Timestamp = .now(), limit: Int = 100, ring: Int64 = CallRules.ringMicros) throws -> [(Call, [CallEvent])] {
        try dueCalls(now: now, limit: limit, ring: ring).compactMap { try expireCall($0.id, now: now, ring: ring) }
    }

    /// Whether `from` may send `to` a signal in call `callID` of `roomID`
    /// (a WebSocket's room): both are in the call now. `404` for a call
    /// that is not this room's, `400` otherwise.
    public func checkSignal(call callID: String, room roomID: String, from: String, to: String) throws {
        guard let stored = try storedCall(callID), stored.call.roomID == roomID else { throw StoreError.notFound("Call not found") }
        // Still a member: one removed since joining has no say in the call.
        try requireRoom(roomID, user: from, allowPublic: false)
        let call = stored.call
        guard !call.state.isOver else { throw StoreError.badRequest(error: CallRefusal.over.message) }
        guard call.joined.contains(from) else { throw StoreError.badRequest(error: CallRefusal.notInCall.message) }
        guard from != to else { throw StoreError.badRequest(error: "A signal goes to another participant") }
        guard call.joined.contains(to) else { throw StoreError.badRequest(error: "The addressee is not in this call") }
    }

    // MARK: Rows

    /// The room's ringing or active call, if any (one at a time).
    func openCall(in room: String) throws -> String? {
        try rows("SELECT id FROM calls WHERE room_id = $1 AND state IN ('ringing', 'active') LIMIT 1", [.text(room)]).first?[0]
    }

    func storedCall(_ id: String) throws -> (call: Call, version: Int64)? {
        guard let row = try rows("SELECT id, room_id, media, started_by, state, started_at, ended_at, version FROM calls WHERE id = $1", [.text(id)]).first
        else { return nil }
        let participants = try rows(
            "SELECT user_id, presence, joined_at FROM call_participants WHERE call_id = $1 ORDER BY position", [.text(id)]
        ).map { CallParticipant(userID: $0[0] ?? "", presence: CallPresence(rawValue: $0[1] ?? "") ?? .left, joinedAt: $0[2].flatMap(Int64.init).map(Timestamp.init(micros:))) }
        let call = Call(
            id: row[0] ?? id, roomID: row[1] ?? "", media: CallMedia(rawValue: row[2] ?? "") ?? .audio, startedBy: row[3] ?? "",
            state: CallState(rawValue: row[4] ?? "") ?? .ended, participants: participants, startedAt: Timestamp(micros: WebhookStore.int(row[5])),
            endedAt: row[6].flatMap(Int64.init).map(Timestamp.init(micros:))
        )
        return (call, WebhookStore.int(row[7]))
    }

    /// Writes `call` if its row is still at `stored`'s version.
    func save(_ call: Call, over stored: (call: Call, version: Int64)) throws {
        guard call != stored.call else { return }
        let changed = try run("UPDATE calls SET state = $1, ended_at = $2, version = version + 1 WHERE id = $3 AND version = $4", [
            .text(call.state.rawValue), call.endedAt.map { .int($0.micros) } ?? .null, .text(call.id), .int(stored.version),
        ])
        guard changed == 1 else { throw CallWriteConflict() }
        try writeParticipants(call)
    }

    func writeParticipants(_ call: Call) throws {
        for (position, p) in call.participants.enumerated() {
            try run("""
                INSERT INTO call_participants (call_id, user_id, position, presence, joined_at) VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (call_id, user_id) DO UPDATE SET presence = excluded.presence, joined_at = excluded.joined_at
                """, [.text(call.id), .text(p.userID), .int(Int64(position)), .text(p.presence.rawValue), p.joinedAt.map { .int($0.micros) } ?? .null])
        }
    }
}
