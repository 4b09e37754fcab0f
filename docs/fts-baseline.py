#!/usr/bin/env python3
"""The search index's cost per message: FTS5 rows one statement each (chatd
before issue 12) against multi-row statements (after), same schema, same
batches, the same SQLite (Python's sqlite3 module links the system library
chatd uses). CPU time per row (time.process_time), so other processes on
the machine move the figures less than wall-clock time would.

FTS5 writes the terms it holds in memory to a new segment at every statement
savepoint, and SQLite opens one for each statement that writes the table in
a transaction: a statement per row is a segment per row.

    python3 docs/fts-baseline.py [rows] [batch]
"""
import os, random, sqlite3, sys, tempfile, time

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 100
words = ("the quick brown fox jumps over lazy dog hello world message chat room server load test "
         "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor").split()
random.seed(1)
data = [(i + 1, "m%d" % i, "r%d" % (i % 10), "u%d" % (i % 100), i, " ".join(random.choice(words) for _ in range(24))[:128])
        for i in range(rows)]


def open_index():
    db = sqlite3.connect(os.path.join(tempfile.mkdtemp(prefix="fts-baseline-"), "search.sqlite"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('last_rowid', 0), ('last_change', 0);
        CREATE TABLE docs (rowid INTEGER PRIMARY KEY, message_id TEXT NOT NULL UNIQUE, room_id TEXT NOT NULL,
                           sender_id TEXT NOT NULL, timestamp INTEGER NOT NULL);
        CREATE INDEX docs_room_time ON docs(room_id, timestamp);
        CREATE VIRTUAL TABLE docs_fts USING fts5(content, tokenize = 'trigram');
        """)
    return db


def per_row(db, chunk):
    for r in chunk:
        db.execute("INSERT OR REPLACE INTO docs (rowid, message_id, room_id, sender_id, timestamp) VALUES (?,?,?,?,?)", r[:5])
        db.execute("DELETE FROM docs_fts WHERE rowid = ?", (r[0],))
        db.execute("INSERT INTO docs_fts (rowid, content) VALUES (?, ?)", (r[0], r[5]))


def multi_row(db, chunk):
    db.execute("DELETE FROM docs_fts WHERE rowid IN (SELECT rowid FROM docs WHERE rowid BETWEEN ? AND ?)", (chunk[0][0], chunk[-1][0]))
    for r in chunk:
        db.execute("INSERT OR REPLACE INTO docs (rowid, message_id, room_id, sender_id, timestamp) VALUES (?,?,?,?,?)", r[:5])
    for i in range(0, len(chunk), 500):
        part = chunk[i:i + 500]
        db.execute("INSERT INTO docs_fts (rowid, content) VALUES " + ",".join(["(?,?)"] * len(part)),
                   [x for r in part for x in (r[0], r[5])])


for name, index in [("one statement per row", per_row), ("multi-row statements", multi_row)]:
    db = open_index()
    start = time.process_time()
    for first in range(0, rows, batch):
        chunk = data[first:first + batch]
        db.execute("BEGIN")
        index(db, chunk)
        db.execute("UPDATE meta SET value = ? WHERE key = 'last_rowid'", (chunk[-1][0],))
        db.execute("COMMIT")
    cpu = time.process_time() - start
    found = db.execute("SELECT COUNT(*) FROM docs_fts WHERE docs_fts MATCH 'fox'").fetchone()[0]
    print("%-22s batch %5d: %6.1f us CPU per row (%d rows match 'fox')" % (name, batch, cpu / rows * 1e6, found))
