#!/usr/bin/env bash
# Two builds alternating, ROUNDS rounds each, on one chatd-load scenario:
# the per-process CPU of a message (or a request), where one build's change
# is smaller than engines.sh's three-round spread (benchmarks.md §16b, §16c).
# The default scenario is §1's throughput on SQLite (8 rooms × 4 senders ×
# 1,000 messages, window 100, one store worker); ENGINE=postgres runs it on
# a throwaway PostgreSQL that chatd-load starts, ARGS another scenario.
#
#   BEFORE=/tmp/before-16 AFTER=/tmp/after-16 ROUNDS=8 docs/bench/before-after.sh
#   ENGINE=postgres ARGS="--rest rooms --room-messages 2000 --duration 8" BEFORE=... AFTER=... docs/bench/before-after.sh
# BEFORE and AFTER each hold a release `chatd` and `chatd-load`.
set -euo pipefail
ROUNDS=${ROUNDS:-8}
ENGINE=${ENGINE:-sqlite}
ARGS=${ARGS:---store-workers 1 --rooms 8 --senders 4 --messages 1000 --window 100}
for i in $(seq "$ROUNDS"); do
  for dir in "$BEFORE" "$AFTER"; do
    if [ "$ENGINE" = postgres ]; then
      # shellcheck disable=SC2086
      out=$(CHATD_TEST_POSTGRES=1 CHATD_BINARY="$dir/chatd" "$dir/chatd-load" $ARGS --runs 1 2>&1)
    else
      # shellcheck disable=SC2086
      out=$(env -u CHATD_TEST_POSTGRES CHATD_BINARY="$dir/chatd" "$dir/chatd-load" $ARGS --runs 1 2>&1)
    fi
    echo "$i $dir load=$(cut -d' ' -f1 /proc/loadavg) $(echo "$out" | grep '^summary:' | grep -o '[0-9,.]* msg/s\|[0-9,.]* req/s\|server CPU [0-9.]* µs/[a-z]*' | tr '\n' ' ')|" \
         "$(echo "$out" | grep 'cpu:' | tail -1 | sed -E 's/^ *cpu: //; s/ µs\/[a-z]+ \([0-9]+%\)//g')"
  done
done
