import ChatCore
import ChatStore
import ChatWire
import Foundation
import Testing

@testable import ChatWorkers

/// An engine whose first write runs its body and is then rolled back, and
/// run again, as PostgreSQL's engine does after a deadlock (PostgresRetry):
/// what the body collected outside the database on the first try must not
/// survive into the second.
final class RerunFirstWrite: StoreEngine, @unchecked Sendable {
    struct Aborted: Error {}
    let inner: any StoreEngine
    private(set) var writes = 0
    private(set) var tries = 0

    init(_ inner: any StoreEngine) { self.inner = inner }

    func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        writes += 1
        if writes == 1 {
            tries += 1
            do {
                _ = try inner.write { tx -> T in
                    _ = try body(tx)
                    throw Aborted()
                }
            } catch is Aborted {}
        }
        tries += 1
        return try inner.write(body)
    }

    func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T { try inner.read(body) }
    func isConflict(_ error: any Error) -> Bool { inner.isConflict(error) }
    func makeSearchIndex(indexPath: String) throws -> any MessageSearchIndex { try inner.makeSearchIndex(indexPath: indexPath) }
    func warmUp() throws { try inner.warmUp() }
}

@Suite struct StoreWorkerRerunTests {
    let alice = WorkerHarness.identity("alice"), bob = WorkerHarness.identity("bob")

    /// A batch whose transaction ran twice: one event and one reply per
    /// message, the room's counters moved once, nothing left pending, and a
    /// resend seen as published here (the rerun's event, not a lost one).
    @Test func aRerunBatchPublishesAndCountsEachMessageOnce() throws {
        let harness = try WorkerHarness()
        let room = try harness.groupRoom()
        let engine = RerunFirstWrite(harness.database)
        let worker = StoreWorker(database: engine, config: harness.config, logger: harness.logger)
        let ids = [IDs.uuid7(), IDs.uuid7()]
        let commands = ids.map { id in
            WorkerHarness.command(.messageCreate, Requests.MessageCreate(id: id, roomID: room, content: "m", messageType: "text", replyTo: nil, clientMsgID: nil),
                                  as: alice)
        }
        let events = worker.handle(commands)
        #expect(engine.tries == 2, "the batch's transaction ran twice")
        #expect(events.eventKeys == ids.map { .message(id: $0, change: .created) })
        for command in commands { #expect(events.reply(to: command)?.status == .created) }
        #expect(worker.pendingStored == 0 && worker.pendingPublished.isEmpty)
        #expect(try harness.database.read { try $0.room(room, viewer: bob.id) }.unreadCount == 2)
        #expect(try harness.database.read { try $0.room(room, viewer: alice.id) }.unreadCount == 0)
        let again = worker.handle([commands[0]])
        #expect(again.roomEvents.isEmpty, "published by the rerun")
        #expect(again.reply(to: commands[0])?.status == .created)
    }
}
