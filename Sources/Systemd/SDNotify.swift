import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The sd_notify protocol (`man 3 sd_notify`): newline-separated `KEY=VALUE`
/// assignments in one datagram to the Unix socket named by `NOTIFY_SOCKET`
/// (a path, or `@name` for the abstract namespace). The supervisor speaks it
/// to systemd, and listens to it from its children, with the same codec; the
/// frontend and the workers speak it to the supervisor.
public enum SDNotify {
    /// Encodes assignments as one datagram.
    public static func encode(_ fields: KeyValuePairs<String, String>) -> [UInt8] {
        Array(fields.map { "\($0.key)=\($0.value)" }.joined(separator: "\n").utf8)
    }

    /// Decodes a datagram; malformed lines are skipped.
    public static func decode(_ datagram: [UInt8]) -> [String: String] {
        var fields: [String: String] = [:]
        for line in String(decoding: datagram, as: UTF8.self).split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            fields[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return fields
    }

    /// A `sockaddr_un` and its length for a Unix socket path: a NOTIFY_SOCKET
    /// value (a leading `@` is the abstract namespace), or the control socket.
    public static func address(_ path: String) -> (sockaddr_un, socklen_t)? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes[0] == 0 ? 0 : 1))
        return (address, length)
    }
}

/// Sends sd_notify datagrams to one socket. Does nothing without a socket
/// (not under systemd, not under a supervisor). Thread-safe.
public final class Notifier: Sendable {
    private let fd: Int32
    private let address: sockaddr_un?
    private let length: socklen_t

    /// - Parameter socketPath: `NOTIFY_SOCKET`; nil or empty disables it.
    public init(socketPath: String? = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"]) {
        if let socketPath, !socketPath.isEmpty, let (address, length) = SDNotify.address(socketPath) {
            self.fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            self.address = address
            self.length = length
        } else {
            self.fd = -1
            self.address = nil
            self.length = 0
        }
    }

    deinit { if fd >= 0 { close(fd) } }

    public var isEnabled: Bool { fd >= 0 }

    /// - Parameter blocking: false: fail at once (false) when the receiver's
    ///   queue is full, instead of waiting for room (`MSG_DONTWAIT`).
    @discardableResult
    public func send(_ fields: KeyValuePairs<String, String>, blocking: Bool = true) -> Bool {
        guard fd >= 0, var address else { return false }
        let datagram = SDNotify.encode(fields)
        let flags = Int32(MSG_NOSIGNAL) | (blocking ? 0 : Int32(MSG_DONTWAIT))
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddr in
                datagram.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, flags, sockaddr, length) }
            }
        }
        return sent == datagram.count
    }
}

