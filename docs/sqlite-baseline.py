#!/usr/bin/env python3
"""Bare SQLite insert rate on this machine, the ceiling for chatd's store path.

Rows shaped like chatd's messages (~200-byte content, time-ordered text ids,
two secondary indexes), WAL, synchronous=NORMAL, committed in batches.

    python3 docs/sqlite-baseline.py [batch] [rows]
"""
import os, sqlite3, sys, tempfile, time, uuid

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
path = os.path.join(tempfile.mkdtemp(prefix="sqlite-baseline-"), "db.sqlite")
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("""CREATE TABLE messages (id TEXT PRIMARY KEY, room_id TEXT NOT NULL, seq INTEGER NOT NULL,
              sender_id TEXT NOT NULL, content TEXT NOT NULL, timestamp INTEGER NOT NULL)""")
db.execute("CREATE UNIQUE INDEX messages_room_seq ON messages(room_id, seq)")
db.execute("CREATE INDEX messages_sender ON messages(sender_id, timestamp)")
rooms = [str(uuid.uuid4()) for _ in range(8)]
sender = str(uuid.uuid4())
content = "x" * 200
start = time.perf_counter()
seq = 0
for first in range(0, rows, batch):
    values = []
    for i in range(first, min(rows, first + batch)):
        seq += 1
        # uuid7-like: a time prefix keeps inserts at the right edge of the index
        values.append((f"{time.time_ns():016x}-{i:016x}", rooms[i % 8], seq, sender, content, time.time_ns() // 1000))
    db.execute("BEGIN")
    db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)", values)
    db.execute("COMMIT")
elapsed = time.perf_counter() - start
print(f"{rows} rows in batches of {batch}: {rows / elapsed:.0f} rows/s")
