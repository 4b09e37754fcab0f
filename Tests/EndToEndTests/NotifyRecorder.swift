import ChatTesting
import Foundation

/// A Unix datagram socket standing in for systemd's NOTIFY_SOCKET.
final class NotifySocket: @unchecked Sendable {
    let path: String
    let fd: Int32

    init() throws {
        path = "/tmp/chatd-notify-\(UInt32.random(in: 0...UInt32.max)).sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw TestServerError(description: "bind \(path): \(errno)") }
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// The next datagram's fields, or nil after `timeout`.
    func receive(timeout: Double) -> [String: String]? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, Int32(timeout * 1000)) > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        var fields: [String: String] = [:]
        for line in String(decoding: buffer[0..<count], as: UTF8.self).split(separator: "\n") {
            let pair = line.split(separator: "=", maxSplits: 1)
            if pair.count == 2 { fields[String(pair[0])] = String(pair[1]) }
        }
        return fields
    }
}

/// What systemd would see from chatd through a fake NOTIFY_SOCKET: each
/// datagram, when it came, and what the test looked up as it came (`Seen`:
/// the reader thread asks before it reads the next one, so the answer is
/// what was true at that datagram).
final class NotifyRecorder<Seen>: @unchecked Sendable {
    struct Entry {
        var fields: [String: String]
        var time: Date
        var seen: Seen
    }

    private let lock = NSLock()
    private var stored: [Entry] = []
    private var stop = false

    /// Set to end the reader thread.
    var done: Bool {
        get { lock.withLock { stop } }
        set { lock.withLock { stop = newValue } }
    }

    var entries: [Entry] { lock.withLock { stored } }
    var readies: [Entry] { entries.filter { $0.fields["READY"] == "1" } }

    /// WATCHDOG=1 datagrams since the first READY=1.
    var watchdogsAfterReady: Int {
        let all = entries
        guard let ready = all.firstIndex(where: { $0.fields["READY"] == "1" }) else { return 0 }
        return all[ready...].filter { $0.fields["WATCHDOG"] == "1" }.count
    }

    /// Reads `socket` on a thread of its own until `done`, calling `look` for each datagram.
    func read(_ socket: NotifySocket, look: @escaping @Sendable ([String: String]) -> Seen) {
        Thread { [self] in
            while !done {
                guard let fields = socket.receive(timeout: 0.1) else { continue }
                let seen = look(fields)
                lock.withLock { stored.append(Entry(fields: fields, time: Date(), seen: seen)) }
            }
        }.start()
    }
}
