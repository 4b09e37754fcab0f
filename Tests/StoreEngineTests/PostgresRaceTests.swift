import ChatCore
@testable import ChatPostgres
import ChatStore
import ChatTesting
import Foundation
import Testing

/// Races between workers that only PostgreSQL has (SQLite has one writer):
/// two engines with their own pools, on threads of their own, as two
/// workers' bus threads; the interleaving is forced by holding one
/// transaction open until the other is blocked on its lock.
@Suite(.enabled(if: PostgresServer.isInstalled)) struct PostgresRaceTests {
    /// A fresh, migrated database: an engine, a second one (its own connections), the database's name.
    static func fresh() throws -> (engine: PostgresEngine, other: PostgresEngine, database: String) {
        let url = try PostgresServer.start().createDatabase()
        let engine = try PostgresEngine(url: url, poolSize: 4)
        try engine.migrate()
        return (engine, try PostgresEngine(url: url, poolSize: 4), String(url.split(separator: "/").last ?? ""))
    }

    /// Whether a session of `database` waits on a lock within 10 s, or `done`
    /// says the other side finished. Asked through `tx`, the lock holder's
    /// own transaction, not a `psql` a poll: a process spawned every 20 ms
    /// beside the other tests' spawns once crashed Foundation's
    /// `Process.run` (SIGSEGV in its memmove, CI, session 14).
    static func blockedOnALock(in database: String, via tx: any StoreTransaction, orDone done: Flag) throws -> Bool {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if done.isSet { return false }
            // A transaction keeps its first view of pg_stat_activity: drop it.
            try tx.run("SELECT pg_stat_clear_snapshot()", [])
            let waiting = try tx.rows("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", [.text(database)])
            if (waiting.first?[0].flatMap { Int($0) } ?? 0) > 0 { return true }
            usleep(20_000)
        }
        return false
    }

    /// Runs `body` on a thread of its own; the returned function waits for it and gives its error.
    static func inBackground(_ body: @escaping @Sendable () throws -> Void) -> () -> (any Error)? {
        let errors = ErrorList()
        let finished = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            defer { finished.signal() }
            do { try body() } catch { errors.append(error) }
        }
        return {
            finished.wait()
            return errors.all.first
        }
    }

    /// Runs `first` in a transaction of `engine` that stays open until
    /// `second`, in one of `other`, waits on a lock (or finishes without
    /// waiting); gives `second`'s result and whether it waited.
    static func race<T>(
        _ engine: PostgresEngine, _ other: PostgresEngine, in database: String,
        first: @escaping @Sendable (any StoreTransaction) throws -> Void, second: (any StoreTransaction) throws -> T
    ) throws -> (result: T, waited: Bool) {
        let (firstHolds, secondDone, waited) = (DispatchSemaphore(value: 0), Flag(), Flag())
        let holder = inBackground {
            try engine.write { tx -> Void in
                try first(tx)
                firstHolds.signal()
                if try blockedOnALock(in: database, via: tx, orDone: secondDone) { waited.set() }
            }
        }
        firstHolds.wait()
        let result = Result { try other.write(second) }
        secondDone.set()
        if let error = holder() { throw error }
        return (try result.get(), waited.isSet)
    }

    static func message(_ room: String, _ content: String, id: String = IDs.uuid7()) -> Requests.MessageCreate {
        Requests.MessageCreate(id: id, roomID: room, content: content, messageType: "text", replyTo: nil, clientMsgID: nil)
    }

    /// Two batches taking two rooms' rows in crossing orders (as the store and
    /// receipts workers do with participants' rows): PostgreSQL aborts one
    /// (40P01), and `write` runs it again instead of failing its commands.
    @Test func crossingBatchesDeadlockAndOneIsRunAgain() throws {
        let (engine, other, _) = try Self.fresh()
        let (one, two) = (try groupRoom(engine), try groupRoom(engine))
        let (aHolds, bHolds) = (DispatchSemaphore(value: 0), DispatchSemaphore(value: 0))
        let attempts = Attempts()
        let ids = (0..<4).map { _ in IDs.uuid7() }
        let a = Self.inBackground {
            try Self.crossing(engine, "a", rooms: (one, two), ids: (ids[0], ids[1]), holds: aHolds, waitsFor: bHolds, attempts: attempts)
        }
        let b = Self.inBackground {
            try Self.crossing(other, "b", rooms: (two, one), ids: (ids[2], ids[3]), holds: bHolds, waitsFor: aHolds, attempts: attempts)
        }
        let (errorA, errorB) = (a(), b())
        #expect(errorA == nil && errorB == nil, "\(String(describing: errorA ?? errorB))")
        #expect(attempts.total == 3, "one of the two ran again")
        for room in [one, two] {
            let page = try engine.read { try $0.messagePage(Requests.MessageList(roomID: room, page: page1, before: nil, after: nil), viewer: identity("bob").id) }
            #expect(page.messages.map(\.seq) == [2, 1])
        }
    }

    /// A batch writing to two rooms, which on its first try holds the first
    /// room's lock until the other batch holds its own first room's.
    static func crossing(
        _ engine: PostgresEngine, _ name: String, rooms: (String, String), ids: (String, String),
        holds: DispatchSemaphore, waitsFor: DispatchSemaphore, attempts: Attempts
    ) throws {
        try engine.write { tx -> Void in
            let attempt = attempts.next(name)
            _ = try tx.createMessage(Self.message(rooms.0, "\(name)1", id: ids.0), sender: identity("alice").user, maxChars: 100)
            if attempt == 1 {
                holds.signal()
                _ = waitsFor.wait(timeout: .now() + 10)
            }
            _ = try tx.createMessage(Self.message(rooms.1, "\(name)2", id: ids.1), sender: identity("alice").user, maxChars: 100)
        }
    }

    /// A receipt of a message being deleted: the deletion waits for the
    /// receipt's commit and takes its count back, so the reader's unread
    /// count does not count the deleted message as read.
    @Test func aReceiptRacingADeletionLeavesTheCountersRight() throws {
        let (engine, other, database) = try Self.fresh()
        let room = try groupRoom(engine)
        let gone = try #require(created(try send(engine, room, "to delete")))
        _ = try send(engine, room, "kept")
        let (receiptHolds, deleted) = (DispatchSemaphore(value: 0), Flag())
        let receipt = Self.inBackground {
            try engine.write { tx -> Void in
                _ = try tx.markMessageRead(Requests.MessageRef(roomID: room, messageID: gone.id), user: identity("bob").id)
                receiptHolds.signal()
                // Open until the deletion is blocked by this receipt (or, without the lock, has committed).
                _ = try Self.blockedOnALock(in: database, via: tx, orDone: deleted)
            }
        }
        receiptHolds.wait()
        _ = try other.write { try $0.deleteMessage(Requests.MessageRef(roomID: room, messageID: gone.id), user: identity("alice").id) }
        deleted.set()
        #expect(receipt() == nil)
        #expect(try engine.read { try $0.room(room, viewer: identity("bob").id) }.unreadCount == 1, "only \"kept\" is unread")
    }

    /// A receipt of a message whose deletion holds it: the receipt's insert
    /// waits for the deletion's commit, and then does not count it.
    @Test func aReceiptWaitingForADeletionDoesNotCountIt() throws {
        let (engine, other, database) = try Self.fresh()
        let room = try groupRoom(engine)
        let gone = try #require(created(try send(engine, room, "to delete")))
        _ = try send(engine, room, "kept")
        let ref = Requests.MessageRef(roomID: room, messageID: gone.id)
        let (_, waited) = try Self.race(engine, other, in: database, first: { tx in
            _ = try tx.deleteMessage(ref, user: identity("alice").id)
        }, second: { tx in
            _ = try tx.markMessageRead(ref, user: identity("bob").id)
        })
        #expect(waited)
        #expect(try engine.read { try $0.room(room, viewer: identity("bob").id) }.unreadCount == 1, "only \"kept\" is unread")
    }

    /// Bob marks the room read while Alice deletes one of its messages, the
    /// one who takes the message's row first holding its transaction open
    /// until the other waits for it: either way the deleted message is not
    /// counted as read, so a later message is bob's one unread.
    @Test(arguments: [true, false]) func markingTheRoomReadRacingADeletionLeavesTheCountersRight(readFirst: Bool) throws {
        let (engine, other, database) = try Self.fresh()
        let room = try groupRoom(engine)
        let gone = try #require(created(try send(engine, room, "to delete")))
        _ = try send(engine, room, "kept")
        let markRead: @Sendable (any StoreTransaction) throws -> Void = { _ = try $0.markRoomRead(room, user: identity("bob").id) }
        let delete: @Sendable (any StoreTransaction) throws -> Void = {
            _ = try $0.deleteMessage(Requests.MessageRef(roomID: room, messageID: gone.id), user: identity("alice").id)
        }
        let (first, second) = readFirst ? (markRead, delete) : (delete, markRead)
        let (_, waited) = try Self.race(engine, other, in: database, first: first, second: second)
        #expect(waited, "the second waited for the first's lock on the message")
        _ = try send(engine, room, "later")
        #expect(try engine.read { try $0.room(room, viewer: identity("bob").id) }.unreadCount == 1, "only \"later\" is unread")
    }

    /// An edit that read the message before a deletion committed does not
    /// write content back into the deleted message.
    @Test func anEditRacingADeletionIsRefused() throws {
        let (engine, other, database) = try Self.fresh()
        let room = try groupRoom(engine)
        let target = try #require(created(try send(engine, room, "original")))
        let ref = Requests.MessageRef(roomID: room, messageID: target.id)
        let (deletionHolds, edited) = (DispatchSemaphore(value: 0), Flag())
        let deletion = Self.inBackground {
            try engine.write { tx -> Void in
                _ = try tx.deleteMessage(ref, user: identity("alice").id)
                deletionHolds.signal()
                _ = try Self.blockedOnALock(in: database, via: tx, orDone: edited)
            }
        }
        deletionHolds.wait()
        #expect(throws: StoreError.self) {
            try other.write { try $0.editMessage(Requests.MessageUpdate(roomID: room, messageID: target.id, content: "rewritten"), user: identity("alice").id, maxChars: 100) }
        }
        edited.set()
        #expect(deletion() == nil)
        let stored = try #require(try engine.read { try $0.messages(ids: [target.id]) }.first)
        #expect(stored.isDeleted && stored.content.isEmpty)
    }

    /// Two search workers on one database while messages are edited: their
    /// passes take turns, so what ends indexed is every message's last
    /// content (two passes from one watermark could commit an older read
    /// over a newer one, and move the watermark past it).
    @Test func twoSearchWorkersIndexTheLatestContent() throws {
        let (engine, other, _) = try Self.fresh()
        let room = try groupRoom(engine)
        let messages = try (0..<4).map { try #require(created(try send(engine, room, "m\($0) v0"))) }
        let editing = Flag()
        let passes = try [engine, other].map { db in
            let index = UncheckedIndex(index: try db.makeSearchIndex(indexPath: ""))
            return Self.inBackground { while !editing.isSet { try index.index.catchUp(batch: 2, budget: 0.2) } }
        }
        for round in 1...40 {
            for (n, message) in messages.enumerated() {
                _ = try other.write {
                    try $0.editMessage(Requests.MessageUpdate(roomID: room, messageID: message.id, content: "m\(n) v\(round)"), user: identity("alice").id, maxChars: 100)
                }
            }
        }
        editing.set()
        for pass in passes { #expect(pass() == nil) }
        // A third worker, fresh: it starts from the stored watermark.
        let index = try engine.makeSearchIndex(indexPath: "")
        try StoreEngineTests.catchUpFully(index)
        for (n, message) in messages.enumerated() {
            #expect(try index.search("m\(n) v40", user: identity("bob").id, filters: SearchIndex.Filters()).map(\.id) == [message.id])
        }
    }

    /// A search worker whose pass finds another worker's pass holding the
    /// lock skips it instead of waiting (its searches would wait for the
    /// pass), reported not done (the index may be behind), and indexes on
    /// its next pass once the lock is free.
    @Test func aSearchPassSkipsWhileAnotherHoldsTheLock() throws {
        let (engine, other, _) = try Self.fresh()
        let room = try groupRoom(engine)
        _ = try send(engine, room, "needle")
        let index = try other.makeSearchIndex(indexPath: "")
        let skipped = try engine.transaction(begin: PostgresEngine.beginWrite) { tx in
            try tx.query("SELECT pg_advisory_xact_lock($1)", [.int(PostgresSearchIndex.lockKey)])
            return try index.catchUp(batch: 10, budget: 5)
        }
        #expect(skipped.count == 0 && !skipped.done)
        // Fully: a pass indexes only what every open transaction of the server (other tests') can see.
        try StoreEngineTests.catchUpFully(index)
        #expect(try index.search("needle", user: identity("bob").id, filters: SearchIndex.Filters()).count == 1)
    }

    /// Alice and Bob open their direct room at once: the second's insert
    /// waits for the first's uncommitted room, then answers with it.
    @Test func aDirectRoomOpenedByBothAtOnceIsOneRoom() throws {
        let (engine, other, database) = try Self.fresh()
        _ = try groupRoom(engine)  // the users
        let firstRoom = IDs.uuid7()
        let (second, waited) = try Self.race(engine, other, in: database, first: { tx in
            _ = try tx.directRoom(Requests.RoomDirect(userID: identity("bob").id, newRoomID: firstRoom), user: identity("alice").id)
        }, second: { tx in
            try tx.directRoom(Requests.RoomDirect(userID: identity("alice").id, newRoomID: IDs.uuid7()), user: identity("bob").id)
        })
        #expect(waited)
        #expect(second.0.id == firstRoom && !second.1, "the first's room, not created again")
    }

    /// Two joins of a public room at its last free place: the second waits
    /// for the first's commit, then is refused (another user) or keeps the
    /// one row (the same user).
    @Test(arguments: [false, true]) func twoJoinsAtTheLastPlaceKeepTheLimit(sameUser: Bool) throws {
        let (engine, other, database) = try Self.fresh()
        let room = IDs.uuid7()
        try engine.write { tx in
            for sub in ["alice", "u0", "u1"] { try tx.upsert(identity(sub)) }
            _ = try tx.createRoom(Requests.RoomCreate(id: room, name: "Open", roomType: "public", participantIDs: []),
                                  creator: identity("alice").id, maxParticipants: 100)
        }
        let (result, waited) = try Self.race(engine, other, in: database, first: { tx in
            try tx.joinRoom(room, user: identity("u0").id, maxParticipants: 2)
        }, second: { tx in
            Result { try tx.joinRoom(room, user: identity(sameUser ? "u0" : "u1").id, maxParticipants: 2) }
        })
        #expect(waited)
        if sameUser {
            #expect(throws: Never.self) { try result.get() }
        } else {
            #expect((result.failure as? StoreError)?.code == .badRequest)
        }
        let members = try engine.read { try $0.room(room, viewer: identity("alice").id) }.participants.map(\.id)
        #expect(members.sorted() == [identity("alice").id, identity("u0").id].sorted())
    }

    /// Hosts starting at once all migrate: each migration is applied once, and none fails.
    @Test func concurrentMigratorsAllSucceed() throws {
        let url = try PostgresServer.start().createDatabase()
        let engines: [any StoreEngine] = try (0..<6).map { _ in try PostgresEngine(url: url, poolSize: 1) }
        let errors = ConcurrentWritersTests.concurrently(engines, count: engines.count) { engine, _ in
            try (engine as? PostgresEngine)?.migrate()
        }
        #expect(errors.isEmpty, "\(errors.prefix(2))")
        let name = String(url.split(separator: "/").last ?? "")
        let applied = try PostgresServer.start().psql("SELECT count(*) FROM chatd_migrations", database: name)
        #expect(Int(applied.trimmingCharacters(in: .whitespacesAndNewlines)) == PostgresMigrations.all.count)
    }
}

/// Tries of a transaction body, by name.
final class Attempts: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [String: Int] = [:]
    func next(_ name: String) -> Int {
        lock.withLock {
            counts[name, default: 0] += 1
            return counts[name]!
        }
    }
    var total: Int { lock.withLock { counts.values.reduce(0, +) } }
}

/// An index handed to the one thread that uses it.
struct UncheckedIndex: @unchecked Sendable { let index: any MessageSearchIndex }

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

extension Result {
    var failure: Failure? { if case .failure(let error) = self { error } else { nil } }
}
