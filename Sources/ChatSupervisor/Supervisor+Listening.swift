import ChatConfig
import Foundation
import Systemd
#if canImport(Glibc)
import Glibc
#endif

/// A listening socket of the frontends, held by the supervisor for the life of the
/// service and handed to a frontend (`CHATD_LISTEN_FD`): while none runs (a
/// restart), connections wait in its backlog instead of being refused.
///
/// Several frontends do not share one socket when the supervisor binds it:
/// every process polling the same socket wakes for every connection and all
/// but one find nothing to accept (SwiftNIO asserts against that in debug
/// builds, and the wake-ups cost CPU). Each slot gets its own socket on the
/// same address with SO_REUSEPORT instead, and the kernel spreads
/// connections over them by their addresses. systemd's one socket
/// (chatd.socket) is shared by every frontend.
struct ListeningSocket {
    let fd: CInt
    /// What it is bound to, `127.0.0.1:8000` or `[::1]:8000`: with `listen`
    /// on port 0, the port the kernel chose.
    let address: String?
}

extension Supervisor {
    /// The socket systemd passed (chatd.socket), or else, on a host that runs
    /// the frontend, `listen` bound here; logged as `listening on <address>`.
    func openListeningSocket() throws {
        if let fd = try SocketActivation.listeningSocket() {
            listeningSocket = ListeningSocket(fd: fd, address: Self.localAddress(fd))
            socketActivated = true
        } else if config.run.runsFrontend {
            guard let (host, port) = config.listenAddress else { throw ConfigError.invalid("listen", config.listen) }
            listeningSocket = try Self.bindListening(host: host, port: port, reusePort: true)
        }
        if let address = listeningSocket?.address { logger.info("listening on \(address)") }
    }

    /// During a stop, once the frontend is gone: closes the supervisor's copy,
    /// so that new connections are refused instead of waiting unanswered in
    /// the backlog until the supervisor exits. With socket activation systemd
    /// keeps its own copy, and the connections wait for the next start there.
    func closeListeningSocket() {
        guard stopping else { return }
        // No frontend is spawned while stopping, so the number is not handed on after this.
        if let socket = listeningSocket { close(socket.fd) }
        listeningSocket = nil
        for slot in Array(slotSockets.keys) { closeSlotSocket(slot) }
    }

    /// The socket frontend `slot` serves: slot 0's is `listeningSocket`
    /// (with socket activation every slot's is); another slot's is bound on
    /// first use beside it, and so is slot 0's again once it was closed
    /// (`releaseSocket`). If that fails the slot shares a sibling's. Sockets
    /// kept for slots whose frontend is down are closed: this one's backlog
    /// holds what comes until its frontend is up.
    func listeningSocket(forSlot slot: Int) -> ListeningSocket? {
        if socketActivated { return listeningSocket }
        if let own = slotSocket(slot) { return own }
        // The port is ours while one of our sockets is bound: slot 0's, or a sibling's.
        guard let open = listeningSocket ?? slotSockets.values.first else { return nil }
        guard let host = config.listenAddress?.host, let port = open.address?.split(separator: ":").last.flatMap({ Int($0) }) else {
            return open
        }
        do {
            let own = try Self.bindListening(host: host, port: port, reusePort: true, joining: true)
            if slot == 0 { listeningSocket = own } else { slotSockets[slot] = own }
            for other in frontendSlotsWithSockets where other != slot && children[.frontend(other)]?.process == nil {
                closeSlotSocket(other)
            }
            return own
        } catch {
            logger.error("\(ChildName.frontend(slot)) shares a sibling's socket", metadata: ["error": "\(error)"])
            return open
        }
    }

    /// Slot `slot`'s own socket, if open (never systemd's).
    func slotSocket(_ slot: Int) -> ListeningSocket? {
        slot == 0 ? listeningSocket : slotSockets[slot]
    }

    private var frontendSlotsWithSockets: [Int] {
        (listeningSocket == nil ? [] : [0]) + slotSockets.keys.sorted()
    }

    /// Frontend `slot` stops for a planned restart, or has exited: its socket
    /// is closed so that new connections go to its siblings' instead of
    /// waiting in its backlog through the gap (a crash backoff may last 30 s).
    /// Kept while no sibling with a socket of its own runs: then connections
    /// wait in it for the restart, as with one frontend, and the port stays ours.
    /// Its next process gets a fresh one (`listeningSocket(forSlot:)`).
    func releaseSocket(ofSlot slot: Int) {
        guard !stopping, !socketActivated, slotSocket(slot) != nil else { return }
        let siblingServes = frontendSlotsWithSockets.contains { other in
            other != slot && children[.frontend(other)]?.process != nil
        }
        if siblingServes { closeSlotSocket(slot) }
    }

    /// Closes slot `slot`'s own socket. A slot retired by a reload may hold
    /// the last one open: a remaining slot binds its own first, so that the
    /// port stays ours.
    func closeSlotSocket(_ slot: Int, keepingPortFor remaining: Int? = nil) {
        if let remaining, !stopping, !socketActivated, frontendSlotsWithSockets == [slot] { _ = listeningSocket(forSlot: remaining) }
        if slot == 0 {
            guard let socket = listeningSocket else { return }
            close(socket.fd)
            listeningSocket = nil
        } else {
            guard let socket = slotSockets.removeValue(forKey: slot) else { return }
            close(socket.fd)
        }
    }

    /// A TCP socket bound to `host:port` (port 0: any free port) and listening.
    /// - Parameters:
    ///   - reusePort: SO_REUSEPORT, so that frontend slots can bind beside it.
    ///   - joining: it joins sockets of ours already there; without it, a port
    ///     someone listens on is refused even with `reusePort`, so that a
    ///     second chatd of the same user does not quietly share the port.
    static func bindListening(host: String, port: Int, reusePort: Bool = false, joining: Bool = false) throws -> ListeningSocket {
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(host, String(port), &hints, &list)
        guard resolved == 0, let first = list else {
            throw ConfigError.invalid("listen", "\(host):\(port): \(String(cString: gai_strerror(resolved)))")
        }
        defer { freeaddrinfo(list) }
        var failure = "no address"
        for entry in sequence(first: first, next: { $0.pointee.ai_next }) {
            let info = entry.pointee
            let fd = socket(info.ai_family, info.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), info.ai_protocol)
            guard fd >= 0 else { continue }
            var on: CInt = 1
            // A restarted server takes its port back while old connections sit in TIME_WAIT.
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<CInt>.size))
            if reusePort && !joining && port != 0 && !Self.portFree(info) {
                failure = String(cString: strerror(EADDRINUSE))
                close(fd)
                continue
            }
            if reusePort { setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, socklen_t(MemoryLayout<CInt>.size)) }
            // 4096: chatd.socket's Backlog= (the kernel caps it at somaxconn).
            if bind(fd, info.ai_addr, info.ai_addrlen) == 0, listen(fd, 4096) == 0 {
                return ListeningSocket(fd: fd, address: localAddress(fd))
            }
            failure = String(cString: strerror(errno))
            close(fd)
        }
        throw ConfigError.invalid("listen", "\(host):\(port): \(failure)")
    }

    /// Nobody listens on the address: a socket without SO_REUSEPORT binds it.
    private static func portFree(_ info: addrinfo) -> Bool {
        let probe = socket(info.ai_family, info.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), info.ai_protocol)
        guard probe >= 0 else { return false }
        defer { close(probe) }
        var on: CInt = 1
        setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<CInt>.size))
        return bind(probe, info.ai_addr, info.ai_addrlen) == 0
    }

    /// `host:port` a socket is bound to, numeric (IPv6 in brackets).
    static func localAddress(_ fd: CInt) -> String? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                getsockname(fd, address, &length) == 0
                    && getnameinfo(address, length, &host, socklen_t(host.count), &service, socklen_t(service.count), NI_NUMERICHOST | NI_NUMERICSERV) == 0
            }
        }
        guard named else { return nil }
        func text(_ chars: [CChar]) -> String { String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        let name = text(host)
        return "\(name.contains(":") ? "[\(name)]" : name):\(text(service))"
    }
}
