#!/usr/bin/env python3
"""The search index's CPU per message at low load: catch-ups of a few dozen
rows, committed in the rollback journal SQLite uses by default (what chatd's
index ran in before, `synchronous = FULL`: a journal written, fsynced and
deleted, and the file fsynced, at every commit) against WAL with
`synchronous = NORMAL` (after: a commit appends to the WAL, fsyncs only at
checkpoints). Same schema and statements as the worker (multi-row FTS5
inserts, docs/fts-baseline.py), the same SQLite (Python's sqlite3 links the
system library chatd uses), each catch-up also re-reading the watermark in
its own read transaction before (as the worker did) and not after. CPU time
(user + system, time.process_time): the fsyncs' waits are not counted, only
the work they cost this process.

    python3 docs/search-journal.py [catch-ups] [rows per catch-up]
"""
import os, random, sqlite3, sys, tempfile, time

catchups = int(sys.argv[1]) if len(sys.argv) > 1 else 200
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 100
words = ("the quick brown fox jumps over lazy dog hello world message chat room server load test "
         "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor").split()
random.seed(1)
rows = catchups * batch
data = [(i + 1, "m%d" % i, "r%d" % (i % 10), "u%d" % (i % 100), i, " ".join(random.choice(words) for _ in range(24))[:128])
        for i in range(rows)]


def open_index(wal):
    db = sqlite3.connect(os.path.join(tempfile.mkdtemp(prefix="search-journal-"), "search.sqlite"), isolation_level=None)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('last_rowid', 0), ('last_change', 0);
        CREATE TABLE docs (rowid INTEGER PRIMARY KEY, message_id TEXT NOT NULL UNIQUE, room_id TEXT NOT NULL,
                           sender_id TEXT NOT NULL, timestamp INTEGER NOT NULL);
        CREATE INDEX docs_room_time ON docs(room_id, timestamp);
        CREATE VIRTUAL TABLE docs_fts USING fts5(content, tokenize = 'trigram');
        """)
    return db


def run(wal):
    db = open_index(wal)
    mode = db.execute("PRAGMA journal_mode").fetchone()[0], db.execute("PRAGMA synchronous").fetchone()[0]
    start = time.process_time()
    for first in range(0, rows, batch):
        chunk = data[first:first + batch]
        if not wal:  # the watermark, re-read in a read transaction at every catch-up
            db.execute("BEGIN"); db.execute("SELECT value FROM meta WHERE key = 'last_rowid'").fetchone(); db.execute("COMMIT")
            db.execute("BEGIN"); db.execute("SELECT value FROM meta WHERE key = 'last_change'").fetchone(); db.execute("COMMIT")
        db.execute("BEGIN")
        db.execute("DELETE FROM docs_fts WHERE rowid IN (SELECT rowid FROM docs WHERE rowid BETWEEN ? AND ?)", (chunk[0][0], chunk[-1][0]))
        for r in chunk:
            db.execute("INSERT OR REPLACE INTO docs (rowid, message_id, room_id, sender_id, timestamp) VALUES (?,?,?,?,?)", r[:5])
        db.execute("INSERT INTO docs_fts (rowid, content) VALUES " + ",".join(["(?,?)"] * len(chunk)),
                   [x for r in chunk for x in (r[0], r[5])])
        db.execute("UPDATE meta SET value = ? WHERE key = 'last_rowid'", (chunk[-1][0],))
        db.execute("COMMIT")
    cpu = time.process_time() - start
    print("%-34s journal %-6s synchronous %s: %6.1f us CPU per row, %7.1f us per catch-up of %d" % (
        "rollback journal (before)" if not wal else "WAL, synchronous NORMAL (after)", mode[0], mode[1],
        cpu / rows * 1e6, cpu / catchups * 1e6, batch))


for _ in range(3):
    run(False)
    run(True)
