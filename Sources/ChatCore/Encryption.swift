import Foundation

/// End-to-end encrypted rooms, the server's side (issue 17, api-contract.md
/// "End-to-end encrypted rooms"): the device key directory, and rooms whose
/// messages carry a ciphertext per device and no content. The server never
/// sees plaintext: it checks shapes and sizes, keeps the envelopes, and
/// serves each device its own.
public enum Encryption {
    /// Devices one user may publish keys for.
    public static let maxDevicesPerUser = 10
    /// Entries in one message's `ciphertexts`: every device of every member
    /// it is for (ten members of ten devices each).
    public static let maxCiphertexts = 100
    /// One ciphertext, base64 text: a message of `maxMessageChars` (5,000
    /// code points, up to 20 KB of UTF-8) and a ratchet header fit.
    public static let maxCiphertextBytes = 32 * 1024
    /// An identity key, signed prekey, signature or one-time prekey, base64
    /// text (X25519/Ed25519 keys and signatures are 32-64 bytes).
    public static let maxKeyBytes = 1024
    /// One-time prekeys in one upload, and kept for one device.
    public static let maxPrekeysPerUpload = 100
    public static let maxPrekeysKept = 500

    public static let contentMessage = "An encrypted message has no content: its text is in ciphertexts."

    /// Non-empty standard base64 (RFC 4648 section 4, padded).
    public static func isBase64(_ text: String) -> Bool {
        !text.isEmpty && Data(base64Encoded: text) != nil
    }

    /// A `ciphertexts` object of a request (JSONSerialization's value): device
    /// id (a UUID, canonical) → base64 ciphertext, or the field's error.
    public static func ciphertexts(_ value: Any?) -> Result<[String: String], FieldError> {
        guard let object = value as? [String: Any] else { return .failure(FieldError("Expected an object of device ids to ciphertexts.")) }
        guard !object.isEmpty else { return .failure(FieldError("An encrypted message needs a ciphertext for at least one device.")) }
        guard object.count <= maxCiphertexts else { return .failure(FieldError("Ensure this field has no more than \(maxCiphertexts) devices.")) }
        var result: [String: String] = [:]
        for (key, value) in object {
            guard let device = IDs.canonical(key) else { return .failure(FieldError("\"\(key.prefix(64))\" is not a valid device id (a UUID).")) }
            guard let text = value as? String else { return .failure(FieldError("The ciphertext for \(device) is not base64.")) }
            // The size first: nothing longer is decoded.
            guard text.utf8.count <= maxCiphertextBytes else {
                return .failure(FieldError("The ciphertext for \(device) exceeds \(maxCiphertextBytes) bytes."))
            }
            guard isBase64(text) else { return .failure(FieldError("The ciphertext for \(device) is not base64.")) }
            result[device] = text
        }
        return .success(result)
    }

    public struct FieldError: Error, Equatable {
        public var message: String
        public init(_ message: String) { self.message = message }
    }
}

/// A device's published keys, as the directory serves them: each fetch
/// claims one of its one-time prekeys (nil when none is left).
public struct DeviceBundle: Sendable, Equatable {
    public var deviceID: String
    public var userID: String
    public var identityKey: String
    public var signedPrekey: String
    public var signature: String
    public var oneTimePrekey: String?

    public init(deviceID: String, userID: String, identityKey: String, signedPrekey: String, signature: String, oneTimePrekey: String?) {
        (self.deviceID, self.userID, self.identityKey, self.signedPrekey, self.signature) = (deviceID, userID, identityKey, signedPrekey, signature)
        self.oneTimePrekey = oneTimePrekey
    }
}

/// Command bodies of the key directory.
extension Requests {
    /// `keys.publish`: a device's keys, checked for shape by the frontend.
    public struct DeviceKeys: Codable, Sendable {
        public var deviceID: String
        public var identityKey: String
        public var signedPrekey: String
        public var signature: String
        public var oneTimePrekeys: [String]

        public init(deviceID: String, identityKey: String, signedPrekey: String, signature: String, oneTimePrekeys: [String]) {
            (self.deviceID, self.identityKey, self.signedPrekey, self.signature) = (deviceID, identityKey, signedPrekey, signature)
            self.oneTimePrekeys = oneTimePrekeys
        }
    }

    /// `keys.claim` (a user's devices) and `keys.delete` (one device of the caller's).
    public struct KeysRef: Codable, Sendable {
        public var userID: String?
        public var deviceID: String?
        /// A claim's `HEAD`: the answer's shape, nothing claimed.
        public var peek: Bool?

        public init(userID: String? = nil, deviceID: String? = nil, peek: Bool? = nil) {
            (self.userID, self.deviceID, self.peek) = (userID, deviceID, peek)
        }
    }
}

extension ClientJSON {
    /// `{"device_id", "identity_key", "signed_prekey", "signature", "one_time_prekey"}`.
    static func write(_ bundle: DeviceBundle, to w: inout JSONWriter) {
        w.beginObject()
        writeKeys(bundle, to: &w)
        w.field("one_time_prekey", bundle.oneTimePrekey)
        w.endObject()
    }

    /// The fields a bundle and a published device share.
    private static func writeKeys(_ bundle: DeviceBundle, to w: inout JSONWriter) {
        w.field("device_id", bundle.deviceID)
        w.field("identity_key", bundle.identityKey)
        w.field("signed_prekey", bundle.signedPrekey)
        w.field("signature", bundle.signature)
    }

    /// `GET .../keys/users/{id}/`: `{"devices": [...]}`.
    public static func devices(_ bundles: [DeviceBundle]) -> [UInt8] {
        var w = JSONWriter(capacity: 64 + 320 * bundles.count)
        w.beginObject()
        w.key("devices")
        w.beginArray()
        for bundle in bundles { write(bundle, to: &w) }
        w.endArray()
        w.endObject()
        return w.bytes
    }

    /// `PUT .../keys/devices/{id}/`: the device as stored, and how many
    /// one-time prekeys it has left to hand out.
    public static func publishedDevice(_ bundle: DeviceBundle, prekeys: Int64) -> [UInt8] {
        var w = JSONWriter(capacity: 384)
        w.beginObject()
        writeKeys(bundle, to: &w)
        w.field("one_time_prekey_count", prekeys)
        w.endObject()
        return w.bytes
    }
}
