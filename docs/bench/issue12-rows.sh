#!/bin/bash
# Issue 12's rows (docs/benchmarks.md §11), two server builds compared row by row,
# before then after, both driven by the after build's chatd-load (so the tool's
# own changes do not count as the server's).
# Usage: docs/bench/issue12-rows.sh <before-dir> <after-dir> <out-file>
# where each dir holds a release `chatd` (and the after dir its `chatd-load`).
B=$1; A=$2; OUT=$3
: > $OUT
run() { # label dir args...
  local label=$1 dir=$2; shift 2
  echo "### $label $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg): $*" >> $OUT
  CHATD_BINARY=$dir/chatd timeout 900 $A/chatd-load "$@" 2>&1 | grep -E '^(run|summary|  cpu|cpu)' >> $OUT
}
both() { run before $B "$@"; run after $A "$@"; }
both --rooms 10 --members 10 --senders 1 --window 10 --message-bytes 128 --messages 10000 --runs 3
both --rooms 10 --members 10 --senders 1 --message-bytes 128 --rate 500 --messages 500 --runs 3
both --fanout 1000 --rate 100 --messages 1000 --runs 3
both --rest messages --duration 10 --runs 3
both --rest rooms --duration 10 --runs 3
both --rooms 10 --members 10 --senders 1 --message-bytes 128 --rate 4300 --messages 4300 --runs 3
both --recovery 7
both --memory --settle 3
both --idle 15000
