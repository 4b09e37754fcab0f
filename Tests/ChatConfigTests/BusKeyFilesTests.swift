import ChatConfig
import ChatWire
import Foundation
import Testing

/// `bus.key` and `bus.peerKeys`: read, checked against the bus, and every
/// mistake a start-up error that names the file.
@Suite struct BusKeyFilesTests {
    // ZeroMQ's published example pairs (zmq_curve(7)): valid Z85 keys.
    static let server = (public: "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", secret: "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6")
    static let client = (public: "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID", secret: "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs")

    /// A directory with a key pair file (0600) and a peers file.
    final class Files {
        let dir: String
        var keyFile: String { dir + "/bus.key" }
        var peersFile: String { dir + "/peers" }

        init(pair: (public: String, secret: String), peers: String, mode: mode_t = 0o600) throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-keys-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try BusKeyFiles.keyPairText(publicKey: pair.public, secretKey: pair.secret, host: "h").write(toFile: keyFile, atomically: true, encoding: .utf8)
            chmod(keyFile, mode)
            try peers.write(toFile: peersFile, atomically: true, encoding: .utf8)
        }

        func environment(bus: String, run: String) -> [String: String] {
            ["CHAT_BUS": bus, "CHAT_RUN": run, "CHAT_BUS_KEY": keyFile, "CHAT_BUS_PEER_KEYS": peersFile]
        }

        deinit { try? FileManager.default.removeItem(atPath: dir) }
    }

    static let peers = """
        # the deployment's hosts
        \(server.public) front-1 tcp://10.0.0.5:7400
        \(client.public)   worker-1   # no broker here

        """

    func error(_ environment: [String: String]) async -> String? {
        do {
            _ = try await ChatConfig.load(file: nil, environment: environment)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func aWorkersHostTrustsTheBrokersListedKeyAndNeedsNoInsecureFlag() async throws {
        let files = try Files(pair: Self.client, peers: Self.peers)
        let config = try await ChatConfig.load(file: nil, environment: files.environment(bus: "tcp://10.0.0.5:7400", run: "workers"))
        let keys = try #require(config.busKeys)
        #expect(keys.publicKey == Self.client.public && keys.secretKey == Self.client.secret)
        #expect(keys.peers == [
            BusKeys.Peer(publicKey: Self.server.public, host: "front-1", broker: "tcp://10.0.0.5:7400"),
            BusKeys.Peer(publicKey: Self.client.public, host: "worker-1"),
        ])
        #expect(keys.serverKey(for: .tcp(host: "10.0.0.5", basePort: 7400)) == Self.server.public)
        #expect(keys.serverKey(for: .tcp(host: "10.0.0.5", basePort: 7500)) == nil)
        #expect(keys.allowed == [Self.server.public, Self.client.public])
        // Keys make a non-loopback bus acceptable; the secret is not in the description.
        try config.checkBusExposure()
        #expect(!"\(keys)".contains(Self.client.secret))
        let plain = try await ChatConfig.load(file: nil, environment: ["CHAT_BUS": "tcp://10.0.0.5:7400", "CHAT_RUN": "workers"])
        #expect(throws: ConfigError.self) { try plain.checkBusExposure() }
    }

    @Test func theBrokersHostMustBeListedUnderItsOwnKey() async throws {
        let files = try Files(pair: Self.server, peers: Self.peers)
        _ = try await ChatConfig.load(file: nil, environment: files.environment(bus: "tcp://10.0.0.5:7400", run: "frontend"))
        let impostor = try Files(pair: Self.client, peers: Self.peers)
        let text = try #require(await error(impostor.environment(bus: "tcp://10.0.0.5:7400", run: "frontend")))
        #expect(text.contains(impostor.peersFile) && text.contains("which this host runs"), "\(text)")
        let unlisted = try #require(await error(files.environment(bus: "tcp://10.0.0.9:7400", run: "workers")))
        #expect(unlisted.contains("lists no key for the broker at tcp://10.0.0.9:7400"), "\(unlisted)")
    }

    /// Several frontend hosts: the workers link to every `peers:` broker, so
    /// each needs its key; with keys, non-loopback peers need no `bus.insecure`.
    @Test func everyPeerBrokerMustBeListedAndKeysMakePeersAcceptable() async throws {
        let peers = ["CHAT_RUN": "workers", "CHAT_PEERS": "tcp://10.0.0.5:7400,tcp://10.0.0.6:7400"]
        let files = try Files(pair: Self.client, peers: Self.peers)
        let keyed = peers.merging(["CHAT_BUS_KEY": files.keyFile, "CHAT_BUS_PEER_KEYS": files.peersFile]) { $1 }
        let missing = try #require(await error(keyed))
        #expect(missing.contains("lists no key for the broker at tcp://10.0.0.6:7400 (peers:)"), "\(missing)")
        let both = try Files(pair: Self.client, peers: Self.peers + "\(Self.server.public) front-2 tcp://10.0.0.6:7400\n")
        let config = try await ChatConfig.load(file: nil, environment: peers.merging(["CHAT_BUS_KEY": both.keyFile, "CHAT_BUS_PEER_KEYS": both.peersFile]) { $1 })
        try config.checkPeerExposure()
        let plain = try await ChatConfig.load(file: nil, environment: peers)
        #expect(throws: ConfigError.self) { try plain.checkPeerExposure() }
    }

    @Test func aMissingOrUnreadableOrOpenKeyFileIsNamed() async throws {
        let files = try Files(pair: Self.client, peers: Self.peers)
        var environment = files.environment(bus: "tcp://10.0.0.5:7400", run: "workers")
        environment["CHAT_BUS_KEY"] = files.dir + "/absent.key"
        let missing = try #require(await error(environment))
        #expect(missing.contains(files.dir + "/absent.key: no such file"), "\(missing)")
        let open = try Files(pair: Self.client, peers: Self.peers, mode: 0o644)
        let text = try #require(await error(open.environment(bus: "tcp://10.0.0.5:7400", run: "workers")))
        #expect(text.contains(open.keyFile) && text.contains("chmod 600"), "\(text)")
    }

    @Test func aPeersFileOthersMayWriteIsRefused() async throws {
        let files = try Files(pair: Self.client, peers: Self.peers)
        let environment = files.environment(bus: "tcp://10.0.0.5:7400", run: "workers")
        for mode: mode_t in [0o664, 0o646] {
            chmod(files.peersFile, mode)
            let text = try #require(await error(environment), "mode \(String(mode, radix: 8))")
            #expect(text.contains(files.peersFile) && text.contains("lets others write"), "\(text)")
        }
        // Readable by all is fine: it holds public keys only.
        chmod(files.peersFile, 0o644)
        #expect(await error(environment) == nil)
    }

    @Test func malformedFilesAreRefusedWithTheirLine() async throws {
        let cases: [(peers: String, expected: String)] = [
            ("\(Self.server.public) front-1 tcp://10.0.0.5:7400\nnot-a-key worker-1\n", "peers:2: not-a-key is not a public key"),
            ("\(Self.server.public)\n", "peers:1: expected `<public key> <host name>"),
            ("\(Self.server.public) front-1 10.0.0.5:7400\n", "peers:1: 10.0.0.5:7400: a broker is tcp://"),
            ("\(Self.server.public) front-1 tcp://10.0.0.5:7400\n\(Self.client.public) w tcp://10.0.0.5:7400\n", "peers:2: tcp://10.0.0.5:7400 is already listed on line 1"),
            ("# nobody\n", "peers: lists no keys"),
        ]
        for (peers, expected) in cases {
            let files = try Files(pair: Self.client, peers: peers)
            let text = try #require(await error(files.environment(bus: "tcp://10.0.0.5:7400", run: "workers")))
            #expect(text.contains("bus.peerKeys") && text.contains(expected), "\(text)")
        }
        let files = try Files(pair: Self.client, peers: Self.peers)
        try "public-key \(Self.client.public)\n".write(toFile: files.keyFile, atomically: false, encoding: .utf8)
        let half = try #require(await error(files.environment(bus: "tcp://10.0.0.5:7400", run: "workers")))
        #expect(half.contains("bus.key") && half.contains("needs both"), "\(half)")
    }

    @Test func oneFileWithoutTheOtherIsRefused() async throws {
        let files = try Files(pair: Self.client, peers: Self.peers)
        var environment = files.environment(bus: "tcp://10.0.0.5:7400", run: "workers")
        environment["CHAT_BUS_PEER_KEYS"] = nil
        let text = try #require(await error(environment))
        #expect(text.contains("bus.peerKeys") && text.contains("needs the peers file"), "\(text)")
    }

    @Test func aKeyMayHoldAHashWhichElsewhereStartsAComment() async throws {
        // Z85 has `#` (never first in a key: its value is too large there).
        let hashed = String(Self.server.public.prefix(1)) + "#" + String(Self.server.public.dropFirst(2))
        #expect(Z85.isKey(hashed) && !Z85.isKey("#" + String(Self.server.public.dropFirst())))
        let files = try Files(pair: Self.client, peers: """
            #\(Self.client.public) commented-out
            \(hashed) front-1 tcp://10.0.0.5:7400 # its broker
            \(Self.client.public) worker-1
            """)
        let config = try await ChatConfig.load(file: nil, environment: files.environment(bus: "tcp://10.0.0.5:7400", run: "workers"))
        #expect(config.busKeys?.peers.map(\.host) == ["front-1", "worker-1"])
        #expect(config.busKeys?.serverKey(for: .tcp(host: "10.0.0.5", basePort: 7400)) == hashed)
    }

    @Test func z85KeysAreCheckedWhole() {
        #expect(Z85.isKey(Self.server.public))
        #expect(!Z85.isKey(String(Self.server.public.dropLast())))
        #expect(!Z85.isKey(String(repeating: "#", count: 40)))  // each group above 2^32
        #expect(!Z85.isKey(String(repeating: "\"", count: 40)))
    }
}
