import ChatCore
import Foundation

/// End-to-end encrypted rooms in the store (issue 17, api-contract.md
/// "End-to-end encrypted rooms"): the tables of migration `v18-encryption`,
/// SQLite and PostgreSQL alike, in `WebhookStore`'s common SQL. What is
/// stored is what clients sent: public keys and ciphertexts, never a
/// plaintext (an encrypted message's `content` is empty).
public enum EncryptionStore {
    public static let schema = """
        CREATE TABLE devices (
            device_id TEXT PRIMARY KEY NOT NULL,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            identity_key TEXT NOT NULL,
            signed_prekey TEXT NOT NULL,
            signature TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        );
        CREATE INDEX devices_user ON devices(user_id, created_at);
        CREATE TABLE one_time_prekeys (
            device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
            position BIGINT NOT NULL,
            prekey TEXT NOT NULL,
            claim TEXT,
            claimed_at BIGINT,
            PRIMARY KEY (device_id, position),
            UNIQUE (device_id, prekey)
        );
        CREATE INDEX one_time_prekeys_claim ON one_time_prekeys(device_id, claim);
        CREATE TABLE encrypted_rooms (
            room_id TEXT PRIMARY KEY NOT NULL REFERENCES rooms(id) ON DELETE CASCADE
        );
        CREATE TABLE message_ciphertexts (
            message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
            user_id TEXT NOT NULL,
            ciphertext TEXT NOT NULL,
            PRIMARY KEY (message_id, device_id)
        );
        CREATE INDEX message_ciphertexts_device ON message_ciphertexts(device_id);
        """

    /// How long a claimed prekey is kept, so that a resent claim gets it
    /// again: far past any command's deadline.
    static let claimMemoryMicros: Int64 = 86_400_000_000

    /// `$first, $first+1, ...`: the placeholders of an `IN` list of `count` values.
    static func list(from first: Int, count: Int) -> String {
        (first..<(first + count)).map { "$\($0)" }.joined(separator: ", ")
    }
}

/// One device's entry of an encrypted message: who it is for, and what.
public struct Ciphertext: Sendable, Equatable {
    public var deviceID: String
    public var userID: String
    public var text: String

    public init(deviceID: String, userID: String, text: String) {
        (self.deviceID, self.userID, self.text) = (deviceID, userID, text)
    }
}

extension StoreTransaction {
    // MARK: The key directory

    /// `PUT .../keys/devices/{id}/`: publishes (or replaces) the caller's
    /// device's keys and adds its one-time prekeys. A device id is the
    /// first publisher's for good (`403` for anyone else's).
    public func publishDevice(_ keys: Requests.DeviceKeys, user: String, now: Timestamp = .now()) throws -> (DeviceBundle, prekeys: Int64) {
        let owner = try rows("SELECT user_id FROM devices WHERE device_id = $1", [.text(keys.deviceID)]).first?[0]
        if let owner, owner != user { throw StoreError.forbidden("This device belongs to another user.") }
        if owner == nil {
            let count = WebhookStore.int(try rows("SELECT COUNT(*) FROM devices WHERE user_id = $1", [.text(user)]).first?[0])
            guard count < Encryption.maxDevicesPerUser else {
                throw StoreError.badRequest(error: "You have \(Encryption.maxDevicesPerUser) devices already; delete one first")
            }
            try run("""
                INSERT INTO devices (device_id, user_id, identity_key, signed_prekey, signature, created_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $6)
                """, [.text(keys.deviceID), .text(user), .text(keys.identityKey), .text(keys.signedPrekey), .text(keys.signature), .int(now.micros)])
        } else {
            try run("UPDATE devices SET identity_key = $1, signed_prekey = $2, signature = $3, updated_at = $4 WHERE device_id = $5",
                    [.text(keys.identityKey), .text(keys.signedPrekey), .text(keys.signature), .int(now.micros), .text(keys.deviceID)])
        }
        // A claimed prekey is kept a day (a resent claim finds it), then goes.
        try run("DELETE FROM one_time_prekeys WHERE device_id = $1 AND claimed_at < $2",
                [.text(keys.deviceID), .int(now.micros - EncryptionStore.claimMemoryMicros)])
        let kept = try rows("SELECT COUNT(claim), COUNT(*), MAX(position) FROM one_time_prekeys WHERE device_id = $1", [.text(keys.deviceID)]).first
        let count = WebhookStore.int(kept?[1]) - WebhookStore.int(kept?[0])
        guard count + Int64(keys.oneTimePrekeys.count) <= Int64(Encryption.maxPrekeysKept) else {
            throw StoreError.badRequest([("one_time_prekeys", "A device keeps at most \(Encryption.maxPrekeysKept) one-time prekeys; it has \(count).")])
        }
        // Positions only grow: a claim takes the oldest first. A prekey the
        // device has (or had, claimed) is not added again: a resent publish
        // adds nothing, and a claimed prekey never comes back.
        var next = kept?[2].flatMap { Int64($0) }.map { $0 + 1 } ?? 0
        var added: Int64 = 0
        for prekey in keys.oneTimePrekeys {
            added += Int64(try run("INSERT INTO one_time_prekeys (device_id, position, prekey) VALUES ($1, $2, $3) ON CONFLICT (device_id, prekey) DO NOTHING",
                                   [.text(keys.deviceID), .int(next), .text(prekey)]))
            next += 1
        }
        let bundle = DeviceBundle(deviceID: keys.deviceID, userID: user, identityKey: keys.identityKey, signedPrekey: keys.signedPrekey,
                                  signature: keys.signature, oneTimePrekey: nil)
        return (bundle, count + added)
    }

    /// `GET .../keys/users/{id}/`: the user's devices, each with one of its
    /// one-time prekeys claimed for the caller (nil: none left). A prekey is
    /// marked claimed in the claim's own statement, only if unclaimed: two
    /// claims at once never get the same one (on PostgreSQL the second's
    /// update finds the row claimed and it takes the next). `claim` names
    /// the request: a resend of it gets the same prekeys again, none more;
    /// nil claims nothing (a `HEAD`). Only for the user or someone who
    /// shares a room with them.
    public func claimKeys(of target: String, for viewer: String, claim: String?, now: Timestamp = .now()) throws -> [DeviceBundle] {
        if target != viewer {
            let shared = try rows("""
                SELECT 1 FROM room_participants a JOIN room_participants b ON b.room_id = a.room_id
                WHERE a.user_id = $1 AND b.user_id = $2 LIMIT 1
                """, [.text(viewer), .text(target)])
            guard !shared.isEmpty else { throw StoreError.notFound("No keys for this user.") }
        }
        let devices = try rows("""
            SELECT device_id, identity_key, signed_prekey, signature FROM devices WHERE user_id = $1 ORDER BY created_at, device_id
            """, [.text(target)])
        return try devices.map { row in
            let device = row[0] ?? ""
            return DeviceBundle(deviceID: device, userID: target, identityKey: row[1] ?? "", signedPrekey: row[2] ?? "", signature: row[3] ?? "",
                                oneTimePrekey: try claim.flatMap { try claimPrekey(device, claim: $0, now: now) })
        }
    }

    /// Claims the oldest unclaimed one-time prekey of a device and returns
    /// it (the one `claim` got already, for a resend). Tried again while one
    /// is left but another claim took the one picked.
    func claimPrekey(_ device: String, claim: String, now: Timestamp) throws -> String? {
        if let again = try rows("SELECT prekey FROM one_time_prekeys WHERE device_id = $1 AND claim = $2", [.text(device), .text(claim)]).first?[0] {
            return again
        }
        // Each pass either claims one or finds another claim took it; bounded all
        // the same, so that no fault makes it spin.
        for _ in 0..<100 {
            // Placeholders in first-use order: SQLite numbers `$n` by where each first appears.
            let claimed = try rows("""
                UPDATE one_time_prekeys SET claim = $1, claimed_at = $2 WHERE device_id = $3 AND claim IS NULL
                AND position = (SELECT MIN(position) FROM one_time_prekeys WHERE device_id = $3 AND claim IS NULL) RETURNING prekey
                """, [.text(claim), .int(now.micros), .text(device)])
            if let prekey = claimed.first?[0] { return prekey }
            guard try !rows("SELECT 1 FROM one_time_prekeys WHERE device_id = $1 AND claim IS NULL LIMIT 1", [.text(device)]).isEmpty else { return nil }
        }
        throw StoreError.badRequest(error: "The keys changed meanwhile; try again")
    }

    /// `DELETE .../keys/devices/{id}/`: the caller's device, its prekeys and
    /// the ciphertexts sent to it (nobody else can read them).
    public func deleteDevice(_ device: String, user: String) throws {
        let deleted = try run("DELETE FROM devices WHERE device_id = $1 AND user_id = $2", [.text(device), .text(user)])
        guard deleted == 1 else { throw StoreError.notFound("Device not found.") }
    }

    // MARK: Encrypted rooms

    /// Makes a new room encrypted, in its creation's transaction.
    public func markEncrypted(room: String) throws {
        try run("INSERT INTO encrypted_rooms (room_id) VALUES ($1)", [.text(room)])
    }

    /// Which of these rooms exist.
    public func existingRooms(among ids: [String]) throws -> Set<String> {
        guard !ids.isEmpty else { return [] }
        return Set(try rows("SELECT id FROM rooms WHERE id IN (\(EncryptionStore.list(from: 1, count: ids.count)))", ids.map { .text($0) })
            .compactMap { $0[0] })
    }

    /// Which of these rooms are encrypted.
    public func encryptedRooms(among ids: [String]) throws -> Set<String> {
        guard !ids.isEmpty else { return [] }
        return Set(try rows("SELECT room_id FROM encrypted_rooms WHERE room_id IN (\(EncryptionStore.list(from: 1, count: ids.count)))",
                            ids.map { .text($0) }).compactMap { $0[0] })
    }

    /// Keeps a new (or edited) encrypted message's ciphertexts, replacing
    /// any it had. Every device must be a current member's (`400`
    /// otherwise: nobody else may be served the room's messages).
    public func storeCiphertexts(message: String, room: String, _ ciphertexts: [String: String]) throws -> [Ciphertext] {
        let devices = Array(ciphertexts.keys).sorted()
        let owners = try rows("""
            SELECT d.device_id, d.user_id FROM devices d JOIN room_participants p ON p.user_id = d.user_id AND p.room_id = $1
            WHERE d.device_id IN (\(EncryptionStore.list(from: 2, count: devices.count)))
            """, [.text(room)] + devices.map { .text($0) })
        var ownerOf: [String: String] = [:]
        for row in owners { if let device = row[0], let user = row[1] { ownerOf[device] = user } }
        if let unknown = devices.first(where: { ownerOf[$0] == nil }) {
            throw StoreError.badRequest([("ciphertexts", "\(unknown) is not a device of a member of this room.")])
        }
        try run("DELETE FROM message_ciphertexts WHERE message_id = $1", [.text(message)])
        let stored = devices.map { Ciphertext(deviceID: $0, userID: ownerOf[$0]!, text: ciphertexts[$0]!) }
        for entry in stored {
            try run("INSERT INTO message_ciphertexts (message_id, device_id, user_id, ciphertext) VALUES ($1, $2, $3, $4)",
                    [.text(message), .text(entry.deviceID), .text(entry.userID), .text(entry.text)])
        }
        return stored
    }

    /// A message's ciphertexts, for its events.
    public func ciphertexts(message: String) throws -> [Ciphertext] {
        try rows("SELECT device_id, user_id, ciphertext FROM message_ciphertexts WHERE message_id = $1 ORDER BY device_id", [.text(message)])
            .map { Ciphertext(deviceID: $0[0] ?? "", userID: $0[1] ?? "", text: $0[2] ?? "") }
    }

    /// The ciphertexts of these messages for one device of the viewer's, by message.
    public func ciphertexts(messages ids: [String], device: String, viewer: String) throws -> [String: String] {
        guard !ids.isEmpty else { return [:] }
        let found = try rows("""
            SELECT message_id, ciphertext FROM message_ciphertexts
            WHERE device_id = $1 AND user_id = $2 AND message_id IN (\(EncryptionStore.list(from: 3, count: ids.count)))
            """, [.text(device), .text(viewer)] + ids.map { .text($0) })
        var result: [String: String] = [:]
        for row in found { if let id = row[0], let text = row[1] { result[id] = text } }
        return result
    }

    /// A deleted message's ciphertexts go with its content.
    public func dropCiphertexts(message: String) throws {
        try run("DELETE FROM message_ciphertexts WHERE message_id = $1", [.text(message)])
    }
}
