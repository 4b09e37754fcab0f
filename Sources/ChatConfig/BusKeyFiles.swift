import ChatWire
import Foundation

/// The two files of an authenticated bus (docs/operations.md, "Bus keys"):
/// this host's key pair (`bus.key`, written by `chatd keygen`) and every
/// host's public key (`bus.peerKeys`).
public enum BusKeyFiles {
    /// The key pair file's text: comments, then `public-key` and `secret-key` lines.
    public static func keyPairText(publicKey: String, secretKey: String, host: String) -> String {
        """
        # chatd bus key pair of \(host), written by `chatd keygen`.
        # Secret: keep it mode 0600, owned by chatd's user, on this host only.
        # Its public key goes on this host's line of every host's peers file
        # (bus.peerKeys): \(publicKey) \(host) [tcp://<broker address>:<port>]
        public-key \(publicKey)
        secret-key \(secretKey)

        """
    }

    /// The line of the peers file that lists this host.
    public static func peerLine(publicKey: String, host: String, broker: String?) -> String {
        ([publicKey, host] + (broker.map { [$0] } ?? [])).joined(separator: " ")
    }

    /// Reads the key pair at `path`. Refuses a file others may read: a
    /// secret key anyone on the host can copy authenticates nothing.
    public static func readKeyPair(_ path: String) throws -> (publicKey: String, secretKey: String) {
        let text = try readPrivate(path, key: "bus.key")
        var fields: [String: String] = [:]
        for (number, line) in lines(text) {
            let words = line.split(whereSeparator: \.isWhitespace).map(String.init)
            guard words.count == 2, ["public-key", "secret-key"].contains(words[0]), fields[words[0]] == nil else {
                throw ConfigError.invalid("bus.key", "\(path):\(number): expected `public-key <key>` and `secret-key <key>` once each (a file `chatd keygen` wrote)")
            }
            guard Z85.isKey(words[1]) else { throw ConfigError.invalid("bus.key", "\(path):\(number): not a key (40 characters of Z85)") }
            fields[words[0]] = words[1]
        }
        guard let publicKey = fields["public-key"], let secretKey = fields["secret-key"] else {
            throw ConfigError.invalid("bus.key", "\(path): needs both a public-key and a secret-key line (a file `chatd keygen` wrote)")
        }
        return (publicKey, secretKey)
    }

    /// Reads the peers file: one line per host, `<public key> <host>
    /// [tcp://<broker>:<port>]`; `#` starts a comment. A broker address may
    /// be listed once (a broker has one key).
    public static func readPeers(_ path: String) throws -> [BusKeys.Peer] {
        let text = try read(path, key: "bus.peerKeys")
        // The allow-list: whoever may write it may let any host onto the bus.
        var info = stat()
        if stat(path, &info) == 0, info.st_mode & 0o022 != 0 {
            throw ConfigError.invalid("bus.peerKeys", "\(path): mode \(String(info.st_mode & 0o777, radix: 8)) lets others write the allow-list; chmod go-w it")
        }
        var peers: [BusKeys.Peer] = []
        var brokers: [String: Int] = [:]
        for (number, line) in lines(text) {
            let words = line.split(whereSeparator: \.isWhitespace).map(String.init)
            let place = "\(path):\(number)"
            guard (2...3).contains(words.count) else {
                throw ConfigError.invalid("bus.peerKeys", "\(place): expected `<public key> <host name> [tcp://<broker address>:<port>]`")
            }
            guard Z85.isKey(words[0]) else { throw ConfigError.invalid("bus.peerKeys", "\(place): \(words[0]) is not a public key (40 characters of Z85)") }
            let broker = words.count == 3 ? words[2] : nil
            if let broker {
                guard let address = BusKeys.hostAndPort(broker) else {
                    throw ConfigError.invalid("bus.peerKeys", "\(place): \(broker): a broker is tcp://<address>:<port>, as its bus: says")
                }
                let canonical = "\(address.host.lowercased()):\(address.port)"
                if let first = brokers[canonical] {
                    throw ConfigError.invalid("bus.peerKeys", "\(place): \(broker) is already listed on line \(first): a broker has one key (while rotating it, list the address only on the key it uses)")
                }
                brokers[canonical] = number
            }
            peers.append(BusKeys.Peer(publicKey: words[0], host: words[1], broker: broker))
        }
        guard !peers.isEmpty else { throw ConfigError.invalid("bus.peerKeys", "\(path): lists no keys") }
        return peers
    }

    /// Both files, checked against the bus this host uses: the broker at
    /// `bus` must be listed, and with its own key when this host runs it.
    public static func load(keyFile: String, peersFile: String, bus: BusAddress, runsBroker: Bool) throws -> BusKeys {
        let pair = try readKeyPair(keyFile)
        let keys = BusKeys(publicKey: pair.publicKey, secretKey: pair.secretKey, peers: try readPeers(peersFile))
        guard case .tcp(let host, let port) = bus else { return keys }
        guard let brokerKey = keys.serverKey(for: bus) else {
            throw ConfigError.invalid("bus.peerKeys", "\(peersFile) lists no key for the broker at tcp://\(host):\(port): add `<its public key> <its host name> tcp://\(host):\(port)`")
        }
        if runsBroker && brokerKey != keys.publicKey {
            throw ConfigError.invalid("bus.peerKeys", "\(peersFile) gives the broker at tcp://\(host):\(port), which this host runs, the key \(brokerKey), but this host's key (\(keyFile)) is \(keys.publicKey)")
        }
        return keys
    }

    /// Numbered lines without comments and blank ones. Z85 has `#` in its
    /// alphabet, but no space, and never first in a key (its value, 84, is
    /// past what a five-character group's first digit can be); so a `#`
    /// starts a comment at the start of a line or after a space.
    static func lines(_ text: String) -> [(Int, String)] {
        text.split(separator: "\n", omittingEmptySubsequences: false).enumerated().compactMap { index, raw in
            var line = raw.trimmingCharacters(in: .whitespaces)[...]
            if let hash = line.indices.first(where: { line[$0] == "#" && $0 > line.startIndex && line[line.index(before: $0)].isWhitespace }) {
                line = line[..<hash]
            }
            if line.hasPrefix("#") { return nil }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            return trimmed.isEmpty ? nil : (index + 1, trimmed)
        }
    }

    static func read(_ path: String, key: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read by this user" : "no such file"
            throw ConfigError.invalid(key, "\(path): \(reason)")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw ConfigError.invalid(key, "\(path): not UTF-8 text") }
        return text
    }

    static func readPrivate(_ path: String, key: String) throws -> String {
        let text = try read(path, key: key)
        var info = stat()
        if stat(path, &info) == 0, info.st_mode & 0o077 != 0 {
            throw ConfigError.invalid(key, "\(path): mode \(String(info.st_mode & 0o777, radix: 8)) lets others read the secret key; chmod 600 it")
        }
        return text
    }
}
