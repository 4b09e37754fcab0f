#!/usr/bin/env bash
# SQLite and PostgreSQL side by side (docs/benchmarks.md §15): the same
# binaries in the same run, the engines alternating (sqlite, postgres,
# sqlite, ...), RUNS rounds of each. Per round and engine, chatd-load runs
# §1's throughput scenario (8 rooms × 4 senders × 1,000 messages, window
# 100, one store worker) and the REST reads of §2 (`--rest rooms`, `--rest
# messages`: wrk -t1 -c16). With CHATD_TEST_POSTGRES=1 the server chatd-load
# starts puts its data in a fresh database of a throwaway PostgreSQL
# (fsync off) started by chatd-load, whose CPU (postmaster and backends) is
# the `postgres` entry of the `cpu:` line and is counted in the server's.
# Prints each run's summary and then the medians, per engine.
#
#   swift build -c release && RUNS=3 docs/bench/engines.sh
#   CHATD=/path/chatd CHATD_LOAD=/path/chatd-load OUT=/tmp/engines docs/bench/engines.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
ROOM_MESSAGES=${ROOM_MESSAGES:-100000}
LOAD_ARGS=${LOAD_ARGS:---store-workers 1 --rooms 8 --senders 4 --messages 1000 --window 100}
CHATD=${CHATD:-.build/release/chatd}
CHATD_LOAD=${CHATD_LOAD:-.build/release/chatd-load}
OUT=${OUT:-$(mktemp -d /tmp/chatd-engines.XXXXXX)}
mkdir -p "$OUT"
echo "logs in $OUT; $(uptime)"

run() {  # engine round name args...
  local engine=$1 round=$2 name=$3; shift 3
  local log=$OUT/$engine-$round-$name.txt
  if [ "$engine" = postgres ]; then
    CHATD_TEST_POSTGRES=1 CHATD_BINARY=$CHATD "$CHATD_LOAD" "$@" > "$log" 2>&1
  else
    env -u CHATD_TEST_POSTGRES CHATD_BINARY=$CHATD "$CHATD_LOAD" "$@" > "$log" 2>&1
  fi || { echo "FAILED: $engine $name (round $round), see $log"; tail -5 "$log"; exit 1; }
  echo "$engine $round $name: $(grep '^summary:' "$log" | tail -1) [load $(cut -d' ' -f1 /proc/loadavg)]"
}

for round in $(seq "$RUNS"); do
  for engine in sqlite postgres; do
    run $engine "$round" throughput $LOAD_ARGS --runs 1
    run $engine "$round" rooms --rest rooms --room-messages "$ROOM_MESSAGES" --duration "$DURATION" --runs 1
    run $engine "$round" messages --rest messages --room-messages "$ROOM_MESSAGES" --duration "$DURATION" --runs 1
  done
done

python3 - "$OUT" <<'EOF'
import glob, os, re, statistics, sys
out = sys.argv[1]
def median(xs): return statistics.median(xs) if xs else float('nan')
for engine in ("sqlite", "postgres"):
    print(f"\n{engine}:")
    for name in ("throughput", "rooms", "messages"):
        rates, costs, procs = [], [], {}
        for path in sorted(glob.glob(f"{out}/{engine}-*-{name}.txt")):
            text = open(path).read()
            summary = [l for l in text.splitlines() if l.startswith("summary:")][-1]
            rate = re.search(r"([\d.]+) (msg/s persisted|req/s)", summary)
            cost = re.search(r"server CPU ([\d.]+) µs", summary)
            rates.append(float(rate.group(1)))
            costs.append(float(cost.group(1)))
            cpu = [l for l in text.splitlines() if l.strip().startswith("cpu:")][-1]
            for proc, micro in re.findall(r"([\w.+ ]+?) ([\d.]+) µs/\w+ \(\d+%\)", cpu.split("cpu:", 1)[1]):
                procs.setdefault(proc.strip(" ,"), []).append(float(micro))
        unit = "msg" if name == "throughput" else "req"
        print(f"  {name}: {median(rates):.0f} {unit}/s (runs {' · '.join(f'{r:.0f}' for r in rates)}), "
              f"server CPU {median(costs):.0f} µs/{unit} (runs {' · '.join(f'{c:.0f}' for c in costs)})")
        print("    per process, median µs/" + unit + ": " + ", ".join(f"{p} {median(v):.1f}" for p, v in procs.items()))
EOF
