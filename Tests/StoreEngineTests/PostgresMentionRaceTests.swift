import ChatCore
@testable import ChatPostgres
import ChatStore
import ChatTesting
import Foundation
import Testing

extension PostgresRaceTests {
    /// Bob reads a message that mentions him (or the whole room) while Alice
    /// deletes it, either first: the deleted mention is counted neither as
    /// unread nor as read, so a later mention is counted right.
    @Test(arguments: [true, false], [true, false])
    func readingAMentionRacingItsDeletionLeavesTheMentionCountersRight(readFirst: Bool, wholeRoom: Bool) throws {
        let (engine, other, database) = try Self.fresh()
        let room = try groupRoom(engine)
        let bob = identity("bob").id
        let gone = try #require(created(try send(engine, room, "@bob to delete")))
        _ = try send(engine, room, "@bob kept")
        let read: @Sendable (any StoreTransaction) throws -> Void = { tx in
            if wholeRoom { _ = try tx.markRoomRead(room, user: bob) } else { _ = try tx.markMessageRead(Requests.MessageRef(roomID: room, messageID: gone.id), user: bob) }
        }
        let delete: @Sendable (any StoreTransaction) throws -> Void = {
            _ = try $0.deleteMessage(Requests.MessageRef(roomID: room, messageID: gone.id), user: identity("alice").id)
        }
        let (first, second) = readFirst ? (read, delete) : (delete, read)
        let (_, waited) = try Self.race(engine, other, in: database, first: first, second: second)
        #expect(waited, "the second waited for the first's lock on the message")
        _ = try send(engine, room, "@bob later")
        let seen = try engine.read { try $0.room(room, viewer: bob) }
        // "later", and "kept" unless the whole room was read.
        #expect(seen.unreadMentions == (wholeRoom ? 1 : 2))
        #expect(seen.unreadCount == (wholeRoom ? 1 : 2))
    }
}
