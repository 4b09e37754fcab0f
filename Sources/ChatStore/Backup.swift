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
    /// file unless `force`.
    public static func run(source: String, destination: String, force: Bool) throws -> Result {
        let started = Date()
        guard FileManager.default.fileExists(atPath: source) else {
            throw Failure(description: "no chat database at \(source): pass the server's --config, or set CHAT_DATA_DIR as it has it")
        }
        var isDirectory: ObjCBool = false
        var target = destination
        if FileManager.default.fileExists(atPath: destination, isDirectory: &isDirectory), isDirectory.boolValue {
            target = (destination as NSString).appendingPathComponent("chat.sqlite")
        }
        target = URL(fileURLWithPath: target).standardized.path
        guard target != URL(fileURLWithPath: source).standardized.path else {
            throw Failure(description: "\(target) is the database itself")
        }
        if FileManager.default.fileExists(atPath: target) && !force {
            throw Failure(description: "\(target) exists: pass --force to replace it")
        }
        let temporary = target + ".partial-\(getpid())"
        defer { for suffix in ["", "-journal", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: temporary + suffix) } }
        let pages = try copy(from: source, to: temporary)
        try sync(temporary)
        guard rename(temporary, target) == 0 else {
            throw Failure(description: "renaming \(temporary) to \(target): \(String(cString: strerror(errno)))")
        }
        try sync((target as NSString).deletingLastPathComponent)
        let bytes = ((try? FileManager.default.attributesOfItem(atPath: target))?[.size] as? NSNumber)?.intValue ?? 0
        return Result(path: target, bytes: bytes, pages: pages, milliseconds: Date().timeIntervalSince(started) * 1000)
    }

    /// The backup proper; returns the pages copied.
    private static func copy(from source: String, to temporary: String) throws -> Int {
        // Messages are private: the copy is 0600 from its first byte.
        try PrivateFiles.file(temporary)
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
