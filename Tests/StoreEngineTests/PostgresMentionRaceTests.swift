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

extension PostgresRaceTests {
    /// Alice blocks Bob while Bob posts (with a mention of her) in a room
    /// they share, either first (the block on Alice's shard, the message on
    /// the room's: review finding): the message is hidden from her either by
    /// the block's clean-up or by its own `hidden_from`, and leaves her no
    /// unread message or mention.
    @Test(arguments: [true, false])
    func aBlockRacingTheBlockedUsersMessageLeavesNothingUnread(blockFirst: Bool) throws {
        let (engine, other, database) = try Self.fresh()
        let room = try groupRoom(engine)
        let (alice, bob) = (identity("alice").id, identity("bob").id)
        let block: @Sendable (any StoreTransaction) throws -> Void = { _ = try $0.block(bob, by: alice) }
        let post: @Sendable (any StoreTransaction) throws -> Void = {
            _ = try $0.createMessage(Self.message(room, "@alice@example.com racing"), sender: identity("bob").user, maxChars: 100)
        }
        let (_, waited) = try Self.race(engine, other, in: database, first: blockFirst ? block : post, second: blockFirst ? post : block)
        #expect(waited, "the second waited for the first's lock on the room")
        let seen = try engine.read { try $0.room(room, viewer: alice) }
        #expect(seen.unreadCount == 0 && seen.unreadMentions == 0)
    }
}
