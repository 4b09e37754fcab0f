import ChatCore
import ChatStore
import Foundation
import Testing

/// The key directory and encrypted messages in the store
/// (Store+Encryption.swift), on each engine: a device is its first
/// publisher's, prekeys are claimed once each however many claim at once,
/// ciphertexts go only to members' devices.
@Suite struct EncryptionEngineTests {
    var alice: String { identity("alice").id }
    var bob: String { identity("bob").id }
    var mallory: String { identity("mallory").id }

    func keys(_ device: String, prekeys: Range<Int>) -> Requests.DeviceKeys {
        Requests.DeviceKeys(deviceID: device, identityKey: "aWs=", signedPrekey: "c3Br", signature: "c2ln",
                            oneTimePrekeys: prekeys.map { Data("otk-\($0)".utf8).base64EncodedString() })
    }

    @Test(arguments: EngineKind.available)
    func aDeviceIsItsPublishersAndItsPrekeysGoOnce(_ kind: EngineKind) throws {
        let (engine, _) = try kind.make()
        _ = try groupRoom(engine)  // alice and bob share a room; mallory is in none of theirs
        let device = IDs.uuid7()
        let (published, count) = try engine.write { try $0.publishDevice(keys(device, prekeys: 0..<3), user: bob) }
        #expect(published.deviceID == device && count == 3)
        #expect(throws: StoreError.forbidden("This device belongs to another user.")) {
            try engine.write { try $0.publishDevice(keys(device, prekeys: 0..<1), user: alice) }
        }
        // More prekeys later, after the ones kept: 3 + 2.
        #expect(try engine.write { try $0.publishDevice(keys(device, prekeys: 3..<5), user: bob) }.prekeys == 5)
        var claimed: [String?] = []
        for _ in 0..<6 { claimed += try engine.write { try $0.claimKeys(of: bob, for: alice, claim: IDs.uuid7()) }.map(\.oneTimePrekey) }
        #expect(claimed == (0..<5).map { Data("otk-\($0)".utf8).base64EncodedString() } + [nil], "oldest first, each once, then none")
        #expect(throws: StoreError.notFound("No keys for this user.")) { try engine.write { try $0.claimKeys(of: bob, for: mallory, claim: IDs.uuid7()) } }
        #expect(throws: StoreError.notFound("Device not found.")) { try engine.write { try $0.deleteDevice(device, user: alice) } }
        try engine.write { try $0.deleteDevice(device, user: bob) }
        #expect(try engine.write { try $0.claimKeys(of: bob, for: bob, claim: IDs.uuid7()) }.isEmpty)
    }

    /// The frontend resends a command it got no answer to, and the worker
    /// may have done it: a resent publish adds nothing, a resent claim gets
    /// the same prekey, a claimed prekey published again never comes back,
    /// and a claim named by nobody (a `HEAD`) takes none.
    @Test(arguments: EngineKind.available)
    func resendsChangeNothing(_ kind: EngineKind) throws {
        let (engine, _) = try kind.make()
        _ = try groupRoom(engine)
        let device = IDs.uuid7()
        #expect(try engine.write { try $0.publishDevice(keys(device, prekeys: 0..<3), user: bob) }.prekeys == 3)
        #expect(try engine.write { try $0.publishDevice(keys(device, prekeys: 0..<3), user: bob) }.prekeys == 3, "a resend")
        #expect(try engine.write { try $0.claimKeys(of: bob, for: alice, claim: nil) }.map(\.oneTimePrekey) == [nil])
        let claim = IDs.uuid7()
        let first = try engine.write { try $0.claimKeys(of: bob, for: alice, claim: claim) }.first?.oneTimePrekey
        let again = try engine.write { try $0.claimKeys(of: bob, for: alice, claim: claim) }.first?.oneTimePrekey
        #expect(first != nil && again == first)
        #expect(try engine.write { try $0.publishDevice(keys(device, prekeys: 0..<4), user: bob) }.prekeys == 3, "only otk-3 is new")
        var rest: [String?] = []
        for _ in 0..<4 { rest += try engine.write { try $0.claimKeys(of: bob, for: alice, claim: IDs.uuid7()) }.map(\.oneTimePrekey) }
        #expect(rest.compactMap { $0 }.count == 3 && !rest.contains(first) && rest.last == .some(nil))
    }

    @Test(arguments: EngineKind.available)
    func aUserHasAtMostTenDevices(_ kind: EngineKind) throws {
        let (engine, _) = try kind.make()
        _ = try groupRoom(engine)
        for _ in 0..<Encryption.maxDevicesPerUser { _ = try engine.write { try $0.publishDevice(keys(IDs.uuid7(), prekeys: 0..<0), user: alice) } }
        #expect(throws: StoreError.self) { try engine.write { try $0.publishDevice(keys(IDs.uuid7(), prekeys: 0..<0), user: alice) } }
    }

    /// Claims from several connections at once (PostgreSQL: concurrent
    /// transactions on the same rows): every prekey goes to one claim.
    @Test(arguments: EngineKind.available)
    func concurrentClaimsNeverShareAPrekey(_ kind: EngineKind) async throws {
        let (engine, makeAnother) = try kind.make()
        _ = try groupRoom(engine)
        let device = IDs.uuid7()
        _ = try engine.write { try $0.publishDevice(keys(device, prekeys: 0..<40), user: bob) }
        let engines = try (0..<4).map { _ in try makeAnother() }
        let claims = try await withThrowingTaskGroup(of: [String?].self) { group in
            for engine in engines {
                group.addTask { try (0..<15).map { _ in try engine.write { try $0.claimKeys(of: bob, for: alice, claim: IDs.uuid7()) }.first?.oneTimePrekey } }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        let got = claims.compactMap { $0 }
        #expect(got.count == 40 && Set(got).count == 40, "\(got.count) claimed, \(Set(got).count) distinct")
        #expect(claims.count == 60)
    }

    @Test(arguments: EngineKind.available)
    func ciphertextsGoOnlyToMembersDevices(_ kind: EngineKind) throws {
        let (engine, _) = try kind.make()
        let room = try groupRoom(engine)
        let (bobs, mallorys) = (IDs.uuid7(), IDs.uuid7())
        _ = try engine.write { try $0.publishDevice(keys(bobs, prekeys: 0..<0), user: bob) }
        _ = try engine.write { try $0.publishDevice(keys(mallorys, prekeys: 0..<0), user: mallory) }
        try engine.write { try $0.markEncrypted(room: room) }
        #expect(try engine.read { try $0.encryptedRooms(among: [room, IDs.uuid7()]) } == [room])
        let message = IDs.uuid7()
        _ = try engine.write { tx in
            try tx.createMessage(Requests.MessageCreate(id: message, roomID: room, content: "", messageType: "encrypted", replyTo: nil, clientMsgID: nil),
                                 sender: identity("alice").user, maxChars: 5000)
        }
        #expect(throws: StoreError.self) {
            try engine.write { try $0.storeCiphertexts(message: message, room: room, [bobs: "Ym9i", mallorys: "bWFs"]) }
        }
        let stored = try engine.write { try $0.storeCiphertexts(message: message, room: room, [bobs: "Ym9i"]) }
        #expect(stored == [Ciphertext(deviceID: bobs, userID: bob, text: "Ym9i")])
        #expect(try engine.read { try $0.ciphertexts(messages: [message], device: bobs, viewer: bob) } == [message: "Ym9i"])
        // Another user naming bob's device gets nothing.
        #expect(try engine.read { try $0.ciphertexts(messages: [message], device: bobs, viewer: alice) }.isEmpty)
        try engine.write { try $0.dropCiphertexts(message: message) }
        #expect(try engine.read { try $0.ciphertexts(message: message) }.isEmpty)
    }
}
