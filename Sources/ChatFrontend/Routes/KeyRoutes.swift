import ChatCore
import ChatWire
import Foundation
import Hummingbird

/// The device key directory (issue 17, api-contract.md "End-to-end encrypted
/// rooms"): `keys/devices/{device}/` (PUT, DELETE) and `keys/users/{user}/`.
/// Keys are public keys, base64, checked for shape and size here; what they
/// are is the clients' business.
struct KeyRoutes: Sendable {
    let api: ChatAPI
    typealias Context = ChatAPI.Context

    var routes: [ChatAPI.Route] {
        [
            .init(.put, "/api/chat/keys/devices/:device/", publish),
            .init(.delete, "/api/chat/keys/devices/:device/", delete),
            .init(.get, "/api/chat/keys/users/:user/", claim),
        ]
    }

    func publish(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let device = try api.pathID("device", context)
        let object = try await api.jsonObject(request)
        var errors: [(field: String, message: String)] = []
        func key(_ field: String) -> String {
            guard let value = object[field], !(value is NSNull) else {
                errors.append((field, "This field is required."))
                return ""
            }
            guard let text = value as? String else {
                errors.append((field, "Must be base64."))
                return ""
            }
            // The size first: nothing longer is decoded.
            if text.utf8.count > Encryption.maxKeyBytes {
                errors.append((field, "Ensure this field has no more than \(Encryption.maxKeyBytes) characters."))
            } else if !Encryption.isBase64(text) {
                errors.append((field, "Must be base64."))
            }
            return text
        }
        let keys = (key("identity_key"), key("signed_prekey"), key("signature"))
        var prekeys: [String] = []
        switch object["one_time_prekeys"] {
        case nil, is NSNull: break
        case let list as [Any]:
            if list.count > Encryption.maxPrekeysPerUpload {
                errors.append(("one_time_prekeys", "Ensure this field has no more than \(Encryption.maxPrekeysPerUpload) elements."))
            } else if let texts = list as? [String], texts.allSatisfy({ $0.utf8.count <= Encryption.maxKeyBytes && Encryption.isBase64($0) }) {
                prekeys = texts
            } else {
                errors.append(("one_time_prekeys", "Each one-time prekey must be base64, of at most \(Encryption.maxKeyBytes) characters."))
            }
        case let other?:
            errors.append(("one_time_prekeys", "Expected a list of items but got type \"\(ChatAPI.typeName(other))\"."))
        }
        if !errors.isEmpty { throw APIError.fields(errors) }
        let body = Requests.DeviceKeys(deviceID: device, identityKey: keys.0, signedPrekey: keys.1, signature: keys.2, oneTimePrekeys: prekeys)
        // At the owner's shard: one user's devices change in one place.
        return try await api.forward(.keysPublish, shardKey: caller.identity.id, caller: caller, body: body)
    }

    func delete(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let device = try api.pathID("device", context)
        return try await api.forward(.keysDelete, shardKey: caller.identity.id, caller: caller, body: Requests.KeysRef(deviceID: device))
    }

    func claim(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let user = try api.pathID("user", context)
        // At the shard of the user whose prekeys are claimed: claims of one user queue there.
        // HEAD (the router serves it wherever GET is) answers alike, and claims nothing.
        return try await api.forward(.keysClaim, shardKey: user, caller: caller, body: Requests.KeysRef(userID: user, peek: request.method == .head ? true : nil))
    }
}
