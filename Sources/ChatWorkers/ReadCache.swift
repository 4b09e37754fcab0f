import ChatStore
import ChatWire

/// Encoded replies of the store's page reads (room list, message page), kept
/// while the database is unchanged. A page depends on many tables (messages,
/// users, read status written by the receipts worker in another process,
/// participants), so validity is not tracked per room: any commit, by any
/// connection of any process, empties the cache. That is always correct and
/// costs two cached statements per read; it pays while nothing is written
/// (repeated polling of the same pages), and only then.
///
/// The version is read inside the read transaction that would compute the
/// page, so a hit is exactly what that transaction would have read
/// (`StoreTransaction.dataVersion`; SQLite's `data_version` and
/// `total_changes()`). PostgreSQL has no such value that is both cheap and
/// exact for the snapshot: a WAL position or a statistics counter can move
/// before the commit it counts becomes visible, and a counter kept by the
/// writers would be one more contended row on every write. So there the
/// cache is off (its pages are computed on every read).
final class ReadCache {
    /// What identifies a page: the command, the caller (the exact identity
    /// bytes: pages are per user) and the request (page, size, cursors, links).
    struct Key: Hashable {
        var kind: CommandKind
        var user: [UInt8]
        var body: [UInt8]

        init(_ command: Command) {
            (kind, user, body) = (command.kind, command.user, command.body)
        }
    }

    /// Bounds: one room list of 100 rooms of 1,000 members can be ~10 MB;
    /// such a page is not kept. A full cache is emptied, not evicted: it is
    /// emptied by every write anyway.
    let maxBytes: Int
    let maxEntries: Int
    private var version: StoreDataVersion?
    private var entries: [Key: [UInt8]] = [:]
    private var bytes = 0

    init(maxBytes: Int = 4 << 20, maxEntries: Int = 1_024) {
        (self.maxBytes, self.maxEntries) = (maxBytes, maxEntries)
    }

    var count: Int { entries.count }

    /// The cached reply body for `key`, or nil; first drops everything when
    /// the database moved since the entries were made. An engine that cannot
    /// tell (`dataVersion()` nil: PostgreSQL) is never answered from the cache.
    func body(for key: Key, in db: any StoreTransaction) throws -> [UInt8]? {
        guard let now = try db.dataVersion() else {
            clear()
            version = nil
            return nil
        }
        if now != version {
            clear()
            version = now
        }
        return entries[key]
    }

    /// Keeps `body` for `key`; call in the transaction of `body(for:in:)`.
    func store(_ body: [UInt8], for key: Key) {
        guard body.count <= maxBytes / 4 else { return }
        if bytes + body.count > maxBytes || entries.count >= maxEntries { clear() }
        if let old = entries.updateValue(body, forKey: key) { bytes -= old.count }
        bytes += body.count
    }

    func clear() {
        entries.removeAll()
        bytes = 0
    }
}
