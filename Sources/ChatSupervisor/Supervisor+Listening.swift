import ChatConfig
import Foundation
import Systemd
#if canImport(Glibc)
import Glibc
#endif

/// The frontend's listening socket, held by the supervisor for the life of
/// the service and handed to every frontend (`CHATD_LISTEN_FD`): while none
/// runs (a restart), connections wait in its backlog instead of being refused.
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
        } else if config.run.runsFrontend {
            guard let (host, port) = config.listenAddress else { throw ConfigError.invalid("listen", config.listen) }
            listeningSocket = try Self.bindListening(host: host, port: port)
        }
        if let address = listeningSocket?.address { logger.info("listening on \(address)") }
    }

    /// During a stop, once the frontend is gone: closes the supervisor's copy,
    /// so that new connections are refused instead of waiting unanswered in
    /// the backlog until the supervisor exits. With socket activation systemd
    /// keeps its own copy, and the connections wait for the next start there.
    func closeListeningSocket() {
        guard stopping, let socket = listeningSocket else { return }
        // No frontend is spawned while stopping, so the number is not handed on after this.
        close(socket.fd)
        listeningSocket = nil
    }

    /// A TCP socket bound to `host:port` (port 0: any free port) and listening.
    static func bindListening(host: String, port: Int) throws -> ListeningSocket {
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
            // 4096: chatd.socket's Backlog= (the kernel caps it at somaxconn).
            if bind(fd, info.ai_addr, info.ai_addrlen) == 0, listen(fd, 4096) == 0 {
                return ListeningSocket(fd: fd, address: localAddress(fd))
            }
            failure = String(cString: strerror(errno))
            close(fd)
        }
        throw ConfigError.invalid("listen", "\(host):\(port): \(failure)")
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
