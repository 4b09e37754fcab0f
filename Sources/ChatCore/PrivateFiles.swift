import Foundation

/// Everything chatd keeps on disk is private to its user: messages, uploads,
/// the development secret and the sockets. Every process sets a umask of 077
/// first (`restrictUmask`), and every place that creates a file or directory
/// also passes an explicit mode, so an inherited umask (a shell's `umask 000`,
/// a unit without `UMask=`) can never widen them.
public enum PrivateFiles {
    /// Directories: the owner only.
    public static let directoryMode: mode_t = 0o700
    /// Files, including databases and their WAL/SHM, uploads and sockets.
    public static let fileMode: mode_t = 0o600

    /// The umask every chatd process runs with; children inherit it.
    public static func restrictUmask() {
        umask(0o077)
    }

    /// Creates `path` and any missing parents as `0700` directories, and
    /// narrows `path` itself to `0700` if it existed (a data directory made by
    /// an older version or by hand). Existing parents are left alone, and so is
    /// a sticky world-writable directory (`/tmp`): that is nobody's private space.
    public static func directory(_ path: String) throws {
        var built = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            built += "/" + component
            if mkdir(built, directoryMode) != 0 && errno != EEXIST {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: built, NSUnderlyingErrorKey: POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)])
            }
        }
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
        if info.st_mode & S_ISVTX == 0 && info.st_mode & 0o7777 != directoryMode {
            chmod(path, directoryMode)
        }
    }

    /// Narrows an existing file to `0600`; nothing when it does not exist.
    public static func narrow(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_mode & 0o7777 != fileMode else { return }
        chmod(path, fileMode)
    }

    /// Makes sure a file exists with mode `0600`: created empty when absent,
    /// narrowed when present. For SQLite files, which SQLite would otherwise
    /// create `0644` (and then give their WAL and SHM files the same mode).
    /// An existing file is only chmod-ed, never opened: closing a descriptor
    /// of a database this process has open would drop SQLite's POSIX locks.
    public static func file(_ path: String) throws {
        if let handle = create(path) {
            try handle.close()
        } else if errno == EEXIST {
            narrow(path)
        } else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, NSUnderlyingErrorKey: POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)])
        }
    }

    /// A new file (it must not exist) with mode `0600`, open for writing.
    public static func create(_ path: String) -> FileHandle? {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, fileMode)
        guard fd >= 0 else { return nil }
        fchmod(fd, fileMode)
        return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }

    /// Writes `data` to `path` (replacing it) with mode `0600`.
    public static func write(_ data: Data, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, fileMode)
        guard fd >= 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, NSUnderlyingErrorKey: POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)])
        }
        fchmod(fd, fileMode)
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        try handle.write(contentsOf: data)
        try handle.close()
    }
}
