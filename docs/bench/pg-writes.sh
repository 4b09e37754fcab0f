#!/bin/sh
# PostgreSQL's write rate for what chatd's store does per new message (issue 15,
# docs/capacity.md §5): pgbench with a generated script, statement for statement
# as the pg branch's PostgresTransaction.createMessage and BatchProcessor.commit:
#   per batch:   BEGIN … COMMIT (one transaction per store batch)
#   per message: SAVEPOINT (batches of more than one), the id lookup (fetchMessage),
#                the room's row lock with the access check, the id/client_msg_id
#                re-check, one statement for seq + row + sender's counter, RELEASE.
# Schema: the pg branch's PostgresMigrations.v1 tables that a message touches
# (users, rooms, room_participants, messages with its indexes); 10 members a room.
#
# Runs a private server from Debian's PostgreSQL 15 as user postgres on a unix
# socket in a temp dir, stops it by pid at the end. As root:
#   sh docs/bench/pg-writes.sh                      # the whole matrix, 3 runs each
#   RUNS=1 SECONDS_EACH=5 sh docs/bench/pg-writes.sh
#   MATRIX= SEARCH=1 sh docs/bench/pg-writes.sh     # only the search index's inserts (below)
# Prints one line per configuration: the median messages/s of the runs, and each run,
# and the median CPU the PostgreSQL server spent per message (every process of this
# server: backends, WAL writer, checkpointer; from /proc/<pid>/stat, the postmaster's
# reaped children included), i.e. what a database host's cores must supply, and the
# WAL it wrote per message (what its disk and a replica's link must carry).
set -eu
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
RUNS=${RUNS:-3}
SECONDS_EACH=${SECONDS_EACH:-8}
ROOMS=${ROOMS:-10000}
MATRIX=${MATRIX-"1:1:10000 1:4:10000 10:1:10000 10:4:10000 100:1:10000 100:4:10000 1:1:1 1:4:1 10:4:1 100:4:1"}
DIR=$(mktemp -d /tmp/pg-writes.XXXXXX)
chown postgres "$DIR"
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$PGBIN/initdb" -D "$DIR/data" -A trust -U postgres >/dev/null
as_pg "$PGBIN/postgres" -D "$DIR/data" -k "$DIR" -c listen_addresses= -p 54329 \
    -c shared_buffers=256MB -c max_wal_size=2GB -c max_connections=20 >"$DIR/log" 2>&1 &
RUNUSER=$!
# runuser does not pass signals on: stop the postmaster itself (fast shutdown), by the pid it wrote.
trap 'kill -INT "$(head -1 "$DIR/data/postmaster.pid" 2>/dev/null)" 2>/dev/null; wait "$RUNUSER" 2>/dev/null; rm -rf "$DIR"' EXIT
i=0; until as_pg "$PGBIN/pg_isready" -q -h "$DIR" -p 54329; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done
PSQL="as_pg /usr/bin/psql -q -h $DIR -p 54329 -U postgres -v ON_ERROR_STOP=1"

$PSQL <<SQL
CREATE TABLE users (id TEXT PRIMARY KEY, sub TEXT NOT NULL UNIQUE, email TEXT NOT NULL DEFAULT '',
  display_name TEXT NOT NULL DEFAULT '', profile_picture TEXT, clerk_profile_image_url TEXT, created_at BIGINT NOT NULL);
CREATE TABLE rooms (id TEXT PRIMARY KEY, name TEXT, room_type TEXT NOT NULL DEFAULT 'group'
  CHECK (room_type IN ('direct', 'group', 'project', 'public')), created_by TEXT REFERENCES users(id) ON DELETE SET NULL,
  created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, is_active BOOLEAN NOT NULL DEFAULT TRUE,
  direct_user1 TEXT REFERENCES users(id) ON DELETE CASCADE, direct_user2 TEXT REFERENCES users(id) ON DELETE CASCADE,
  last_seq BIGINT NOT NULL DEFAULT 0, live_count BIGINT NOT NULL DEFAULT 0);
CREATE INDEX rooms_type_active ON rooms(room_type, is_active);
CREATE INDEX rooms_updated ON rooms(updated_at DESC);
CREATE UNIQUE INDEX rooms_direct_pair ON rooms(direct_user1, direct_user2) WHERE room_type = 'direct';
CREATE TABLE room_participants (room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE, joined_at BIGINT NOT NULL,
  sent_count BIGINT NOT NULL DEFAULT 0, read_count BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (room_id, user_id));
CREATE INDEX participants_user ON room_participants(user_id, room_id);
CREATE TABLE messages (id TEXT PRIMARY KEY, room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
  seq BIGINT NOT NULL, sender_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE, content TEXT NOT NULL DEFAULT '',
  message_type TEXT NOT NULL DEFAULT 'text', file_attachment TEXT, file_name TEXT, file_size BIGINT,
  timestamp BIGINT NOT NULL, edited_at BIGINT, updated_at BIGINT NOT NULL, is_deleted BOOLEAN NOT NULL DEFAULT FALSE,
  reply_to TEXT REFERENCES messages(id) ON DELETE SET NULL, reactions TEXT NOT NULL DEFAULT '[]', client_msg_id TEXT,
  xact XID8 NOT NULL DEFAULT pg_current_xact_id());
CREATE UNIQUE INDEX messages_room_seq ON messages(room_id, seq);
CREATE INDEX messages_sender ON messages(sender_id, timestamp);
CREATE UNIQUE INDEX messages_client_msg_id ON messages(room_id, sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_xact ON messages(xact, id);
CREATE EXTENSION pg_trgm;
CREATE TABLE search_docs (message_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, sender_id TEXT NOT NULL,
  timestamp BIGINT NOT NULL, content TEXT NOT NULL);
CREATE INDEX search_docs_room_time ON search_docs(room_id, timestamp);
CREATE INDEX search_docs_content ON search_docs USING gin (content gin_trgm_ops);
INSERT INTO users (id, sub, created_at) SELECT 'u' || r || '_' || k, 's' || r || '_' || k, 0
  FROM generate_series(1, $ROOMS) r, generate_series(0, 9) k;
INSERT INTO rooms (id, created_at, updated_at) SELECT 'r' || r, 0, 0 FROM generate_series(1, $ROOMS) r;
INSERT INTO room_participants (room_id, user_id, joined_at) SELECT 'r' || r, 'u' || r || '_' || k, 0
  FROM generate_series(1, $ROOMS) r, generate_series(0, 9) k;
VACUUM ANALYZE;
SQL

# One transaction of $1 messages in rooms 1..$2, for $3 clients. As chatd's store
# shards, each client writes its own rooms (client c: rooms c*R/clients+1 ...), so
# only the one hot room (rooms = 1) is written by several at once.
script() {
    n=$1; rooms=$2; clients=$3; f="$DIR/batch-$n-$rooms-$clients.sql"
    if [ "$rooms" = 1 ]; then pick='\set room 1'; else pick="\\set room :client_id * $((rooms / clients)) + random(1, $((rooms / clients)))"; fi
    echo "BEGIN;" >"$f"
    m=0
    while [ $m -lt "$n" ]; do
        [ "$n" -gt 1 ] && echo "SAVEPOINT s;" >>"$f"
        cat >>"$f" <<SQL
$pick
\\set k random(0, 9)
\\set mid random(1, 9000000000000000000)
SELECT id, content FROM messages WHERE id = 'm' || :mid::text;
SELECT r.is_active, EXISTS (SELECT 1 FROM room_participants p WHERE p.room_id = r.id AND p.user_id = 'u' || :room::text || '_' || :k::text) AS is_participant FROM rooms r WHERE r.id = 'r' || :room::text FOR NO KEY UPDATE;
SELECT id FROM messages WHERE id = 'm' || :mid::text OR (room_id = 'r' || :room::text AND sender_id = 'u' || :room::text || '_' || :k::text AND client_msg_id = 'c' || :mid::text) ORDER BY id = 'm' || :mid::text DESC LIMIT 1;
WITH room AS (UPDATE rooms SET last_seq = last_seq + 1, live_count = live_count + 1, updated_at = GREATEST(updated_at + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) WHERE id = 'r' || :room::text RETURNING last_seq), sent AS (UPDATE room_participants SET sent_count = sent_count + 1 WHERE room_id = 'r' || :room::text AND user_id = 'u' || :room::text || '_' || :k::text) INSERT INTO messages (id, room_id, seq, sender_id, content, message_type, timestamp, updated_at, client_msg_id) SELECT 'm' || :mid::text, 'r' || :room::text, room.last_seq, 'u' || :room::text || '_' || :k::text, repeat('x', 128), 'text', 0, 0, 'c' || :mid::text FROM room RETURNING seq;
SQL
        [ "$n" -gt 1 ] && echo "RELEASE SAVEPOINT s;" >>"$f"
        m=$((m+1))
    done
    echo "COMMIT;" >>"$f"
    echo "$f"
}

# CPU ticks of this server so far: the postmaster's own and reaped children's, and every live child's.
pg_ticks() {
    pm=$(head -1 "$DIR/data/postmaster.pid")
    { awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat"
      for c in $(ps -o pid= --ppid "$pm"); do awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || true; done
    } | awk '{t += $1} END {print t}'
}
HZ=$(getconf CLK_TCK)

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), ${SECONDS_EACH}s runs, median of $RUNS"
echo "# batch clients rooms sync  msg/s(median)  server µs/msg(median)  WAL B/msg  runs (msg/s)"
for sync in on off; do
    $PSQL -c "ALTER SYSTEM SET synchronous_commit = $sync" -c "SELECT pg_reload_conf()" >/dev/null
    for cfg in $MATRIX; do
        n=${cfg%%:*}; rest=${cfg#*:}; clients=${rest%%:*}; rooms=${rest#*:}
        f=$(script "$n" "$rooms" "$clients"); chown postgres "$f"
        rates=""; cpus=""; wals=""
        r=0
        while [ $r -lt "$RUNS" ]; do
            t0=$(pg_ticks)
            w0=$($PSQL -Atc "SELECT pg_current_wal_lsn()")
            as_pg "$PGBIN/pgbench" -n -M prepared -h "$DIR" -p 54329 -U postgres -c "$clients" -j "$clients" \
                -T "$SECONDS_EACH" --max-tries=100 -f "$f" postgres >"$DIR/out" 2>&1 || true
            # Deadlocks between batches that lock rooms in different orders are retried (as a store's failed batch is resent).
            grep -E "^(pgbench: error|number of failed|number of transactions retried)" "$DIR/out" | grep -v ": 0 (" | sed "s/^/#   $n:$clients:$rooms sync=$sync: /" >>"$DIR/notes" || true
            tps=$(sed -n "s/^tps = \([0-9.]*\) .*/\1/p" "$DIR/out")
            sleep 0.2   # the backends exit and are reaped: their CPU moves to the postmaster's children's
            t1=$(pg_ticks)
            wal=$($PSQL -Atc "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$w0')::bigint")
            done_tx=$(sed -n "s/^number of transactions actually processed: \([0-9]*\).*/\1/p" "$DIR/out")
            cpus="$cpus $(echo "($t1 - $t0) * 1000000 / $HZ / ($done_tx * $n)" | bc)"
            wals="$wals $(echo "$wal / ($done_tx * $n)" | bc)"
            rates="$rates $(echo "$tps * $n" | bc | cut -d. -f1)"
            r=$((r+1))
        done
        median=$(echo $rates | tr ' ' '\n' | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
        cpu=$(echo $cpus | tr ' ' '\n' | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
        walm=$(echo $wals | tr ' ' '\n' | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
        printf '%5s %7s %6s %4s %10s %10s %8s   %s\n' "$n" "$clients" "$rooms" "$sync" "$median" "$cpu" "$walm" "$rates"
    done
done
# SEARCH=1: the search worker's write, PostgresSearchIndex.index: one transaction of
# 500 rows into search_docs (trigram GIN index) by one INSERT ... ON CONFLICT. The
# content is 128 hex characters from md5 (random text: more distinct trigrams per row
# than prose, so an upper bound; md5 itself is a few µs a row of the server's CPU).
if [ "${SEARCH:-0}" = 1 ]; then
    f="$DIR/search.sql"
    cat >"$f" <<SQL
\\set base random(1, 9000000000000000)
BEGIN;
INSERT INTO search_docs (message_id, room_id, sender_id, timestamp, content) SELECT 's' || :base::text || '_' || g, 'r1', 'u1_0', 0, repeat(md5(random()::text || g::text), 4) FROM generate_series(1, 500) g ON CONFLICT (message_id) DO UPDATE SET content = excluded.content;
COMMIT;
SQL
    chown postgres "$f"
    $PSQL -c "ALTER SYSTEM SET synchronous_commit = on" -c "SELECT pg_reload_conf()" >/dev/null
    rates=""; cpus=""; wals=""; r=0
    while [ $r -lt "$RUNS" ]; do
        t0=$(pg_ticks); w0=$($PSQL -Atc "SELECT pg_current_wal_lsn()")
        as_pg "$PGBIN/pgbench" -n -M prepared -h "$DIR" -p 54329 -U postgres -c 1 -j 1 -T "$SECONDS_EACH" -f "$f" postgres >"$DIR/out" 2>&1 || true
        sleep 0.2
        t1=$(pg_ticks); wal=$($PSQL -Atc "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$w0')::bigint")
        rows=$(( $(sed -n "s/^number of transactions actually processed: \([0-9]*\).*/\1/p" "$DIR/out") * 500 ))
        rates="$rates $((rows / SECONDS_EACH))"
        cpus="$cpus $(echo "($t1 - $t0) * 1000000 / $HZ / $rows" | bc)"
        wals="$wals $(echo "$wal / $rows" | bc)"
        r=$((r+1))
    done
    echo "# search_docs, 500 rows a transaction, 1 client: rows/s ($rates), server µs/row ($cpus), WAL B/row ($wals)"
fi
[ -s "$DIR/notes" ] && echo "# errors, failures, retries:" && cat "$DIR/notes"
exit 0
