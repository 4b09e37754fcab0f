import ChatCore
import ChatTesting
import Crypto
import Foundation
import Testing

extension EndToEnd {
    /// Issue 17: end-to-end encrypted rooms with real keys. The clients here
    /// do an X3DH-style key agreement (Curve25519 from swift-crypto: an
    /// Ed25519 identity signs an X25519 signed prekey; four Diffie-Hellmans
    /// with one-time prekeys; HKDF; ChaCha20-Poly1305); the server only keeps
    /// and routes what they publish and send.
    @Suite struct EncryptedRooms {
        @Test func eachDeviceDecryptsItsOwnAndTheDatabaseHoldsNoPlaintext() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob", "carol")
            let (alice, bob) = (IDs.userID(forSubject: "alice"), IDs.userID(forSubject: "bob"))
            let a1 = E2EDevice(prekeys: 5), b1 = E2EDevice(prekeys: 5), b2 = E2EDevice(prekeys: 5)
            for (device, token) in [(a1, tokens[0]), (b1, tokens[1]), (b2, tokens[1])] {
                let published = try await server.request("PUT", "/api/chat/keys/devices/\(device.id)/", token: token, json: device.publication)
                #expect(published.status == 200 && published.object["one_time_prekey_count"] as? Int == 5, "\(published.text)")
            }
            let created = try await server.request("POST", "/api/chat/rooms/", token: tokens[0],
                                                   json: ["name": "secret", "participant_ids": [bob], "encrypted": true])
            #expect(created.status == 201 && created.object["encrypted"] as? Bool == true, "\(created.text)")
            let room = try #require(created.object["id"] as? String)
            let plain = try await Steps.room(server, token: tokens[0], members: ["bob"], name: "plain")
            #expect(try await server.request("GET", "/api/chat/rooms/\(plain)/", token: tokens[0]).object["encrypted"] as? Bool == false)

            let b1Socket = try server.webSocket("/ws/chat/\(room)/?device_id=\(b1.id)", token: tokens[1])
            let b2Socket = try server.webSocket("/ws/chat/\(room)/?device_id=\(b2.id)", token: tokens[1])
            let bareSocket = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])

            // Alice claims Bob's bundles (and her own, to read her history) and seals a message for each device.
            let secret = "meet at the north gate, 7 pm \(UUID().uuidString)"
            var bundles = try await Self.bundles(server, of: bob, token: tokens[0])
            bundles += try await Self.bundles(server, of: alice, token: tokens[0])
            #expect(Set(bundles.map(\.deviceID)) == [a1.id, b1.id, b2.id] && bundles.allSatisfy { $0.oneTimePrekey != nil })
            var ciphertexts: [String: String] = [:]
            for bundle in bundles { ciphertexts[bundle.deviceID] = try a1.seal(secret, to: bundle) }
            let sent = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0],
                                                json: ["message_type": "encrypted", "ciphertexts": ciphertexts])
            #expect(sent.status == 201 && sent.object["content"] as? String == "" && sent.object["message_type"] as? String == "encrypted", "\(sent.text)")
            let messageID = try #require(sent.object["id"] as? String)

            // Each of Bob's devices gets its own ciphertext, live, and opens it.
            for (device, socket) in [(b1, b1Socket), (b2, b2Socket)] {
                let event = try #require(try socket.receive(type: "message", timeout: 10)?["message"] as? [String: Any])
                #expect(event["id"] as? String == messageID && event["content"] as? String == "")
                let ciphertext = try #require(event["ciphertext"] as? String)
                #expect(ciphertext == ciphertexts[device.id])
                #expect(try device.open(ciphertext) == secret)
                #expect(throws: (any Error).self) { try (device === b1 ? b2 : b1).open(ciphertext) }
            }
            // A socket that named no device gets no ciphertext: the reaction after the message arrives first.
            _ = try await server.request("POST", "/api/chat/rooms/\(room)/messages/\(messageID)/react/", token: tokens[1], json: ["emoji": "👍"])
            var bareSaw: [String] = []
            while let event = try bareSocket.receiveJSON(timeout: 10) {
                bareSaw.append(event["type"] as? String ?? "?")
                if event["type"] as? String == "reaction" { break }
            }
            #expect(bareSaw.last == "reaction" && !bareSaw.contains("message"), "\(bareSaw)")

            // Over REST, each device its own; no device, no ciphertext.
            for (device, token) in [(b2, tokens[1]), (a1, tokens[0])] {
                let page = try await server.request("GET", "/api/chat/rooms/\(room)/messages/", token: token, headers: ["X-Device-Id": device.id])
                let first = try #require((page.object["results"] as? [[String: Any]])?.first, "\(page.text)")
                #expect(try device.open(try #require(first["ciphertext"] as? String)) == secret)
                let one = try await server.request("GET", "/api/chat/rooms/\(room)/messages/\(messageID)/", token: token, headers: ["X-Device-Id": device.id])
                #expect(try device.open(try #require(one.object["ciphertext"] as? String)) == secret)
            }
            let bare = try await server.request("GET", "/api/chat/rooms/\(room)/messages/", token: tokens[1])
            #expect((bare.object["results"] as? [[String: Any]])?.first?["ciphertext"] is NSNull, "\(bare.text)")
            // Bob naming Alice's device gets nothing of hers.
            let stolen = try await server.request("GET", "/api/chat/rooms/\(room)/messages/", token: tokens[1], headers: ["X-Device-Id": a1.id])
            #expect((stolen.object["results"] as? [[String: Any]])?.first?["ciphertext"] is NSNull, "\(stolen.text)")

            // An edit carries new ciphertexts.
            let edited = "changed: the south gate \(UUID().uuidString)"
            var newCiphertexts: [String: String] = [:]
            for bundle in try await Self.bundles(server, of: bob, token: tokens[0]) { newCiphertexts[bundle.deviceID] = try a1.seal(edited, to: bundle) }
            let edit = try await server.request("PATCH", "/api/chat/rooms/\(room)/messages/\(messageID)/", token: tokens[0], json: ["ciphertexts": newCiphertexts])
            #expect(edit.status == 200, "\(edit.text)")
            let change = try #require(try b1Socket.receive(type: "message_edited", timeout: 10)?["message"] as? [String: Any])
            #expect(try b1.open(try #require(change["ciphertext"] as? String)) == edited)

            // Plaintext into the encrypted room, and ciphertexts into a plain one: 400, nothing stored.
            let refused = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "in the clear"])
            #expect(refused.status == 400 && refused.object["message_type"] != nil, "\(refused.text)")
            try b1Socket.send(json: ["type": "message", "content": "in the clear"])
            #expect(try b1Socket.receive(type: "error", timeout: 10) != nil)
            let misplaced = try await server.request("POST", "/api/chat/rooms/\(plain)/messages/", token: tokens[0],
                                                     json: ["message_type": "encrypted", "ciphertexts": [b1.id: "YQ=="]])
            #expect(misplaced.status == 400, "\(misplaced.text)")
            let stray = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0],
                                                 json: ["message_type": "encrypted", "ciphertexts": [UUID().uuidString: "YQ=="]])
            #expect(stray.status == 400 && stray.object["ciphertexts"] != nil, "a device of no member: \(stray.text)")
            // Carol shares no room with Bob: his keys are not hers to claim.
            #expect(try await server.request("GET", "/api/chat/keys/users/\(bob)/", token: tokens[2]).status == 404)
            let history = try await Steps.contents(server, token: tokens[1], room: room)
            #expect(history == [""], "one message, no plaintext: \(history)")
            // Search skips it (there is nothing to find).
            let search = try await server.request("GET", "/api/chat/search/messages/?q=gate", token: tokens[1])
            #expect(!search.text.contains(messageID), "\(search.text)")

            // What the database holds: no plaintext, in any row or file.
            server.stop(keepData: true)
            for text in [secret, edited] {
                #expect(try Self.storedAnywhere(server, text) == false, "\(text) in the stored data")
            }
            // The search does find what is stored: a ciphertext as the client sent it.
            #expect(try Self.storedAnywhere(server, try #require(newCiphertexts[b1.id])))
        }

        /// Claims of one device's prekeys at once, over REST: each prekey goes
        /// to one claim, and the rest get `null`.
        @Test func aOneTimePrekeyIsNeverClaimedTwice() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let bob = IDs.userID(forSubject: "bob")
            _ = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let device = E2EDevice(prekeys: 12)
            #expect(try await server.request("PUT", "/api/chat/keys/devices/\(device.id)/", token: tokens[1], json: device.publication).status == 200)
            let claimed = try await withThrowingTaskGroup(of: String?.self) { group in
                for _ in 0..<20 {
                    group.addTask { try await Self.bundles(server, of: bob, token: tokens[0]).first?.oneTimePrekey }
                }
                return try await group.reduce(into: [String?]()) { $0.append($1) }
            }
            let keys = claimed.compactMap { $0 }
            #expect(keys.count == 12 && Set(keys).count == 12 && Set(keys) == Set(device.oneTimePublics), "\(keys.count) claimed, \(Set(keys).count) distinct")
            // Refusals: another user's device id, a bad key, too many devices.
            #expect(try await server.request("PUT", "/api/chat/keys/devices/\(device.id)/", token: tokens[0], json: device.publication).status == 403)
            var bad = device.publication
            bad["identity_key"] = "not base64!"
            #expect(try await server.request("PUT", "/api/chat/keys/devices/\(UUID().uuidString)/", token: tokens[0], json: bad).status == 400)
            #expect(try await server.request("DELETE", "/api/chat/keys/devices/\(device.id)/", token: tokens[0]).status == 404)
            #expect(try await server.request("DELETE", "/api/chat/keys/devices/\(device.id)/", token: tokens[1]).status == 204)
            #expect(try await Self.bundles(server, of: bob, token: tokens[0]).isEmpty)
        }

        static func bundles(_ server: TestServer, of user: String, token: String) async throws -> [E2EDevice.Bundle] {
            let answer = try await server.request("GET", "/api/chat/keys/users/\(user)/", token: token)
            #expect(answer.status == 200, "\(answer.text)")
            return (answer.object["devices"] as? [[String: Any]] ?? []).compactMap(E2EDevice.Bundle.init)
        }

        /// Whether `text` is anywhere in the stored data: every file of the
        /// data directory (SQLite's database, its WAL, the search index), or
        /// with PostgreSQL every message's content and ciphertext.
        static func storedAnywhere(_ server: TestServer, _ text: String) throws -> Bool {
            if PostgresServer.enabled {
                let rows = try PostgresServer.rows("SELECT content FROM messages UNION ALL SELECT ciphertext FROM message_ciphertexts", forDataDir: server.dataDir)
                return rows.contains { $0.contains(text) }
            }
            let needle = Data(text.utf8)
            let files = FileManager.default.enumerator(atPath: server.dataDir)?.compactMap { $0 as? String } ?? []
            #expect(files.contains("chat.sqlite"))
            return try files.contains { name in
                let path = server.dataDir + "/" + name
                // Regular files only: the runtime directory holds the bus's sockets.
                guard (try? FileManager.default.attributesOfItem(atPath: path)[.type] as? FileAttributeType) == .typeRegular else { return false }
                return try Data(contentsOf: URL(fileURLWithPath: path)).range(of: needle) != nil
            }
        }
    }
}

/// A client device: an Ed25519 identity that signs, an X25519 identity, a
/// signed prekey and one-time prekeys. `seal` is the X3DH initiator's side
/// for one message (no ratchet after it); `open` the responder's.
final class E2EDevice: @unchecked Sendable {
    let id = IDs.uuid7()
    let signing = Curve25519.Signing.PrivateKey()
    let identity = Curve25519.KeyAgreement.PrivateKey()
    let signedPrekey = Curve25519.KeyAgreement.PrivateKey()
    let oneTime: [Curve25519.KeyAgreement.PrivateKey]

    init(prekeys: Int) {
        oneTime = (0..<prekeys).map { _ in Curve25519.KeyAgreement.PrivateKey() }
    }

    var oneTimePublics: [String] { oneTime.map { $0.publicKey.rawRepresentation.base64EncodedString() } }

    /// `PUT .../keys/devices/{id}/`: the identity key is both public keys (Ed25519, then X25519).
    var publication: [String: Any] {
        [
            "identity_key": (signing.publicKey.rawRepresentation + identity.publicKey.rawRepresentation).base64EncodedString(),
            "signed_prekey": signedPrekey.publicKey.rawRepresentation.base64EncodedString(),
            "signature": (try! signing.signature(for: signedPrekey.publicKey.rawRepresentation)).base64EncodedString(),
            "one_time_prekeys": oneTimePublics,
        ]
    }

    struct Bundle {
        var deviceID: String
        var identityKey: Data
        var signedPrekey: Data
        var signature: Data
        var oneTimePrekey: String?

        init?(_ json: [String: Any]) {
            guard let id = json["device_id"] as? String, let identity = (json["identity_key"] as? String).flatMap({ Data(base64Encoded: $0) }),
                let prekey = (json["signed_prekey"] as? String).flatMap({ Data(base64Encoded: $0) }),
                let signature = (json["signature"] as? String).flatMap({ Data(base64Encoded: $0) })
            else { return nil }
            (deviceID, identityKey, signedPrekey, self.signature) = (id, identity, prekey, signature)
            oneTimePrekey = json["one_time_prekey"] as? String
        }
    }

    struct Envelope: Codable {
        var identity: Data  // the sender's X25519 identity
        var ephemeral: Data
        var oneTimePrekey: Data?
        var box: Data
    }

    enum Failure: Error { case badSignature, unknownPrekey }

    /// Seals `text` for the device of `bundle`, after checking its signed prekey's signature.
    func seal(_ text: String, to bundle: Bundle) throws -> String {
        let signer = try Curve25519.Signing.PublicKey(rawRepresentation: bundle.identityKey.prefix(32))
        guard signer.isValidSignature(bundle.signature, for: bundle.signedPrekey) else { throw Failure.badSignature }
        let theirIdentity = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: bundle.identityKey.suffix(32))
        let theirPrekey = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: bundle.signedPrekey)
        let theirOneTime = try bundle.oneTimePrekey.flatMap { Data(base64Encoded: $0) }.map { try Curve25519.KeyAgreement.PublicKey(rawRepresentation: $0) }
        let ephemeral = Curve25519.KeyAgreement.PrivateKey()
        var secrets = [try identity.sharedSecretFromKeyAgreement(with: theirPrekey), try ephemeral.sharedSecretFromKeyAgreement(with: theirIdentity),
                       try ephemeral.sharedSecretFromKeyAgreement(with: theirPrekey)]
        if let theirOneTime { secrets.append(try ephemeral.sharedSecretFromKeyAgreement(with: theirOneTime)) }
        let key = Self.key(secrets)
        let box = try ChaChaPoly.seal(Data(text.utf8), using: key, authenticating: identity.publicKey.rawRepresentation + theirIdentity.rawRepresentation)
        let envelope = Envelope(identity: identity.publicKey.rawRepresentation, ephemeral: ephemeral.publicKey.rawRepresentation,
                                oneTimePrekey: theirOneTime?.rawRepresentation, box: box.combined)
        return try JSONEncoder().encode(envelope).base64EncodedString()
    }

    /// Opens what `seal` made for this device.
    func open(_ ciphertext: String) throws -> String {
        let envelope = try JSONDecoder().decode(Envelope.self, from: Data(base64Encoded: ciphertext) ?? Data())
        let theirIdentity = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: envelope.identity)
        let ephemeral = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: envelope.ephemeral)
        var secrets = [try signedPrekey.sharedSecretFromKeyAgreement(with: theirIdentity), try identity.sharedSecretFromKeyAgreement(with: ephemeral),
                       try signedPrekey.sharedSecretFromKeyAgreement(with: ephemeral)]
        if let used = envelope.oneTimePrekey {
            guard let mine = oneTime.first(where: { $0.publicKey.rawRepresentation == used }) else { throw Failure.unknownPrekey }
            secrets.append(try mine.sharedSecretFromKeyAgreement(with: ephemeral))
        }
        let plain = try ChaChaPoly.open(try ChaChaPoly.SealedBox(combined: envelope.box), using: Self.key(secrets),
                                        authenticating: envelope.identity + identity.publicKey.rawRepresentation)
        return String(decoding: plain, as: UTF8.self)
    }

    /// HKDF-SHA256 over 32 0xFF bytes and the Diffie-Hellman outputs, as X3DH does.
    static func key(_ secrets: [SharedSecret]) -> SymmetricKey {
        var material = Data(repeating: 0xFF, count: 32)
        for secret in secrets { secret.withUnsafeBytes { material.append(contentsOf: $0) } }
        return HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: material), salt: Data(repeating: 0, count: 32),
                                      info: Data("chatd-x3dh-test".utf8), outputByteCount: 32)
    }
}
