import ChatCore
import ChatStore
import Foundation
import PostgresNIO

extension PostgresTransaction {
    func requireMessage(_ ref: Requests.MessageRef, user: String, allowPublic: Bool) throws -> Message {
        try requireRoom(ref.roomID, user: user, allowPublic: allowPublic)
        guard let message = try fetchMessage(id: ref.messageID), message.roomID == ref.roomID else { throw StoreError.notFound() }
        return message
    }

    func message(_ ref: Requests.MessageRef, user: String) throws -> Message {
        try requireMessage(ref, user: user, allowPublic: true)
    }

    /// Stores one message, idempotently by id and by `client_msg_id`.
    ///
    /// Several store workers (on several hosts) may write the same room: the
    /// room's row lock (`SELECT … FOR NO KEY UPDATE`, then `UPDATE …
    /// RETURNING`; not FOR UPDATE, which would also wait on every foreign
    /// key check against the room)
    /// orders them, so seqs are gap-free and unique. Under that lock the
    /// id and `client_msg_id` are looked up again: a resend that raced its
    /// original (two workers, one command) finds it committed and stores
    /// nothing. (Read committed: each statement sees what committed before it.)
    func createMessage(_ request: Requests.MessageCreate, sender: User, maxChars: Int) throws -> Store.CreateOutcome {
        if let existing = try fetchMessage(id: request.id) { return .resent(existing) }
        // The access check and the room's lock in one round trip.
        guard let row = try query("""
            SELECT r.is_active, EXISTS (SELECT 1 FROM room_participants p WHERE p.room_id = r.id AND p.user_id = $1) AS is_participant
            FROM rooms r WHERE r.id = $2 FOR NO KEY UPDATE
            """, [.text(sender.id), .text(request.roomID)]).rows.first else { throw StoreError.notFound("Room not found") }
        guard try row.get("is_participant", as: Bool.self) else { throw StoreError.forbidden(Store.noAccess) }
        guard try row.get("is_active", as: Bool.self) else { throw StoreError.badRequest(error: "This room is no longer active") }
        if let errors = Validation.messageErrors(content: request.content, messageType: request.messageType, clientMsgID: request.clientMsgID, maxChars: maxChars, hasAttachment: request.file != nil) {
            throw StoreError.badRequest(errors)
        }
        if let name = request.file?.name, let error = Validation.fileNameError(name) {
            throw StoreError.badRequest([("file_attachment", error)])
        }
        if let replyTo = request.replyTo {
            let sameRoom = try one("SELECT 1 FROM messages WHERE id = $1 AND room_id = $2", [.text(replyTo), .text(request.roomID)], as: Int32.self) != nil
            if !sameRoom { throw StoreError.badRequest([("reply_to", "reply_to must reference a message in this room")]) }
        }
        // Under the lock: this id, or this sender's client_msg_id, stored meanwhile by another worker.
        if let storedID = try one("""
            SELECT id FROM messages WHERE id = $1 OR (room_id = $2 AND sender_id = $3 AND client_msg_id = $4)
            ORDER BY id = $1 DESC LIMIT 1
            """, [.text(request.id), .text(request.roomID), .text(sender.id), .text(request.clientMsgID)], as: String.self),
            let stored = try fetchMessage(id: storedID) {
            return storedID == request.id ? .resent(stored) : .duplicate(stored)
        }
        let now = Timestamp.now()
        // The seq, the row and the sender's counter in one statement (one round trip).
        guard let seq = try one("""
            WITH room AS (
                UPDATE rooms SET last_seq = last_seq + 1, live_count = live_count + 1, updated_at = GREATEST(updated_at + 1, $7)
                WHERE id = $2 RETURNING last_seq),
            sent AS (UPDATE room_participants SET sent_count = sent_count + 1 WHERE room_id = $2 AND user_id = $3)
            INSERT INTO messages (id, room_id, seq, sender_id, content, message_type, timestamp, updated_at, reply_to, client_msg_id,
                                  file_attachment, file_name, file_size)
            SELECT $1, $2, room.last_seq, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM room
            RETURNING seq
            """, [.text(request.id), .text(request.roomID), .text(sender.id), .text(request.content), .text(request.messageType),
                  .int(now.micros), .int(now.micros), .text(request.replyTo), .text(request.clientMsgID), .text(request.file?.hash),
                  .text(request.file?.name), .int(request.file?.size)], as: Int64.self) else { throw StoreError.notFound() }
        return .created(Message(
            id: request.id, roomID: request.roomID, seq: seq, sender: sender, content: request.content,
            messageType: MessageType(rawValue: request.messageType) ?? .text, fileAttachment: request.file?.hash,
            fileName: request.file?.name, fileSize: request.file?.size, timestamp: now, replyTo: request.replyTo,
            clientMsgID: request.clientMsgID
        ))
    }

    func editMessage(_ request: Requests.MessageUpdate, user: String, maxChars: Int) throws -> Message {
        let message = try requireMessage(Requests.MessageRef(roomID: request.roomID, messageID: request.messageID), user: user, allowPublic: false)
        guard message.sender.id == user else { throw StoreError.forbidden("You can only edit your own messages") }
        guard !message.isDeleted else { throw StoreError.badRequest(error: "Cannot edit a deleted message") }
        let errors = Validation.contentErrors(content: request.content, messageType: message.messageType.rawValue, maxChars: maxChars)
        if !errors.isEmpty { throw StoreError.badRequest(errors) }
        // xact moves: the search index takes the new content on its next pass.
        // NOT is_deleted: a deletion that committed since the read above wins (the update waits for its lock, then skips the row).
        let changed = try query("""
            UPDATE messages SET content = $1, edited_at = $2, updated_at = GREATEST(updated_at + 1, $2), xact = pg_current_xact_id() WHERE id = $3 AND NOT is_deleted
            """, [.text(request.content), .int(Timestamp.now().micros), .text(request.messageID)]).changed
        guard changed > 0 else { throw StoreError.badRequest(error: "Cannot edit a deleted message") }
        guard let edited = try fetchMessage(id: request.messageID) else { throw StoreError.notFound() }
        return edited
    }

    func deleteMessage(_ ref: Requests.MessageRef, user: String) throws -> Message {
        let message = try requireMessage(ref, user: user, allowPublic: false)
        guard message.sender.id == user else { throw StoreError.forbidden("You can only delete your own messages") }
        if !message.isDeleted {
            // FOR UPDATE, which conflicts with the FOR KEY SHARE of a read
            // status's foreign key: an uncommitted receipt of this message
            // commits first, and the decrement below sees it (not reactions
            // or edits, which take weaker locks of their own). Receipts
            // inserted after this wait for the commit (markMessageRead).
            _ = try one("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", [.text(ref.messageID)], as: Int32.self)
            // Only the first of two concurrent deletions moves the counters.
            let changed = try query("""
                UPDATE messages SET is_deleted = TRUE, content = '', updated_at = GREATEST(updated_at + 1, $1), xact = pg_current_xact_id()
                WHERE id = $2 AND NOT is_deleted
                """, [.int(Timestamp.now().micros), .text(ref.messageID)]).changed
            if changed > 0 {
                try query("UPDATE rooms SET live_count = live_count - 1 WHERE id = $1", [.text(ref.roomID)])
                try query("UPDATE room_participants SET sent_count = sent_count - 1 WHERE room_id = $1 AND user_id = $2", [.text(ref.roomID), .text(user)])
                try query("""
                    UPDATE room_participants SET read_count = read_count - 1
                    WHERE room_id = $1 AND user_id != $2 AND user_id IN (SELECT user_id FROM message_read_status WHERE message_id = $3)
                    """, [.text(ref.roomID), .text(user), .text(ref.messageID)])
            }
        }
        guard let deleted = try fetchMessage(id: ref.messageID) else { throw StoreError.notFound() }
        return deleted
    }

    func react(_ request: Requests.MessageReact, user: String) throws -> Message {
        try requireRoom(request.roomID, user: user, allowPublic: false)
        // The row lock first: two reactions to one message at once both count.
        _ = try one("SELECT 1 FROM messages WHERE id = $1 FOR NO KEY UPDATE", [.text(request.messageID)], as: Int32.self)
        let message = try requireMessage(Requests.MessageRef(roomID: request.roomID, messageID: request.messageID), user: user, allowPublic: false)
        guard let reactions = try Store.reactions(after: request, by: user, on: message) else { return message }
        try query("UPDATE messages SET reactions = $1, updated_at = GREATEST(updated_at + 1, $2) WHERE id = $3",
                  [.text(Store.encodeReactions(reactions)), .int(Timestamp.now().micros), .text(request.messageID)])
        var updated = message
        updated.reactions = reactions
        return updated
    }
}
