import ChatCore
import Foundation
import GRDB

/// `chatd backup`: a consistent copy of the chat database while the server
/// serves, by SQLite's online backup API. The copy is taken in one step,
/// inside one read transaction: in WAL mode the writers go on meanwhile and
/// the copy is the database as of the step's start (every message committed
/// before it, none half-written). Written beside the destination under a
/// temporary name, synced, then renamed into place, so a crash or a full
/// disk never leaves a partial file under the destination's name.
///
/// The search index (`search.sqlite`) is not copied: the search worker
/// rebuilds it from the chat database when it is missing, and an index
/// newer than a restored database would be wrong (its watermarks ahead).
public enum DatabaseBackup {
    public struct Result: Sendable {
        public let path: String
        public let bytes: Int
        public let pages: Int
        public let milliseconds: Double
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Copies the database at `source` to `destination` (a file, or a
    /// directory to write `chat.sqlite` in). Refuses to replace an existing
    /// file unless `force`, and never the database itself. `temporarySuffix`
    /// is random but for tests, which need to know the name.
    public static func run(source: String, destination: String, force: Bool, temporarySuffix: String? = nil) throws -> Result {
        let started = Date()
        guard FileManager.default.fileExists(atPath: source) else {
            throw Failure(description: "no chat database at \(source): pass the server's --config, or set CHAT_DATA_DIR as it has it")
        }
        let target = try self.target(of: destination)
        let parent = (target as NSString).deletingLastPathComponent
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw Failure(description: "no directory \(parent) to write \(target) in: create it first")
        }
        // The same file by device and inode, not by name: a symlinked alias of
        // the data directory names the live database under another path.
        if target == URL(fileURLWithPath: source).standardized.path || sameFile(source, target) {
            throw Failure(description: "\(target) is the database itself")
        }
        if FileManager.default.fileExists(atPath: target) && !force {
            throw Failure(description: "\(target) exists: pass --force to replace it")
        }
        // Beside the target (rename(2) stays in one file system), under a name
        // nobody can guess, created here or not at all: in a shared directory
        // an existing file or symlink at that name is someone else's.
        let temporary = target + ".partial-" + (temporarySuffix ?? randomSuffix())
        // Messages are private: the copy is 0600 from its first byte. O_EXCL
        // refuses any existing name, a symlink included.
        guard let created = PrivateFiles.create(temporary) else {
            throw Failure(description: "creating \(temporary): \(String(cString: strerror(errno)))")
        }
        try? created.close()
        defer { for suffix in ["", "-journal", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: temporary + suffix) } }
        let pages: Int
        do {
            pages = try copy(from: source, to: temporary)
        } catch {
            throw Failure(description: "copying \(source) to \(temporary): \(error)")
        }
        try sync(temporary)
        guard rename(temporary, target) == 0 else {
            throw Failure(description: "renaming \(temporary) to \(target): \(String(cString: strerror(errno)))")
        }
        try sync(parent)
        let bytes = ((try? FileManager.default.attributesOfItem(atPath: target))?[.size] as? NSNumber)?.intValue ?? 0
        return Result(path: target, bytes: bytes, pages: pages, milliseconds: Date().timeIntervalSince(started) * 1000)
    }

    /// The file to write: `destination`, or `chat.sqlite` in it when it is a
    /// directory. A name ending in `/` that is no directory is refused
    /// rather than made a file.
    private static func target(of destination: String) throws -> String {
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: destination, isDirectory: &isDirectory)
        if exists && isDirectory.boolValue {
            return URL(fileURLWithPath: (destination as NSString).appendingPathComponent("chat.sqlite")).standardized.path
        }
        guard !destination.hasSuffix("/") else {
            throw Failure(description: "\(destination) is not a directory: create it first, or name a file")
        }
        return URL(fileURLWithPath: destination).standardized.path
    }

    /// Whether both paths exist and are one file (symlinks followed).
    private static func sameFile(_ a: String, _ b: String) -> Bool {
        var first = stat(), second = stat()
        guard stat(a, &first) == 0, stat(b, &second) == 0 else { return false }
        return first.st_dev == second.st_dev && first.st_ino == second.st_ino
    }

    private static func randomSuffix() -> String {
        var generator = SystemRandomNumberGenerator()
        return String(generator.next() as UInt64, radix: 16)
    }

    /// The backup proper; returns the pages copied.
    private static func copy(from source: String, to temporary: String) throws -> Int {
        var readOnly = Configuration()
        readOnly.readonly = true
        readOnly.busyMode = .timeout(5)
        let from = try DatabaseQueue(path: source, configuration: readOnly)
        let to = try DatabaseQueue(path: temporary)
        var pages = 0
        try from.backup(to: to) { progress in pages = progress.totalPageCount }
        try from.close()
        // The last connection's close leaves one self-contained file (a WAL, if any, checkpointed and removed).
        try to.close()
        return pages
    }

    private static func sync(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw Failure(description: "opening \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw Failure(description: "syncing \(path): \(String(cString: strerror(errno)))") }
    }
}
