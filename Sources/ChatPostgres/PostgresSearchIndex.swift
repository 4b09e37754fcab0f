import ChatCore
import ChatStore
import Foundation
import PostgresNIO

/// The search worker's index on PostgreSQL: its own table (`search_docs`,
/// a `pg_trgm` GIN index on the content), filled from `messages` off the
/// write path, as SQLite's FTS file is, never by a trigger on the hot path.
///
/// The watermark is `(xact, id)`: the transaction that last stored, edited
/// or deleted a message's content, and its id. Transaction ids are not commit
/// order, so a pass reads only rows of transactions below the snapshot's
/// `xmin` (every one of those has ended: its rows are visible now or never)
/// and leaves the rest for a later pass. So nothing is skipped when several
/// store workers commit out of order, and a killed worker resumes from the
/// watermark, stored in the same transaction as the rows it covers.
final class PostgresSearchIndex: MessageSearchIndex {
    let engine: PostgresEngine
    /// The stored watermark, as last read or committed; nil: read it first.
    private var watermark: (xact: String, id: String)?

    init(engine: PostgresEngine) { self.engine = engine }

    func catchUp(batch: Int, budget: TimeInterval) throws -> (count: Int, done: Bool) {
        let deadline = Date().addingTimeInterval(budget)
        var total = 0
        while true {
            if Date() > deadline { return (total, false) }
            // Another worker's pass holds the lock: it is indexing the same
            // rows into the same table, and this worker's searches need not
            // wait for it. Not done, though: the index may be behind (the lag
            // gauge reads it, and the next idle pass comes sooner).
            guard let passed = try engine.transaction(begin: PostgresEngine.beginWrite, { tx in try pass(batch: batch, in: tx) }) else {
                return (total, false)
            }
            let (count, mark) = passed
            watermark = mark
            total += count
            if count < batch { return (total, true) }
        }
    }

    /// Serialises the passes of the search workers on one database (any fixed number, not the migrations' key).
    static let lockKey: Int64 = 0x6368_6174_73  // "chats"

    /// One batch, under a lock every search worker of this database takes,
    /// or nil when another holds it: a second worker skips its pass (a
    /// blocking lock made its searches wait for the other's whole pass), and
    /// its next starts from where the other's ended. Without
    /// it, two passes from one watermark could commit in either order, an
    /// older read of a message's content overwrite a newer one, and the
    /// watermark move back. (An advisory lock: an idle pass writes nothing.)
    private func pass(batch: Int, in tx: PostgresTransaction) throws -> (Int, (xact: String, id: String))? {
        guard try tx.one("SELECT pg_try_advisory_xact_lock($1)", [.int(Self.lockKey)], as: Bool.self) == true else { return nil }
        // Read committed: each statement's snapshot is taken after the lock, so it sees what the other worker committed.
        guard let state = try tx.query("SELECT xact::text AS xact, message_id FROM search_state WHERE id = 1").rows.first else {
            return (0, ("0", ""))
        }
        let mark = (xact: try state.get("xact", as: String.self), id: try state.get("message_id", as: String.self))
        let rows = try tx.query("""
            SELECT id, room_id, sender_id, timestamp, content, is_deleted, xact::text AS xact FROM messages
            WHERE (xact, id) > ($1::xid8, $2) AND xact < pg_snapshot_xmin(pg_current_snapshot())
            ORDER BY xact, id LIMIT $3
            """, [.text(mark.xact), .text(mark.id), .int(Int64(batch))]).rows
        guard let last = rows.last else { return (0, mark) }
        let next = (xact: try last.get("xact", as: String.self), id: try last.get("id", as: String.self))
        try Self.index(rows, upTo: next, in: tx)
        return (rows.count, next)
    }

    /// Adds or replaces the live messages, removes the deleted ones, and moves the watermark.
    static func index(_ rows: [PostgresRandomAccessRow], upTo mark: (xact: String, id: String), in tx: PostgresTransaction) throws {
        var (ids, rooms, senders, times, contents, deleted) = ([String](), [String](), [String](), [Int64](), [String](), [String]())
        for row in rows {
            let id: String = try row.get("id")
            if try row.get("is_deleted", as: Bool.self) { deleted.append(id); continue }
            ids.append(id)
            rooms.append(try row.get("room_id"))
            senders.append(try row.get("sender_id"))
            times.append(try row.get("timestamp"))
            contents.append(try row.get("content"))
        }
        if !deleted.isEmpty { try tx.query("DELETE FROM search_docs WHERE message_id = ANY($1)", [.texts(deleted)]) }
        if !ids.isEmpty {
            // One statement for the batch: arrays unnested into rows.
            try tx.query("""
                INSERT INTO search_docs (message_id, room_id, sender_id, timestamp, content)
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[])
                ON CONFLICT (message_id) DO UPDATE SET content = excluded.content
                """, [.texts(ids), .texts(rooms), .texts(senders), .ints(times), .texts(contents)])
        }
        try tx.query("UPDATE search_state SET xact = $1::xid8, message_id = $2 WHERE id = 1", [.text(mark.xact), .text(mark.id)])
    }

    private func storedWatermark() throws -> (xact: String, id: String) {
        if let watermark { return watermark }
        let read = try engine.transaction(begin: PostgresEngine.beginRead) { tx -> (String, String) in
            guard let row = try tx.query("SELECT xact::text AS xact, message_id FROM search_state WHERE id = 1").rows.first else {
                return ("0", "")
            }
            return (try row.get("xact"), try row.get("message_id"))
        }
        watermark = read
        return read
    }

    func lag() throws -> Int64 {
        let mark = try storedWatermark()
        return try engine.transaction(begin: PostgresEngine.beginRead) { tx in
            try tx.one("SELECT COUNT(*) FROM messages WHERE (xact, id) > ($1::xid8, $2)",
                                                 [.text(mark.xact), .text(mark.id)], as: Int64.self) ?? 0
        }
    }

    /// `query` as a LIKE pattern that matches it as a literal substring.
    static func pattern(_ query: String) -> String {
        var escaped = ""
        for character in query {
            if character == "\\" || character == "%" || character == "_" { escaped.append("\\") }
            escaped.append(character)
        }
        return "%" + escaped + "%"
    }

    /// Messages of the user's rooms containing `query` (ILIKE: case-insensitive
    /// substring, as the contract's `icontains`), newest first. The trigram
    /// index answers queries of three characters or more; shorter ones scan.
    func search(_ query: String, user: String, filters: SearchIndex.Filters, limit: Int) throws -> [Message] {
        // Not the messages of users the searcher blocked (v16-blocks).
        var conditions = ["d.room_id IN (SELECT room_id FROM room_participants WHERE user_id = $1)", "d.content ILIKE $2 ESCAPE '\\'",
                          "d.sender_id NOT IN (SELECT blocked_id FROM user_blocks WHERE blocker_id = $1)"]
        var values: [PostgresValue] = [.text(user), .text(Self.pattern(query))]
        func add(_ condition: String, _ value: PostgresValue) {
            values.append(value)
            conditions.append(condition.replacingOccurrences(of: "$?", with: "$\(values.count)"))
        }
        if let room = filters.room { add("d.room_id = $?", .text(room)) }
        if let sender = filters.sender { add("d.sender_id = $?", .text(sender)) }
        if let after = filters.after { add("d.timestamp >= $?", .int(after.micros)) }
        if let before = filters.before { add("d.timestamp < $?", .int(before.micros)) }
        values.append(.int(Int64(limit)))
        return try engine.transaction(begin: PostgresEngine.beginRead) { tx in
            let ids = try tx.query("""
                SELECT d.message_id FROM search_docs d WHERE \(conditions.joined(separator: " AND "))
                ORDER BY d.timestamp DESC, d.message_id DESC LIMIT $\(values.count)
                """, values).rows.map { try $0.get("message_id", as: String.self) }
            // The messages table is the truth: one deleted since it was indexed is dropped.
            return Array(try tx.messages(ids: ids).filter { !$0.isDeleted }.prefix(limit))
        }
    }
}
