import ChatCore
import ChatStore
import ChatWire
import Foundation
import Testing

@testable import ChatWorkers

@Suite struct ReceiptsWorkerTests {
    let harness: WorkerHarness
    let worker: ReceiptsWorker
    let alice = WorkerHarness.identity("alice"), bob = WorkerHarness.identity("bob"), mallory = WorkerHarness.identity("mallory")
    let aliceSocket = ConnectionRef(frontend: "frontend.0-42", number: 7)

    init() throws {
        harness = try WorkerHarness()
        worker = ReceiptsWorker(database: harness.database, config: harness.config, logger: harness.logger)
    }

    func typing(_ room: String, _ isTyping: Bool, as user: Identity, from connection: String) -> Command {
        WorkerHarness.command(.typingSet, Requests.TypingSet(roomID: room, isTyping: isTyping, connection: connection), as: user)
    }

    @Test func typingGoesToEveryoneButTheSendingConnection() throws {
        let room = try harness.groupRoom()
        let command = typing(room, true, as: alice, from: aliceSocket.description)
        let events = worker.handle([command])
        #expect(events.eventKeys == [.except(aliceSocket)])
        let frame = try #require(try JSONSerialization.jsonObject(with: Data(events.roomEvents[0].body)) as? [String: Any])
        #expect(frame["type"] as? String == "typing" && frame["is_typing"] as? Bool == true)
        #expect(events.reply(to: command)?.status == .ok)
    }

    @Test func typingIsListedBeforeItReachesTheDatabase() throws {
        let room = try harness.groupRoom()
        _ = worker.handle([typing(room, true, as: alice, from: aliceSocket.description)])
        let saved = try harness.database.pool.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM typing_indicators") }
        #expect(saved == 0, "typing waits for a write or the flush")
        let list = WorkerHarness.command(.typingList, Requests.RoomRef(roomID: room), as: bob)
        let reply = try #require(worker.handle([list]).reply(to: list))
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(reply.body)) as? [[String: Any]])
        #expect(entries.count == 1)
        // (Bob's first command wrote him as a user, and the typing state rode along.)
        // Stopping is kept in memory only, and outranks what the database still says.
        _ = worker.handle([typing(room, false, as: alice, from: aliceSocket.description)])
        let after = try #require(worker.handle([list]).reply(to: list))
        #expect(after.body == Array("[]".utf8))
    }

    @Test func typingRefusalsAreTypedErrors() throws {
        let room = try harness.groupRoom()
        let stranger = typing(room, true, as: mallory, from: "frontend.0/1")
        let noConnection = typing(room, true, as: alice, from: "frontend.0")
        let events = worker.handle([stranger, noConnection])
        #expect(events.roomEvents.isEmpty)
        #expect(events.reply(to: stranger)?.refusal == .detail(.forbidden, "You don't have access to this room"))
        #expect(events.reply(to: noConnection)?.refusal == .detail(.badRequest, "Malformed typing command."))
    }

    @Test func sessionsAnnounceJoinAndLeaveUnderIdempotentKeys() throws {
        let room = try harness.groupRoom()
        let session = Requests.Session(sessionID: UUID().uuidString.lowercased(), roomID: room, sessionType: "web", userAgent: "test", ipAddress: nil, frontend: "frontend")
        let open = WorkerHarness.command(.sessionOpen, session, as: alice)
        let opened = worker.handle([open])
        #expect(opened.eventKeys == [.session(id: session.sessionID, change: .joined)])
        #expect(opened.reply(to: open)?.status == .ok)
        #expect(EventKey(opened.roomEvents[0].key)?.isIdempotent == true)
        // A resent open (its reply was lost) publishes under the same key: frontends drop the copy.
        #expect(worker.handle([open]).eventKeys == opened.eventKeys)
        let active = WorkerHarness.command(.sessionActive, Requests.RoomRef(roomID: ""), as: alice)
        let activeReply = try #require(worker.handle([active]).reply(to: active))
        let list = try #require(try JSONSerialization.jsonObject(with: Data(activeReply.body)) as? [[String: Any]])
        #expect(list.count == 1)
        let closed = worker.handle([WorkerHarness.command(.sessionClose, session, as: alice)])
        #expect(closed.eventKeys == [.session(id: session.sessionID, change: .left)])
    }

    @Test func aReceiptForAMessageOfAnotherRoomIsNotFound() throws {
        let room = try harness.groupRoom()
        let command = WorkerHarness.command(.receiptMessage, Requests.MessageRef(roomID: room, messageID: IDs.uuid7()), as: bob)
        let events = worker.handle([command])
        #expect(events.reply(to: command)?.refusal?.status == .notFound)
        #expect(events.roomEvents.isEmpty)
    }
}
