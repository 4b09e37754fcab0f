#!/usr/bin/env bash
# §1's throughput scenario on SQLite (8 rooms × 4 senders × 1,000 messages,
# window 100, one store worker), two builds alternating, ROUNDS rounds each:
# the per-process CPU of a message, where one build's change is smaller than
# engines.sh's three-round spread (benchmarks.md §16b).
#
#   BEFORE=/tmp/before-16 AFTER=/tmp/after-16 ROUNDS=8 docs/bench/before-after.sh
# BEFORE and AFTER each hold a release `chatd` and `chatd-load`.
set -euo pipefail
ROUNDS=${ROUNDS:-8}
for i in $(seq "$ROUNDS"); do
  for dir in "$BEFORE" "$AFTER"; do
    out=$(env -u CHATD_TEST_POSTGRES CHATD_BINARY="$dir/chatd" "$dir/chatd-load" \
          --store-workers 1 --rooms 8 --senders 4 --messages 1000 --window 100 --runs 1 2>&1)
    echo "$i $dir load=$(cut -d' ' -f1 /proc/loadavg) $(echo "$out" | grep '^summary:' | sed 's/.*store workers 1: //') |" \
         "$(echo "$out" | grep 'cpu:' | tail -1 | grep -o 'frontend.0 [0-9.]*\|store.0 [0-9.]*' | tr '\n' ' ')"
  done
done
