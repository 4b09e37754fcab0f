import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// systemd's socket activation (sd_listen_fds(3)): the listening socket
/// the service was started with, for the frontend to serve.
public enum SocketActivation {
    /// The first descriptor systemd passes.
    public static let firstFD: CInt = 3

    /// Which passed descriptor to serve, from the values of `LISTEN_FDS`,
    /// `LISTEN_PID` and `LISTEN_FDNAMES`: the one named `http`
    /// (`FileDescriptorName=`), or the first; nil when nothing was passed to
    /// the process `pid`. Pure, so the variables' rules are unit-tested.
    public static func descriptor(listenFDs: String?, listenPID: String?, names: String?, pid: pid_t) -> CInt? {
        guard let count = listenFDs.flatMap(Int.init), count > 0, listenPID.flatMap(pid_t.init) == pid else { return nil }
        let names = names?.split(separator: ":", omittingEmptySubsequences: false).map(String.init) ?? []
        return firstFD + CInt(names.prefix(count).firstIndex(of: "http") ?? 0)
    }

    /// The passed socket (see `descriptor`), checked to be listening; nil
    /// when nothing was passed to this process. Clears the variables, so
    /// that no child takes them for its own.
    public static func listeningSocket() throws -> CInt? {
        let environment = ProcessInfo.processInfo.environment
        defer { for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] { unsetenv(name) } }
        guard let fd = descriptor(
            listenFDs: environment["LISTEN_FDS"], listenPID: environment["LISTEN_PID"], names: environment["LISTEN_FDNAMES"], pid: getpid()
        ) else { return nil }
        var listening: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0, listening == 1 else {
            throw SocketActivationError(fd: fd)
        }
        return fd
    }
}

public struct SocketActivationError: Error, CustomStringConvertible {
    public let fd: CInt
    public var description: String {
        "LISTEN_FDS: descriptor \(fd) is not a listening socket (the socket unit needs ListenStream= and Accept=no)"
    }
}
