import ChatCore
import Foundation

/// A message a client asked to send (REST body or WebSocket event), checked
/// for shape before it crosses the bus. The store worker checks the rest.
struct MessageInput {
    var content: String
    var messageType: String
    var replyTo: String?
    var clientMsgID: String?
    /// An encrypted message's ciphertext per device (issue 17).
    var ciphertexts: [String: String]?

    /// `hasAttachment`: the request carries a file (multipart only), which an
    /// `image` or `file` message needs.
    static func parse(_ object: [String: Any], maxChars: Int, hasAttachment: Bool = false) -> Result<MessageInput, FieldErrors> {
        var errors: [(field: String, message: String)] = []
        var content = ""
        switch object["content"] {
        case nil, is NSNullLike: break
        case let text as String: content = text
        default: errors.append(("content", "Not a valid string."))
        }
        var messageType = "text"
        if let value = object["message_type"], !(value is NSNullLike) {
            if let text = value as? String { messageType = text } else { errors.append(("message_type", "Not a valid string.")) }
        }
        var replyTo: String?
        if let value = object["reply_to"], !(value is NSNullLike) {
            if let text = value as? String, let id = IDs.canonical(text) { replyTo = id } else { errors.append(("reply_to", "Must be a valid UUID.")) }
        }
        var clientMsgID: String?
        if let value = object["client_msg_id"], !(value is NSNullLike) {
            if let text = value as? String { clientMsgID = text } else { errors.append(("client_msg_id", "Not a valid string.")) }
        }
        var ciphertexts: [String: String]?
        if let value = object["ciphertexts"], !(value is NSNullLike) {
            if messageType != MessageType.encrypted.rawValue {
                errors.append(("ciphertexts", "Only an encrypted message carries ciphertexts."))
            } else {
                switch Encryption.ciphertexts(value) {
                case .success(let parsed): ciphertexts = parsed
                case .failure(let error): errors.append(("ciphertexts", error.message))
                }
            }
        } else if messageType == MessageType.encrypted.rawValue {
            errors.append(("ciphertexts", "This field is required."))
        }
        if errors.isEmpty, let more = Validation.messageErrors(content: content, messageType: messageType, clientMsgID: clientMsgID, maxChars: maxChars, hasAttachment: hasAttachment) {
            errors += more
        }
        if !errors.isEmpty { return .failure(FieldErrors(errors: errors)) }
        return .success(MessageInput(content: content, messageType: messageType, replyTo: replyTo, clientMsgID: clientMsgID, ciphertexts: ciphertexts))
    }

    func request(id: String, roomID: String) -> Requests.MessageCreate {
        Requests.MessageCreate(id: id, roomID: roomID, content: content, messageType: messageType, replyTo: replyTo, clientMsgID: clientMsgID,
                               ciphertexts: ciphertexts)
    }
}

extension Requests.MessageCreate {
    /// The command body: what `JSONEncoder` writes for it (the worker decodes
    /// it with `JSONDecoder`), by `JSONWriter`, which costs a fraction of
    /// `JSONEncoder` on every WebSocket message. One with a file goes through
    /// `JSONEncoder` (REST uploads only).
    func commandBody() throws -> [UInt8] {
        guard file == nil, ciphertexts == nil else { return [UInt8](try JSONEncoder().encode(self)) }
        var w = JSONWriter(capacity: 160 + content.utf8.count)
        w.beginObject()
        w.field("id", id)
        w.field("roomID", roomID)
        w.field("content", content)
        w.field("messageType", messageType)
        if let replyTo { w.field("replyTo", replyTo) }
        if let clientMsgID { w.field("clientMsgID", clientMsgID) }
        w.endObject()
        return w.bytes
    }
}

struct FieldErrors: Error {
    var errors: [(field: String, message: String)]
}

/// JSON `null` as JSONSerialization gives it.
typealias NSNullLike = NSNull
import class Foundation.NSNull
