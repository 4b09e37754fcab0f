import ChatCore
import ChatPostgres
import ChatStore
import ChatTesting
import Foundation
import Testing

/// Several store workers (on several hosts) writing the same room: the order
/// comes from the database (the room's row lock), not from one writer. Two
/// engines, each with its own pool, on threads of their own, as two
/// workers' bus threads would be.
@Suite struct ConcurrentWritersTests {
    /// Runs `body(writer, i)` for i in 0..<count on `writers` threads at once.
    static func concurrently(_ writers: [any StoreEngine], count: Int, _ body: @escaping @Sendable (any StoreEngine, Int) throws -> Void) -> [any Error] {
        let errors = ErrorList()
        let group = DispatchGroup()
        for (w, writer) in writers.enumerated() {
            let engine = UncheckedEngine(engine: writer)
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                for i in stride(from: w, to: count, by: writers.count) {
                    do { try body(engine.engine, i) } catch { errors.append(error) }
                }
            }
        }
        group.wait()
        return errors.all
    }

    @Test(arguments: EngineKind.available)
    func twoWritersGetGapFreeUniqueSeqs(_ kind: EngineKind) throws {
        let (first, makeAnother) = try kind.make()
        let room = try groupRoom(first)
        let writers = [first, try makeAnother(), try makeAnother(), try makeAnother()]
        let errors = Self.concurrently(writers, count: 200) { engine, i in
            _ = try send(engine, room, "m\(i)", from: i % 2 == 0 ? "alice" : "bob")
        }
        #expect(errors.isEmpty, "\(errors.prefix(3))")
        let page = try first.read { try $0.messagePage(Requests.MessageList(roomID: room, page: Requests.Page(page: 1, pageSize: 500, url: "u", query: []), before: nil, after: nil), viewer: identity("alice").id) }
        #expect(page.count == 200)
        #expect(page.messages.map(\.seq) == Array((1...200).reversed()))
        #expect(Set(page.messages.map(\.content)).count == 200)
        // The counters kept on write agree with the messages: bob sent half of them.
        #expect(try first.read { try $0.room(room, viewer: identity("alice").id) }.unreadCount == 100)
    }

    /// The same commands sent by every writer at once (a resend racing its
    /// original on another worker): each message is stored once.
    @Test(arguments: EngineKind.available)
    func concurrentResendsStoreOnce(_ kind: EngineKind) throws {
        let (first, makeAnother) = try kind.make()
        let room = try groupRoom(first)
        let writers = [first, try makeAnother(), try makeAnother()]
        let ids = (0..<50).map { _ in IDs.uuid7() }
        let outcomes = OutcomeList()
        let errors = Self.concurrently(writers, count: 150) { engine, i in
            // i/3: the three writers send the same 50 commands, each with a client id too.
            let n = i / 3
            outcomes.append(try send(engine, room, "m\(n)", id: ids[n], clientMsgID: "c-\(n)"))
        }
        // A writer that lost the race on the unique id may be refused (the
        // batch processor's 400 conflict); it never stores a second copy.
        for error in errors { #expect(first.isConflict(error), "\(error)") }
        let page = try first.read { try $0.messagePage(Requests.MessageList(roomID: room, page: Requests.Page(page: 1, pageSize: 500, url: "u", query: []), before: nil, after: nil), viewer: identity("alice").id) }
        #expect(page.count == 50)
        #expect(Set(page.messages.map(\.id)) == Set(ids))
        #expect(outcomes.createdCount == 50)
    }

    /// Both users opening their direct room at once, on several workers: one
    /// room, created once; the others are answered with it.
    @Test(arguments: EngineKind.available)
    func concurrentDirectRoomsOfOnePairAreOneRoom(_ kind: EngineKind) throws {
        let (first, makeAnother) = try kind.make()
        _ = try groupRoom(first)  // the users
        let writers = [first, try makeAnother(), try makeAnother(), try makeAnother()]
        let rooms = DirectRooms()
        let errors = Self.concurrently(writers, count: 8) { engine, i in
            let (me, them) = i % 2 == 0 ? ("alice", "bob") : ("bob", "alice")
            let (room, created) = try engine.write {
                try $0.directRoom(Requests.RoomDirect(userID: identity(them).id, newRoomID: IDs.uuid7()), user: identity(me).id)
            }
            rooms.append(room.id, created: created)
        }
        #expect(errors.isEmpty, "\(errors.prefix(3))")
        #expect(Set(rooms.ids).count == 1)
        #expect(rooms.createdCount == 1)
    }

    /// Concurrent joins of a public room (each user twice at once): one row
    /// per member, and never more members than the limit.
    @Test(arguments: EngineKind.available)
    func concurrentJoinsKeepOneRowEachAndTheLimit(_ kind: EngineKind) throws {
        let (first, makeAnother) = try kind.make()
        let room = IDs.uuid7()
        let users = (0..<6).map { identity("u\($0)") }
        try first.write { tx in
            for user in users + [identity("alice")] { try tx.upsert(user) }
            _ = try tx.createRoom(Requests.RoomCreate(id: room, name: "Open", roomType: "public", participantIDs: []),
                                  creator: identity("alice").id, maxParticipants: 100)
        }
        let writers = [first, try makeAnother(), try makeAnother(), try makeAnother()]
        let errors = Self.concurrently(writers, count: 12) { engine, i in
            try engine.write { try $0.joinRoom(room, user: users[i % users.count].id, maxParticipants: 4) }
        }
        // Past the limit a join is refused (400); nothing else fails.
        for error in errors { #expect((error as? StoreError)?.code == .badRequest, "\(error)") }
        let members = try first.read { try $0.room(room, viewer: identity("alice").id) }.participants.map(\.id)
        #expect(members.count == 4, "alice and three of the six")
        #expect(Set(members).count == members.count)
    }
}

final class DirectRooms: @unchecked Sendable {
    private let lock = NSLock()
    private var rooms: [(id: String, created: Bool)] = []
    func append(_ id: String, created: Bool) { lock.withLock { rooms.append((id, created)) } }
    var ids: [String] { lock.withLock { rooms.map(\.id) } }
    var createdCount: Int { lock.withLock { rooms.filter(\.created).count } }
}

final class ErrorList: @unchecked Sendable {
    private let lock = NSLock()
    private var errors: [any Error] = []
    func append(_ error: any Error) { lock.withLock { errors.append(error) } }
    var all: [any Error] { lock.withLock { errors } }
}

final class OutcomeList: @unchecked Sendable {
    private let lock = NSLock()
    private var created = 0
    func append(_ outcome: Store.CreateOutcome) { if case .created = outcome { lock.withLock { created += 1 } } }
    var createdCount: Int { lock.withLock { created } }
}

/// An engine handed to a thread (engines are Sendable; the existential's box is not checked as such).
struct UncheckedEngine: @unchecked Sendable { let engine: any StoreEngine }
