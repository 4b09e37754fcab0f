import ChatCore
import Foundation
import GRDB

/// The search worker's full-text index of messages, in a SQLite file of its
/// own: FTS5 with the trigram tokenizer, which gives the case-insensitive
/// substring matching of Django's `icontains` for queries of three or more
/// characters. Shorter queries scan the main database instead.
///
/// The index follows the main database, never events: new messages by
/// `messages.rowid` (commit order, one writer at a time), edits and deletions
/// by `message_changes.seq`. Both watermarks are stored in the index, in the
/// same transaction as the rows they cover, so a killed worker resumes exactly
/// where it stopped. A missing or corrupt file is rebuilt from zero.
///
/// One process writes the index (the serving search worker), so it keeps the
/// watermarks in memory once read: a catch-up with nothing new reads only
/// the main database.
public final class SearchIndex {
    public let path: String
    let main: ChatDatabase
    private(set) var queue: DatabaseQueue
    private var identity: (dev: UInt64, ino: UInt64)?
    /// The stored watermarks, as last read or committed; nil: read them first.
    private var watermarks: (rowid: Int64, change: Int64)?

    public init(path: String, main: ChatDatabase) throws {
        self.path = path
        self.main = main
        self.queue = try Self.open(path)
        identity = Self.fileIdentity(path)
    }

    /// WAL with `synchronous = NORMAL`: a commit appends to the WAL without
    /// an fsync. In the default rollback journal every commit created,
    /// fsynced and deleted a journal and fsynced the file (four `fdatasync`
    /// under strace), which was most of the worker's CPU at low load, when a
    /// catch-up indexes a few dozen rows.
    /// What a power loss takes back is only the last catch-ups, with their
    /// watermarks (the same transaction): they are indexed again.
    /// SQLite reuses a WAL without shrinking it: the size limit truncates it
    /// after a checkpoint, so a rebuild's large transactions do not leave a
    /// WAL file as large as the biggest one.
    static var configuration: Configuration {
        var config = Configuration()
        config.journalMode = .wal
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            try db.execute(sql: "PRAGMA journal_size_limit = 4194304")
        }
        return config
    }

    static func open(_ path: String) throws -> DatabaseQueue {
        do {
            try ChatDatabase.makePrivate(path)
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            try migrator.migrate(queue)
            let check = try queue.read { try String.fetchOne($0, sql: "PRAGMA quick_check") }
            guard check == "ok" else { throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: check) }
            return queue
        } catch {
            // Corrupt or unreadable: start over, the main database has everything.
            for suffix in ["", "-wal", "-shm", "-journal"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            try ChatDatabase.makePrivate(path)
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            try migrator.migrate(queue)
            return queue
        }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
                INSERT INTO meta VALUES ('last_rowid', 0), ('last_change', 0);
                -- rowid = the message's rowid in the main database
                CREATE TABLE docs (
                    rowid INTEGER PRIMARY KEY,
                    message_id TEXT NOT NULL UNIQUE,
                    room_id TEXT NOT NULL,
                    sender_id TEXT NOT NULL,
                    timestamp INTEGER NOT NULL
                );
                CREATE INDEX docs_room_time ON docs(room_id, timestamp);
                CREATE VIRTUAL TABLE docs_fts USING fts5(content, tokenize = 'trigram');
                """)
        }
        return migrator
    }

    static func fileIdentity(_ path: String) -> (dev: UInt64, ino: UInt64)? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// Reopens (and so rebuilds) the index when its file was deleted or replaced.
    /// Returns true when it did.
    @discardableResult
    public func reopenIfGone() throws -> Bool {
        let current = Self.fileIdentity(path)
        guard current == nil || current!.dev != identity?.dev || current!.ino != identity?.ino else { return false }
        try? queue.close()
        if current == nil {
            for suffix in ["-wal", "-shm", "-journal"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        }
        watermarks = nil
        queue = try Self.open(path)
        identity = Self.fileIdentity(path)
        return true
    }

    public var indexedCount: Int {
        (try? queue.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM docs") }) ?? 0
    }

    /// Messages stored and not yet indexed (the search worker's lag, `/metrics`).
    public func lag() throws -> Int64 {
        let indexed = try storedWatermarks().rowid
        let newest = try main.writer.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(rowid) FROM messages") } ?? 0
        return max(0, newest - indexed)
    }

    /// Indexes what the main database has that the index does not, in
    /// transactions of `batch` rows, for at most `budget` seconds (so the
    /// worker keeps answering and sending heartbeats during a rebuild).
    /// Returns how many messages it (re)indexed and whether it is done.
    @discardableResult
    public func catchUp(batch: Int = 5000, budget: TimeInterval = 0.5) throws -> (count: Int, done: Bool) {
        try reopenIfGone()
        let deadline = Date().addingTimeInterval(budget)
        // Moved on only after a commit: a failed write leaves them as stored.
        var marks = try storedWatermarks()
        var total = 0
        while true {
            if Date() > deadline { return (total, false) }
            let rows = try main.writer.read { db in
                try NewMessage.fetchAll(db.cachedStatement(sql: """
                    SELECT rowid AS rowid, id, room_id, sender_id, timestamp, content, is_deleted FROM messages
                    WHERE rowid > ? ORDER BY rowid LIMIT ?
                    """), arguments: [marks.rowid, batch])
            }
            guard let last = rows.last else { break }
            try queue.write { db in
                try Self.index(rows.filter { !$0.isDeleted }, in: db)
                try db.cachedStatement(sql: "UPDATE meta SET value = ? WHERE key = 'last_rowid'").execute(arguments: [last.rowid])
            }
            marks.rowid = last.rowid
            watermarks = marks
            total += rows.count
        }
        // Edits and deletions of messages already indexed.
        while true {
            let changes = try main.writer.read { db in
                try ChangedMessage.fetchAll(db.cachedStatement(sql: """
                    SELECT c.seq, m.rowid AS rowid, m.content, m.is_deleted FROM message_changes c JOIN messages m ON m.id = c.message_id
                    WHERE c.seq > ? ORDER BY c.seq LIMIT ?
                    """), arguments: [marks.change, batch])
            }
            guard let last = changes.last else { break }
            try queue.write { db in
                try Self.apply(changes, in: db)
                try db.cachedStatement(sql: "UPDATE meta SET value = ? WHERE key = 'last_change'").execute(arguments: [last.seq])
            }
            marks.change = last.seq
            watermarks = marks
            total += changes.count
            if Date() > deadline { return (total, false) }
        }
        return (total, true)
    }

    /// The watermarks, from memory or else from the index.
    private func storedWatermarks() throws -> (rowid: Int64, change: Int64) {
        if let watermarks { return watermarks }
        let read = try queue.read { db in
            (try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'last_rowid'") ?? 0,
             try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'last_change'") ?? 0)
        }
        watermarks = read
        return read
    }

    /// Applies edits and deletions to the messages the index holds; newer
    /// ones come with the rowid pass.
    static func apply(_ changes: [ChangedMessage], in db: Database) throws {
        for change in changes {
            guard try Row.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM docs WHERE rowid = ?"), arguments: [change.rowid]) != nil else { continue }
            try db.cachedStatement(sql: "DELETE FROM docs_fts WHERE rowid = ?").execute(arguments: [change.rowid])
            if change.isDeleted {
                try db.cachedStatement(sql: "DELETE FROM docs WHERE rowid = ?").execute(arguments: [change.rowid])
            } else {
                try db.cachedStatement(sql: "INSERT INTO docs_fts (rowid, content) VALUES (?, ?)").execute(arguments: [change.rowid, change.content])
            }
        }
    }

    /// Rows of the full-text table per insert statement: 2 variables each,
    /// 998 in all, within the 999 that SQLite before 3.32 allows (a larger
    /// statement would fail there at every catch-up, and search would stop).
    static let ftsRowsPerStatement = 499

    /// Indexes new messages. FTS5 writes the terms it holds in memory to a new
    /// segment at every statement savepoint, and SQLite opens one for each
    /// statement that writes the table inside a transaction: one statement
    /// per message made one segment per message (and merges of them). So the
    /// full-text rows go in multi-row statements, after every `docs` row: a
    /// batch becomes a few segments. A row a message already had (the index
    /// was never told it went; `docs` holds what the full-text table holds)
    /// is replaced, as before.
    static func index(_ rows: [NewMessage], in db: Database) throws {
        guard let first = rows.first, let last = rows.last else { return }
        try db.cachedStatement(sql: "DELETE FROM docs_fts WHERE rowid IN (SELECT rowid FROM docs WHERE rowid BETWEEN ? AND ?)")
            .execute(arguments: [first.rowid, last.rowid])
        let doc = try db.cachedStatement(sql: "INSERT OR REPLACE INTO docs (rowid, message_id, room_id, sender_id, timestamp) VALUES (?, ?, ?, ?, ?)")
        for row in rows {
            try doc.execute(arguments: [row.rowid, row.id, row.roomID, row.senderID, row.timestamp])
        }
        var start = 0
        while start < rows.count {
            let chunk = rows[start..<min(start + ftsRowsPerStatement, rows.count)]
            var arguments: [(any DatabaseValueConvertible)?] = []
            arguments.reserveCapacity(chunk.count * 2)
            for row in chunk { arguments += [row.rowid, row.content] }
            let sql = "INSERT INTO docs_fts (rowid, content) VALUES " + Array(repeating: "(?, ?)", count: chunk.count).joined(separator: ", ")
            // Only the full size is kept prepared: one statement, not one per remainder size.
            let statement = chunk.count == ftsRowsPerStatement ? try db.cachedStatement(sql: sql) : try db.makeStatement(sql: sql)
            try statement.execute(arguments: StatementArguments(arguments))
            start += chunk.count
        }
    }

    /// A message the index has not seen, as the rowid pass reads it.
    struct NewMessage: FetchableRecord {
        var rowid: Int64
        var id: String
        var roomID: String
        var senderID: String
        var timestamp: Int64
        var content: String
        var isDeleted: Bool

        init(row: Row) {
            rowid = row["rowid"]
            id = row["id"]
            roomID = row["room_id"]
            senderID = row["sender_id"]
            timestamp = row["timestamp"]
            content = row["content"]
            isDeleted = row["is_deleted"]
        }
    }

    /// An edit or deletion, as the change pass reads it.
    struct ChangedMessage: FetchableRecord {
        var seq: Int64
        var rowid: Int64
        var content: String
        var isDeleted: Bool

        init(row: Row) {
            seq = row["seq"]
            rowid = row["rowid"]
            content = row["content"]
            isDeleted = row["is_deleted"]
        }
    }

    /// Search filters beyond `q` (the seed's TODO list asks for them).
    public struct Filters: Sendable, Codable {
        public var room: String?
        public var sender: String?
        public var after: Timestamp?
        public var before: Timestamp?

        public init(room: String? = nil, sender: String? = nil, after: Timestamp? = nil, before: Timestamp? = nil) {
            self.room = room
            self.sender = sender
            self.after = after
            self.before = before
        }
    }

    /// Messages of the user's rooms containing `query`, not deleted, newest
    /// first, at most `limit`.
    public func search(_ query: String, user: String, filters: Filters, limit: Int = 50) throws -> [Message] {
        let (rooms, blocked) = try main.writer.read { db in
            let rooms = try String.fetchAll(db, sql: """
                SELECT p.room_id FROM room_participants p WHERE p.user_id = ?
                """, arguments: [user]).filter { filters.room == nil || $0 == filters.room }
            // The users the searcher blocked: their messages are not found (v16-blocks).
            let blocked = try String.fetchAll(db.cachedStatement(sql: "SELECT blocked_id FROM user_blocks WHERE blocker_id = ?"), arguments: [user])
            return (rooms, blocked)
        }
        guard !rooms.isEmpty else { return [] }
        var conditions = ["d.room_id IN (\(Store.placeholders(rooms.count)))"]
        var arguments = StatementArguments(rooms)
        if !blocked.isEmpty {
            conditions.append("d.sender_id NOT IN (\(Store.placeholders(blocked.count)))")
            arguments += StatementArguments(blocked)
        }
        if let sender = filters.sender { conditions.append("d.sender_id = ?"); arguments += [sender] }
        if let after = filters.after { conditions.append("d.timestamp >= ?"); arguments += [after.micros] }
        if let before = filters.before { conditions.append("d.timestamp < ?"); arguments += [before.micros] }
        let ids: [String]
        if query.unicodeScalars.count >= 3 {
            // Newest first by rowid: the main database's commit order, which is
            // time order. FTS5 walks its matches in descending rowid natively,
            // so a common term stops after the first page of matches instead
            // of sorting all of them.
            // A phrase of trigrams: a literal substring, whatever characters it holds.
            let phrase = "\"" + query.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            ids = try queue.read { db in
                try String.fetchAll(db, sql: """
                    SELECT d.message_id FROM docs_fts f JOIN docs d ON d.rowid = f.rowid
                    WHERE docs_fts MATCH ? AND \(conditions.joined(separator: " AND "))
                    ORDER BY f.rowid DESC LIMIT ?
                    """, arguments: [phrase] + arguments + [limit])
            }
        } else {
            // Under three characters the trigram index cannot answer: scan.
            let scan = conditions.map { $0.replacingOccurrences(of: "d.", with: "m.") }
            ids = try main.writer.read { db in
                try String.fetchAll(db, sql: """
                    SELECT m.id FROM messages m
                    WHERE m.is_deleted = 0 AND instr(lower(m.content), lower(?)) > 0 AND \(scan.joined(separator: " AND "))
                    ORDER BY m.timestamp DESC, m.rowid DESC LIMIT ?
                    """, arguments: [query] + arguments + [limit])
            }
        }
        // The main database is the truth: a message deleted since it was indexed is dropped.
        return Array(try main.writer.read { db in try Store.messages(ids: ids, in: db) }.filter { !$0.isDeleted }.prefix(limit))
    }
}

extension Store {
    /// Messages by id, in the given order, with `read_by`.
    public static func messages(ids: [String], in db: Database) throws -> [Message] {
        guard !ids.isEmpty else { return [] }
        var messages = try Array(Row.fetchCursor(db, sql: """
            SELECT \(messageColumns) FROM messages m JOIN users u ON u.id = m.sender_id WHERE m.id IN (\(placeholders(ids.count)))
            """, arguments: StatementArguments(ids)).map(message))
        let order = Dictionary(ids.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        messages.sort { order[$0.id, default: 0] < order[$1.id, default: 0] }
        try fillReadBy(&messages, in: db)
        return messages
    }

    /// Rooms whose name or participants' email or display name contain
    /// `query` (case-insensitively), among the user's rooms and public rooms.
    public static func searchRooms(_ query: String, viewer: String, limit: Int = 50, in db: Database) throws -> [Room] {
        let ids = try String.fetchAll(db, sql: """
            SELECT r.id FROM rooms r
            WHERE r.is_active = 1
              AND (r.room_type = 'public' OR EXISTS (SELECT 1 FROM room_participants p WHERE p.room_id = r.id AND p.user_id = ?1))
              AND (instr(lower(coalesce(r.name, '')), lower(?2)) > 0
                   OR EXISTS (SELECT 1 FROM room_participants p JOIN users u ON u.id = p.user_id
                              WHERE p.room_id = r.id AND (instr(lower(u.email), lower(?2)) > 0 OR instr(lower(u.display_name), lower(?2)) > 0)))
            ORDER BY r.updated_at DESC LIMIT ?3
            """, arguments: [viewer, query, limit])
        return try rooms(ids: ids, viewer: viewer, in: db)
    }
}
