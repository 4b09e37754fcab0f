import ChatBus
import ChatCore
import ChatStore
import ChatWire
import Foundation

/// End-to-end encrypted rooms (issue 17; Store+Encryption.swift keeps the
/// rows): the key directory's commands, and what an encrypted room changes
/// on the message path. Its messages reach each device as its own event,
/// carrying that device's ciphertext alone (`EventKey.onlyDevice`).
extension StoreWorker {
    func keysWrite(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> [Event] {
        switch command.kind {
        case .keysPublish:
            let (bundle, prekeys) = try db.publishDevice(try body(Requests.DeviceKeys.self, command), user: identity.id)
            return [.reply(to: command, status: .ok, body: ClientJSON.publishedDevice(bundle, prekeys: prekeys))]
        case .keysClaim:
            let request = try body(Requests.KeysRef.self, command)
            guard let target = request.userID else { throw StoreError(code: .badRequest, detail: "Malformed command body.") }
            // The request names the claim: its resend (same origin and id) gets the same prekeys.
            let claim = request.peek == true ? nil : "\(command.origin)/\(command.requestID)"
            return [.reply(to: command, status: .ok, body: ClientJSON.devices(try db.claimKeys(of: target, for: identity.id, claim: claim)))]
        case .keysDelete:
            guard let device = try body(Requests.KeysRef.self, command).deviceID else { throw StoreError(code: .badRequest, detail: "Malformed command body.") }
            try db.deleteDevice(device, user: identity.id)
            return [.reply(to: command, status: .noContent, body: [])]
        default:
            throw StoreError(code: .badRequest, detail: "Not a keys command: \(command.kind.rawValue)")
        }
    }

    /// A room as its members see it, `encrypted` included.
    func encode(_ room: Room, in db: any StoreTransaction) throws -> [UInt8] {
        var room = room
        room.encrypted = try encryptedRooms.contains(room.id, in: db)
        return ClientJSON.encode(room)
    }

    func encode(rooms: [Room], in db: any StoreTransaction) throws -> [[UInt8]] {
        let encrypted = try encryptedRooms.filter(rooms.map(\.id), in: db)
        return rooms.map { room in
            var room = room
            room.encrypted = encrypted.contains(room.id)
            return ClientJSON.encode(room)
        }
    }

    /// An encrypted room takes encrypted messages only, and only it does.
    func checkMessageType(_ messageType: String, room: String, in db: any StoreTransaction) throws -> Bool {
        let encrypted = try encryptedRooms.contains(room, in: db)
        let isEncrypted = messageType == MessageType.encrypted.rawValue
        if encrypted && !isEncrypted {
            throw StoreError.badRequest([("message_type", "This room is encrypted: send {\"message_type\": \"encrypted\", \"ciphertexts\": {...}} and no content.")])
        }
        if isEncrypted && !encrypted { throw StoreError.badRequest([("message_type", "Only an encrypted room takes encrypted messages.")]) }
        return encrypted
    }

    /// A message change of an encrypted room as its events: one per device
    /// it was sent to, with that device's ciphertext, for that device's
    /// sockets only; none to the devices of members who blocked the sender.
    static func deviceEvents(_ message: Message, _ ciphertexts: [Ciphertext], type: String?) -> [Event] {
        let hidden = Set(message.hiddenFrom)
        return ciphertexts.filter { !hidden.contains($0.userID) }.map { entry in
            var copy = message
            copy.ciphertext = entry.text
            let json = ClientJSON.encode(copy)
            let body = type.map { ClientJSON.messageChange($0, copy) } ?? ClientJSON.messageEvent(json)
            return Event.room(message.roomID, key: .onlyDevice(user: entry.userID, device: entry.deviceID), body: body)
        }
    }

    /// The viewer's device's ciphertexts, set on the encrypted messages of a page.
    func withCiphertexts(_ messages: [Message], device: String?, viewer: String, in db: any StoreTransaction) throws -> [Message] {
        let encrypted = messages.filter { $0.messageType == .encrypted && !$0.isDeleted }.map(\.id)
        guard let device, !encrypted.isEmpty else { return messages }
        let found = try db.ciphertexts(messages: encrypted, device: device, viewer: viewer)
        return messages.map { message in
            var message = message
            message.ciphertext = found[message.id]
            return message
        }
    }
}

/// Which rooms are encrypted, as this worker has seen: a room is made
/// encrypted at its creation and never changes, so an answer, once read,
/// never goes stale. Only rooms that exist are kept; bounded (emptied when
/// full: a forgotten room costs one read more).
final class EncryptedRoomCache {
    private var known: [String: Bool] = [:]
    static let capacity = 100_000

    func contains(_ room: String, in db: any StoreTransaction) throws -> Bool {
        if let answer = known[room] { return answer }
        return try filter([room], in: db).contains(room)
    }

    func filter(_ rooms: [String], in db: any StoreTransaction) throws -> Set<String> {
        let unknown = Array(Set(rooms.filter { known[$0] == nil }))
        if !unknown.isEmpty {
            let existing = try db.existingRooms(among: unknown)
            let encrypted = try db.encryptedRooms(among: unknown)
            if known.count + existing.count > Self.capacity { known.removeAll(keepingCapacity: true) }
            for room in existing { known[room] = encrypted.contains(room) }
        }
        return Set(rooms.filter { known[$0] == true })
    }

    /// A room this worker just created encrypted.
    func created(_ room: String, encrypted: Bool) { known[room] = encrypted }
}
