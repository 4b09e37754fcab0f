import ChatCore
import Foundation
import GRDB

extension Store {
    /// A message of a room the caller may use; 404 when it is not in that room.
    static func requireMessage(_ ref: Requests.MessageRef, user: String, allowPublic: Bool, in db: Database) throws -> Message {
        try requireRoom(ref.roomID, user: user, allowPublic: allowPublic, in: db)
        guard let message = try fetchMessage(id: ref.messageID, in: db), message.roomID == ref.roomID else {
            throw StoreError.notFound()
        }
        return message
    }

    /// One message; a message of a user the caller blocked is 404 to it, as
    /// it is absent from its history.
    public static func message(_ ref: Requests.MessageRef, user: String, in db: Database) throws -> Message {
        let message = try requireMessage(ref, user: user, allowPublic: true, in: db)
        if message.sender.id != user, try isBlocked(message.sender.id, by: user, in: db) { throw StoreError.notFound() }
        return message
    }

    /// `PATCH`: new content, `edited_at` set; the sender only.
    public static func editMessage(_ request: Requests.MessageUpdate, user: String, maxChars: Int, in db: Database) throws -> Message {
        let message = try requireMessage(Requests.MessageRef(roomID: request.roomID, messageID: request.messageID), user: user, allowPublic: false, in: db)
        guard message.sender.id == user else { throw StoreError.forbidden("You can only edit your own messages") }
        guard !message.isDeleted else { throw StoreError.badRequest(error: "Cannot edit a deleted message") }
        let errors = Validation.contentErrors(content: request.content, messageType: message.messageType.rawValue, maxChars: maxChars)
        if !errors.isEmpty { throw StoreError.badRequest(errors) }
        let now = Timestamp.now().micros
        try db.execute(
            sql: "UPDATE messages SET content = ?, edited_at = ?, updated_at = MAX(updated_at + 1, ?) WHERE id = ?",
            arguments: [request.content, now, now, request.messageID]
        )
        try db.execute(sql: "INSERT INTO message_changes (message_id) VALUES (?)", arguments: [request.messageID])
        return try fetchMessage(id: request.messageID, in: db)!
    }

    /// `DELETE`: soft delete (content emptied, kept in history, unpinned); the
    /// sender, or whom `Permissions` lets delete others' messages.
    /// Returns the message as it now is.
    public static func deleteMessage(_ ref: Requests.MessageRef, user: String, in db: Database) throws -> Message {
        let info = try requireRoom(ref.roomID, user: user, in: db)
        guard let message = try fetchMessage(id: ref.messageID, in: db), message.roomID == ref.roomID else { throw StoreError.notFound() }
        if message.sender.id != user {
            let sender = try roomInfo(ref.roomID, user: message.sender.id, in: db)?.role
            try Permissions.authorize(.deleteOthersMessage, info: info, user: user, target: sender ?? .member)
        }
        let senderID = message.sender.id
        if !message.isDeleted {
            try db.execute(
                sql: "UPDATE messages SET is_deleted = 1, content = '', pinned_by = NULL, pinned_at = NULL, updated_at = MAX(updated_at + 1, ?) WHERE id = ?",
                arguments: [Timestamp.now().micros, ref.messageID]
            )
            try db.execute(sql: "INSERT INTO message_changes (message_id) VALUES (?)", arguments: [ref.messageID])
            // The message no longer counts anywhere: not live, not sent, not read.
            try db.execute(sql: "UPDATE rooms SET live_count = live_count - 1 WHERE id = ?", arguments: [ref.roomID])
            try db.execute(sql: "UPDATE room_participants SET sent_count = sent_count - 1 WHERE room_id = ? AND user_id = ?", arguments: [ref.roomID, senderID])
            try db.execute(sql: """
                UPDATE room_participants SET read_count = read_count - 1
                WHERE room_id = ? AND user_id != ? AND user_id IN (SELECT user_id FROM message_read_status WHERE message_id = ?)
                """, arguments: [ref.roomID, senderID, ref.messageID])
            if !message.mentions.isEmpty { try forgetMentions(message: ref.messageID, room: ref.roomID, in: db) }
        }
        return try fetchMessage(id: ref.messageID, in: db)!
    }

    /// `react`: add (a no-op when present) or remove (the emoji's key goes with
    /// its last user). Returns the message with its new reactions.
    public static func react(_ request: Requests.MessageReact, user: String, in db: Database) throws -> Message {
        let message = try requireMessage(Requests.MessageRef(roomID: request.roomID, messageID: request.messageID), user: user, allowPublic: false, in: db)
        if let reactions = try reactions(after: request, by: user, on: message) {
            try db.execute(
                sql: "UPDATE messages SET reactions = ?, updated_at = MAX(updated_at + 1, ?) WHERE id = ?",
                arguments: [encodeReactions(reactions), Timestamp.now().micros, request.messageID]
            )
            var updated = message
            updated.reactions = reactions
            return updated
        }
        return message
    }

    package static func encodeReactions(_ reactions: [(emoji: String, users: [String])]) -> String {
        var w = JSONWriter(capacity: 64)
        w.beginArray()
        for (emoji, users) in reactions {
            w.beginArray()
            w.string(emoji)
            w.beginArray()
            for user in users { w.string(user) }
            w.endArray()
            w.endArray()
        }
        w.endArray()
        return String(decoding: w.bytes, as: UTF8.self)
    }
}
