import ChatCore
import ChatStore
import ChatWire
import Foundation
import Testing

@testable import ChatWorkers

@Suite struct StoreWorkerTests {
    let harness: WorkerHarness
    let worker: StoreWorker
    let alice = WorkerHarness.identity("alice"), bob = WorkerHarness.identity("bob"), mallory = WorkerHarness.identity("mallory")

    init() throws {
        harness = try WorkerHarness()
        worker = StoreWorker(database: harness.database, config: harness.config, logger: harness.logger)
    }

    func send(_ room: String, _ content: String, id: String = IDs.uuid7(), as user: Identity? = nil) -> Command {
        WorkerHarness.command(.messageCreate, Requests.MessageCreate(id: id, roomID: room, content: content, messageType: "text", replyTo: nil, clientMsgID: nil),
                              as: user ?? alice)
    }

    @Test func aNewMessageIsOneRoomEventKeyedByItsIDAndACreatedReply() throws {
        let room = try harness.groupRoom()
        let id = IDs.uuid7()
        let command = send(room, "hello", id: id)
        let events = worker.handle([command])
        #expect(events.eventKeys == [.message(id: id, change: .created)])
        #expect(events.roomEvents.first?.topic == Topic.room(room))
        let reply = try #require(events.reply(to: command))
        #expect(reply.status == .created)
        let body = try #require(try JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any])
        #expect(body["id"] as? String == id && body["content"] as? String == "hello")
    }

    @Test func aResendIsPublishedOnceByThisWorkerAndAgainByItsSuccessorUnderTheSameKey() throws {
        let room = try harness.groupRoom()
        let command = send(room, "once")
        let first = worker.handle([command])
        // The reply was lost, the event was not: only the reply again.
        let again = worker.handle([command])
        #expect(again.roomEvents.isEmpty)
        #expect(again.reply(to: command)?.status == .created)
        // A successor cannot know whether its predecessor published: it does,
        // with the key that lets frontends drop the second copy.
        let successor = StoreWorker(database: harness.database, config: harness.config, logger: harness.logger)
        let republished = successor.handle([command])
        #expect(republished.eventKeys == first.eventKeys)
        #expect(republished.roomEvents.first?.body == first.roomEvents.first?.body)
    }

    @Test func everyChangeOfAMessageHasItsOwnKey() throws {
        let room = try harness.groupRoom()
        let id = IDs.uuid7()
        _ = worker.handle([send(room, "v1", id: id)])
        let ref = Requests.MessageRef(roomID: room, messageID: id)
        let edit = worker.handle([WorkerHarness.command(.messageUpdate, Requests.MessageUpdate(roomID: room, messageID: id, content: "v2"), as: alice)])
        guard case .message(id, .edited(let at))? = edit.eventKeys.first else { Issue.record("edit key \(edit.eventKeys)"); return }
        #expect(at > 0)
        // A reaction's event has no key: it is not deduplicated.
        let react = worker.handle([WorkerHarness.command(.messageReact, Requests.MessageReact(roomID: room, messageID: id, emoji: "👍", add: true), as: bob)])
        #expect(react.eventKeys == [EventKey.none])
        let delete = worker.handle([WorkerHarness.command(.messageDelete, ref, as: alice)])
        #expect(delete.eventKeys == [.message(id: id, change: .deleted)])
    }

    @Test func leavingAndDeactivatingAreOrdersToCloseSockets() throws {
        let room = try harness.groupRoom()
        let leave = worker.handle([WorkerHarness.command(.roomLeave, Requests.RoomRef(roomID: room), as: bob)])
        #expect(leave.eventKeys == [.removeUser(bob.id)])
        #expect(leave.roomEvents.first?.body.isEmpty == true)
        let delete = worker.handle([WorkerHarness.command(.roomDelete, Requests.RoomRef(roomID: room), as: alice)])
        #expect(delete.eventKeys == [.removeEveryone])
        #expect(delete.replies.first?.status == .noContent)
    }

    @Test func refusalsAreTypedErrors() throws {
        let room = try harness.groupRoom()
        // Not a member.
        let intruder = send(room, "hi", as: mallory)
        // A body that is not the command's.
        var garbled = send(room, "hi")
        garbled.body = Array("{\"roomID\":".utf8)
        // No caller.
        var anonymous = send(room, "hi")
        anonymous.user = []
        // A field error from the store's validation.
        let longName = WorkerHarness.command(.roomCreate, Requests.RoomCreate(id: IDs.uuid7(), name: String(repeating: "n", count: 256), roomType: "group", participantIDs: []), as: alice)
        // A refused action (the seed's `error` body).
        let direct = worker.handle([WorkerHarness.command(.roomDirect, Requests.RoomDirect(userID: bob.id, newRoomID: IDs.uuid7()), as: alice)])
        let directID = try #require(try JSONSerialization.jsonObject(with: Data(direct.replies[0].body)) as? [String: Any])["id"] as? String
        let leaveDirect = WorkerHarness.command(.roomLeave, Requests.RoomRef(roomID: try #require(directID)), as: alice)

        let events = worker.handle([intruder, garbled, anonymous, longName, leaveDirect])
        #expect(events.roomEvents.isEmpty)
        #expect(events.reply(to: intruder)?.refusal == .detail(.forbidden, "You don't have access to this room"))
        #expect(events.reply(to: garbled)?.refusal == .detail(.badRequest, "Malformed command body."))
        #expect(events.reply(to: anonymous)?.refusal == .detail(.badRequest, "Missing or malformed user identity."))
        guard let name = events.reply(to: longName)?.refusal, case .field("name", _) = name.problems.first else {
            Issue.record("no field error for a long name"); return
        }
        #expect(name.status == .badRequest && name.problems.count == 1)
        #expect(events.reply(to: leaveDirect)?.refusal == ReplyError(.badRequest, [.error("Cannot leave direct message rooms")]))
    }

    @Test func oneRefusalInABatchDoesNotUndoTheOthers() throws {
        let room = try harness.groupRoom()
        let good = send(room, "kept"), bad = send(room, "refused", as: mallory)
        let events = worker.handle([good, bad])
        #expect(events.reply(to: good)?.status == .created)
        #expect(events.reply(to: bad)?.status == .forbidden)
        #expect(events.roomEvents.count == 1)
        let stored = try harness.database.pool.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM messages") }
        #expect(stored == 1)
    }

    /// A batch of one command runs without a savepoint: its refusal rolls the
    /// transaction back, and the new caller's user record, which rode along,
    /// is still stored.
    @Test func aLoneRefusalStillProvisionsItsCaller() throws {
        let room = try harness.groupRoom()
        let carol = WorkerHarness.identity("carol")
        let refused = send(room, "hi", as: carol)
        let events = worker.handle([refused])
        #expect(events.reply(to: refused)?.refusal == .detail(.forbidden, "You don't have access to this room"))
        #expect(events.roomEvents.isEmpty)
        let users = try harness.database.pool.read { try String.fetchAll($0, sql: "SELECT email FROM users WHERE id = ?", arguments: [carol.id]) }
        #expect(users == ["carol@example.com"])
        let stored = try harness.database.pool.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM messages") }
        #expect(stored == 0)
        // A lone command that is not refused commits, event and all.
        let kept = send(room, "kept")
        let next = worker.handle([kept])
        #expect(next.reply(to: kept)?.status == .created && next.roomEvents.count == 1)
    }

    @Test func theHandshakesDirectRoomReplyIsTheRoomIDNotClientJSON() throws {
        _ = try harness.groupRoom()
        let newRoom = IDs.uuid7()
        let open = WorkerHarness.command(.roomOpenDirect, Requests.RoomDirect(userID: bob.id, newRoomID: newRoom), as: alice)
        let first = try #require(worker.handle([open]).reply(to: open))
        #expect(first.status == .created)
        #expect(try JSONDecoder().decode(Requests.RoomRef.self, from: Data(first.body)).roomID == newRoom)
        // The same pair again: the existing room, whatever new id is offered.
        let again = WorkerHarness.command(.roomOpenDirect, Requests.RoomDirect(userID: alice.id, newRoomID: IDs.uuid7()), as: bob)
        let second = try #require(worker.handle([again]).reply(to: again))
        #expect(second.status == .ok)
        #expect(try JSONDecoder().decode(Requests.RoomRef.self, from: Data(second.body)).roomID == newRoom)
        let yourself = WorkerHarness.command(.roomOpenDirect, Requests.RoomDirect(userID: alice.id, newRoomID: IDs.uuid7()), as: alice)
        #expect(worker.handle([yourself]).reply(to: yourself)?.refusal == ReplyError(.badRequest, [.error("Cannot create a direct message with yourself")]))
    }
}
