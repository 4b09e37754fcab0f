#!/usr/bin/env bash
# A perf profile of the store worker (store.0) under §1's load, 5 s from 3 s
# in: `docs/bench/perf-store.sh /tmp/after-16 /tmp/perf-after.data`, then
# `perf report -i /tmp/perf-after.data --children --sort sym` (benchmarks.md §16b).
set -euo pipefail
dir=$1 out=$2
env -u CHATD_TEST_POSTGRES CHATD_BINARY="$dir/chatd" "$dir/chatd-load" --store-workers 1 --rooms 8 --senders 4 \
    --messages 4000 --window 100 --runs 1 > "$out.load" 2>&1 &
load=$!
pid=""
for _ in $(seq 100); do
  pid=$(pgrep -f "$dir/chatd worker --role store --shard 0" | head -1) && break
  sleep 0.1
done
sleep 3
perf record -F 1999 -g -p "$pid" -o "$out" -- sleep 5
wait $load
grep '^summary:' "$out.load"
