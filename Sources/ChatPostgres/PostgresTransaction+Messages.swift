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

    /// One message; 404 to a caller who blocked its sender (as in `Store.message`).
    func message(_ ref: Requests.MessageRef, user: String) throws -> Message {
        let message = try requireMessage(ref, user: user, allowPublic: true)
        if message.sender.id != user, try isBlocked(message.sender.id, by: user) { throw StoreError.notFound() }
        return message
    }

    /// Stores one message, idempotently by id and by `client_msg_id`, in
    /// one round trip: the function `chatd_store_message` (migration
    /// v3-store-message) makes the store's decisions in this order.
    ///
    /// Several store workers (on several hosts) may write the same room: the
    /// room's row lock (`SELECT … FOR NO KEY UPDATE`, then `UPDATE …
    /// RETURNING`; not FOR UPDATE, which would also wait on every foreign
    /// key check against the room) orders them, so seqs are gap-free and
    /// unique. Under that lock the id and `client_msg_id` are looked up
    /// again: a resend that raced its original (two workers, one command)
    /// finds it committed and stores nothing. (Read committed: each
    /// statement sees what committed before it.)
    func createMessage(_ request: Requests.MessageCreate, sender: User, maxChars: Int) throws -> Store.CreateOutcome {
        if let invalid = Self.invalidity(request, maxChars: maxChars) { return try refuse(request, sender: sender, invalid) }
        let now = Timestamp.now()
        let statement = StoreMessage(values: [
            .text(request.id), .text(request.roomID), .text(sender.id), .text(request.content), .text(request.messageType),
            .int(now.micros), .text(request.replyTo), .text(request.clientMsgID), .text(request.file?.hash),
            .text(request.file?.name), .int(request.file?.size),
        ])
        guard let row = try execute(statement).first else { throw StoreError.notFound() }
        let storedID: String = try row.get("stored_id")
        switch try row.get("outcome", as: String.self) {
        case "created":
            var message = Message(
                id: request.id, roomID: request.roomID, seq: try row.get("message_seq"), sender: sender, content: request.content,
                messageType: MessageType(rawValue: request.messageType) ?? .text, fileAttachment: request.file?.hash,
                fileName: request.file?.name, fileSize: request.file?.size, timestamp: now, replyTo: request.replyTo,
                clientMsgID: request.clientMsgID
            )
            message.hiddenFrom = try row.get("hidden_from", as: [String]?.self) ?? []
            // Statements of their own, only for a text with `@` (the function above is the whole cost of any other).
            message.mentions = try recordMentions(
                message: request.id, room: request.roomID, sender: sender.id, content: request.content, at: now.micros,
                except: message.hiddenFrom)
            return .created(message)
        case "resent", "duplicate":
            guard let stored = try fetchMessage(id: storedID) else { throw StoreError.notFound() }
            return storedID == request.id ? .resent(stored) : .duplicate(stored)
        case "no_room": throw StoreError.notFound("Room not found")
        case "forbidden": throw StoreError.forbidden(Store.noAccess)
        case "not_allowed": throw StoreError.forbidden(Permissions.refusal(.postInAnnouncement))
        case "inactive": throw StoreError.badRequest(error: "This room is no longer active")
        case "blocked": throw StoreError.forbidden(Store.blockedDirect)
        case "bad_reply": throw StoreError.badRequest([("reply_to", "reply_to must reference a message in this room")])
        case let outcome: throw PostgresEngineError("chatd_store_message: unknown outcome \(outcome)")
        }
    }

    static func invalidity(_ request: Requests.MessageCreate, maxChars: Int) -> StoreError? {
        if let errors = Validation.messageErrors(content: request.content, messageType: request.messageType, clientMsgID: request.clientMsgID, maxChars: maxChars, hasAttachment: request.file != nil) {
            return StoreError.badRequest(errors)
        }
        if let name = request.file?.name, let error = Validation.fileNameError(name) { return StoreError.badRequest([("file_attachment", error)]) }
        return nil
    }

    /// A message that fails validation: what comes first in the store's
    /// order (a resend, the room, access, an inactive room), else refused
    /// with `invalid`. Rare, so not folded into the function.
    private func refuse(_ request: Requests.MessageCreate, sender: User, _ invalid: StoreError) throws -> Store.CreateOutcome {
        if let existing = try fetchMessage(id: request.id) { return .resent(existing) }
        guard let info = try roomInfo(request.roomID, user: sender.id) else { throw StoreError.notFound("Room not found") }
        guard info.isParticipant else { throw StoreError.forbidden(Store.noAccess) }
        try Permissions.authorizePost(info: info, user: sender.id)
        guard info.isActive else { throw StoreError.badRequest(error: "This room is no longer active") }
        // As chatd_store_message and SQLite's createMessage: the block before the message's own faults.
        if info.roomType == .direct, try one("""
            SELECT 1::bigint FROM room_participants p JOIN user_blocks b
                ON (b.blocker_id = p.user_id AND b.blocked_id = $2) OR (b.blocker_id = $2 AND b.blocked_id = p.user_id)
            WHERE p.room_id = $1 AND p.user_id <> $2 LIMIT 1
            """, [.text(request.roomID), .text(sender.id)], as: Int64.self) != nil {
            throw StoreError.forbidden(Store.blockedDirect)
        }
        throw invalid
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
        let info = try requireRoom(ref.roomID, user: user, allowPublic: false)
        guard let message = try fetchMessage(id: ref.messageID), message.roomID == ref.roomID else { throw StoreError.notFound() }
        if message.sender.id != user {
            let sender = try roomInfo(ref.roomID, user: message.sender.id)?.role
            try Permissions.authorize(.deleteOthersMessage, info: info, user: user, target: sender ?? .member)
        }
        let senderID = message.sender.id
        if !message.isDeleted {
            // FOR UPDATE, which conflicts with the FOR KEY SHARE of a read
            // status's foreign key: an uncommitted receipt of this message
            // commits first, and the decrement below sees it (not reactions
            // or edits, which take weaker locks of their own). Receipts
            // inserted after this wait for the commit (markMessageRead).
            _ = try one("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", [.text(ref.messageID)], as: Int32.self)
            // Only the first of two concurrent deletions moves the counters.
            let changed = try query("""
                UPDATE messages SET is_deleted = TRUE, content = '', pinned_by = NULL, pinned_at = NULL,
                    updated_at = GREATEST(updated_at + 1, $1), xact = pg_current_xact_id()
                WHERE id = $2 AND NOT is_deleted
                """, [.int(Timestamp.now().micros), .text(ref.messageID)]).changed
            if changed > 0 {
                try query("UPDATE rooms SET live_count = live_count - 1 WHERE id = $1", [.text(ref.roomID)])
                try query("UPDATE room_participants SET sent_count = sent_count - 1 WHERE room_id = $1 AND user_id = $2", [.text(ref.roomID), .text(senderID)])
                try query("""
                    UPDATE room_participants SET read_count = read_count - 1
                    WHERE room_id = $1 AND user_id != $2 AND user_id IN (SELECT user_id FROM message_read_status WHERE message_id = $3)
                    """, [.text(ref.roomID), .text(senderID), .text(ref.messageID)])
                if !message.mentions.isEmpty { try forgetMentions(message: ref.messageID, room: ref.roomID) }
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

/// `chatd_store_message`, prepared once per connection.
struct StoreMessage: PreparedStatement {
    static let name = "chatd_store_message_v16"
    static let sql = """
        SELECT outcome, message_seq, stored_id, hidden_from
        FROM chatd_store_message($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        """
    static let bindingDataTypes: [PostgresDataType] = [.text, .text, .text, .text, .text, .int8, .text, .text, .text, .text, .int8]
    var values: [PostgresValue]
}
