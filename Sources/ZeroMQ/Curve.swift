import CZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// CURVE (ZMTP's CurveZMQ, RFC 26): a Curve25519 handshake, then every frame
/// encrypted and authenticated. Keys are 32 bytes, written as 40 characters
/// of Z85 (ZeroMQ's base-85 text, RFC 32).
public enum Curve {
    /// Whether this libzmq was built with CURVE (libsodium or tweetnacl).
    /// Debian's libzmq5 is; a build without it would silently talk in clear
    /// text, so callers check this first.
    public static var isAvailable: Bool { zmq_has("curve") != 0 }

    /// A key pair, Z85 text.
    public struct KeyPair: Sendable, Equatable {
        public var publicKey: String
        public var secretKey: String
    }

    /// A new random key pair (`zmq_curve_keypair`).
    public static func keyPair() throws -> KeyPair {
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else { throw ZMQError("zmq_curve_keypair") }
        return KeyPair(publicKey: string(pub), secretKey: string(sec))
    }

    /// The public key of a secret key (`zmq_curve_public`); nil when the text
    /// is not a Z85 key.
    public static func publicKey(secret: String) -> String? {
        guard secret.utf8.count == 40 else { return nil }
        var pub = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&pub, secret) == 0 else { return nil }
        return string(pub)
    }

    /// A 32-byte key as Z85 text (how ZAP's binary credentials are logged and compared).
    public static func z85(_ key: [UInt8]) -> String? {
        guard key.count == 32 else { return nil }
        var text = [CChar](repeating: 0, count: 41)
        guard zmq_z85_encode(&text, key, key.count) != nil else { return nil }
        return string(text)
    }

    private static func string(_ chars: [CChar]) -> String {
        String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension Socket {
    /// Sets a string option (Z85 keys, the ZAP domain). Keys given as 40
    /// characters are taken as Z85 by libzmq.
    public func setOption(_ option: Int32, string: String) throws {
        try setOption(option, bytes: Array(string.utf8))
    }

    /// This socket is a CURVE server (it holds the secret key clients were
    /// told the public half of) and asks the ZAP handler of its context about
    /// every client, under `domain`. Set before `bind`.
    ///
    /// With `ZMQ_ZAP_ENFORCE_DOMAIN` set, a handshake that finds no ZAP
    /// handler answering fails; without it libzmq 4.3 lets every client in
    /// when the handler is gone (RFC 27's old rule), so an allow-list whose
    /// thread died would silently become "anyone with the server's key".
    public func setCurveServer(secretKey: String, zapDomain: String) throws {
        try setOption(ZMQ_CURVE_SERVER, Int32(1))
        try setOption(ZMQ_CURVE_SECRETKEY, string: secretKey)
        try setOption(ZMQ_ZAP_DOMAIN, string: zapDomain)
        try setOption(Self.zapEnforceDomain, Int32(1))
    }

    /// `ZMQ_ZAP_ENFORCE_DOMAIN`: a draft option in zmq.h (hidden without
    /// ZMQ_BUILD_DRAFT_API), accepted by Debian's libzmq5 4.3.4.
    static let zapEnforceDomain: Int32 = 93

    /// This socket is a CURVE client: it talks only to the server holding
    /// `serverKey`'s secret half, and shows its own public key (which the
    /// server's ZAP handler checks). Set before `connect`.
    public func setCurveClient(serverKey: String, publicKey: String, secretKey: String) throws {
        try setOption(ZMQ_CURVE_SERVERKEY, string: serverKey)
        try setOption(ZMQ_CURVE_PUBLICKEY, string: publicKey)
        try setOption(ZMQ_CURVE_SECRETKEY, string: secretKey)
    }

    /// ZMTP heartbeats (`ZMQ_HEARTBEAT_IVL`, `_TIMEOUT`, `_TTL`): a PING every
    /// `interval` ms; a connection that brings nothing (no PONG, no data) for
    /// `timeout` ms is closed, and the peer is told to close it after `ttl`
    /// ms of silence from this side. Applies to connections made after.
    public func setHeartbeat(intervalMilliseconds: Int32, timeoutMilliseconds: Int32, ttlMilliseconds: Int32) throws {
        try setOption(ZMQ_HEARTBEAT_IVL, intervalMilliseconds)
        try setOption(ZMQ_HEARTBEAT_TIMEOUT, timeoutMilliseconds)
        try setOption(ZMQ_HEARTBEAT_TTL, ttlMilliseconds)
    }
}
