import ChatConfig
import ChatCore
import ChatPostgres
import ChatStore
import ChatTesting
import ChatWire
import Foundation
import Logging
import Testing

@testable import ChatWorkers

/// The batch processor's semantics on both engines: one write transaction
/// per batch, a savepoint per command when several, a refusal that undoes
/// only its command, and a lone refusal that still provisions its caller.
@Suite struct EngineBatchTests {
    enum Engine: String, CaseIterable, CustomStringConvertible, Sendable {
        case sqlite, postgres
        var description: String { rawValue }
        /// PostgreSQL where Debian's server is installed (CI installs it).
        static var available: [Engine] { PostgresServer.isInstalled ? allCases : [.sqlite] }

        func make(_ harness: WorkerHarness) throws -> any StoreEngine {
            guard self == .postgres else { return harness.database }
            let engine = try PostgresEngine(url: try PostgresServer.start().createDatabase())
            try engine.migrate()
            return engine
        }
    }

    let harness: WorkerHarness
    let alice = WorkerHarness.identity("alice"), mallory = WorkerHarness.identity("mallory")

    init() throws { harness = try WorkerHarness() }

    func groupRoom(_ engine: any StoreEngine) throws -> String {
        let room = IDs.uuid7()
        try engine.write { tx in
            for sub in ["alice", "bob", "mallory"] { try tx.upsert(WorkerHarness.identity(sub)) }
            _ = try tx.createRoom(Requests.RoomCreate(id: room, name: "r", roomType: "group", participantIDs: [WorkerHarness.identity("bob").id]),
                                  creator: alice.id, maxParticipants: 100)
        }
        return room
    }

    func send(_ room: String, _ content: String, id: String = IDs.uuid7(), as user: Identity) -> Command {
        WorkerHarness.command(.messageCreate, Requests.MessageCreate(id: id, roomID: room, content: content, messageType: "text", replyTo: nil, clientMsgID: nil), as: user)
    }

    func page(_ engine: any StoreEngine, _ room: String) throws -> [String] {
        try engine.read {
            try $0.messagePage(Requests.MessageList(roomID: room, page: Requests.Page(page: 1, pageSize: 50, url: "u", query: []), before: nil, after: nil), viewer: alice.id)
        }.messages.map(\.content)
    }

    @Test(arguments: Engine.available)
    func oneRefusalInABatchDoesNotUndoTheOthers(_ kind: Engine) throws {
        let engine = try kind.make(harness)
        let worker = StoreWorker(database: engine, config: harness.config, logger: harness.logger)
        let room = try groupRoom(engine)
        let good = send(room, "kept", as: alice), bad = send(room, "refused", as: mallory), after = send(room, "kept too", as: alice)
        let events = worker.handle([good, bad, after])
        #expect(events.reply(to: good)?.status == .created)
        #expect(events.reply(to: bad)?.status == .forbidden)
        #expect(events.reply(to: after)?.status == .created)
        #expect(events.roomEvents.count == 2)
        #expect(try page(engine, room) == ["kept too", "kept"])
    }

    @Test(arguments: Engine.available)
    func aLoneRefusalStillProvisionsItsCallerAndAResendStoresOnce(_ kind: Engine) throws {
        let engine = try kind.make(harness)
        let worker = StoreWorker(database: engine, config: harness.config, logger: harness.logger)
        let room = try groupRoom(engine)
        let carol = WorkerHarness.identity("carol")
        let refused = send(room, "hi", as: carol)
        #expect(worker.handle([refused]).reply(to: refused)?.refusal == .detail(.forbidden, "You don't have access to this room"))
        #expect(try engine.read { try $0.user(id: carol.id) }?.email == "carol@example.com")
        let id = IDs.uuid7()
        let first = send(room, "once", id: id, as: alice), again = send(room, "once", id: id, as: alice)
        #expect(worker.handle([first]).roomEvents.count == 1)
        let resent = worker.handle([again])
        #expect(resent.reply(to: again)?.status == .created && resent.roomEvents.isEmpty, "published once by this worker")
        #expect(try page(engine, room) == ["once"])
    }
}
