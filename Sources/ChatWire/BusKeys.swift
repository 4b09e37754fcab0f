/// The CURVE keys of a `tcp://` bus (docs/protocol.md, "Security"): this
/// host's key pair (`bus.key`) and every host's public key (`bus.peerKeys`).
/// A broker accepts a client only if its key is listed here (or is this
/// host's own); a client connecting to a broker trusts the key listed for
/// that broker's address.
public struct BusKeys: Sendable, Equatable, CustomStringConvertible {
    /// This host's public key, Z85.
    public var publicKey: String
    /// This host's secret key, Z85. Never logged (`description` leaves it out).
    public var secretKey: String
    /// The peers file's lines, in order.
    public var peers: [Peer]

    /// One line of the peers file: `<public key> <host> [tcp://<broker>:<port>]`.
    public struct Peer: Sendable, Equatable {
        public var publicKey: String
        public var host: String
        /// The bus address of the broker this host runs (`tcp://host:port`,
        /// as `bus:` spells it), if it runs one.
        public var broker: String?

        public init(publicKey: String, host: String, broker: String? = nil) {
            self.publicKey = publicKey
            self.host = host
            self.broker = broker
        }
    }

    /// The ZAP domain of the broker's sockets: what its handler is asked about.
    public static let zapDomain = "chatd"

    public init(publicKey: String, secretKey: String, peers: [Peer]) {
        self.publicKey = publicKey
        self.secretKey = secretKey
        self.peers = peers
    }

    /// The keys a broker lets in: every peer's and this host's own (its own
    /// frontends and workers connect with it).
    public var allowed: Set<String> { Set(peers.map(\.publicKey) + [publicKey]) }

    /// The key of the broker at `bus`: the peer line listing that address
    /// (host compared without case, port as a number); nil when none does
    /// or the bus is not `tcp://`.
    public func serverKey(for bus: BusAddress) -> String? {
        guard case .tcp(let host, let port) = bus else { return nil }
        return peers.first { peer in
            guard let broker = peer.broker.flatMap(Self.hostAndPort) else { return false }
            return broker.host.lowercased() == host.lowercased() && broker.port == port
        }?.publicKey
    }

    public var description: String { "BusKeys(public: \(publicKey), peers: \(peers.count))" }

    /// `tcp://host:port` split; nil for anything else. The one parser of a
    /// tcp bus address (`bus:` and the peers file's broker addresses). The
    /// port is the bus's base port: the queues' ports follow it, so it stops
    /// at 65,000.
    public static func hostAndPort(_ address: String) -> (host: String, port: Int)? {
        guard address.hasPrefix("tcp://") else { return nil }
        let rest = address.dropFirst(6)
        guard let colon = rest.lastIndex(of: ":"), colon > rest.startIndex,
            let port = Int(rest[rest.index(after: colon)...]), (1...65000).contains(port)
        else { return nil }
        return (String(rest[..<colon]), port)
    }
}

/// Z85 (ZeroMQ RFC 32), as far as keys need it: whether text is a 32-byte key.
public enum Z85 {
    static let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)

    /// 40 characters of the alphabet, each group of five a value below 2^32.
    public static func isKey(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 40 else { return false }
        for start in stride(from: 0, to: 40, by: 5) {
            var value: UInt64 = 0
            for byte in bytes[start..<start + 5] {
                guard let digit = alphabet.firstIndex(of: byte) else { return false }
                value = value * 85 + UInt64(digit)
            }
            guard value <= UInt64(UInt32.max) else { return false }
        }
        return true
    }
}
