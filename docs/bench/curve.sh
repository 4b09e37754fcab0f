#!/usr/bin/env bash
# What CURVE costs end to end (docs/benchmarks.md, "Issue 15, the
# authenticated bus"): §1's throughput scenario on `run: all` with the bus
# on loopback tcp://, plain (`bus.insecure`) and then with the host's own
# key pair listed in its peers file for its own broker, interleaved (plain,
# curve, plain, ...), RUNS of each. Prints each run's summary and `cpu:`
# line, then the medians per process (µs of CPU a message).
#
#   swift build -c release && RUNS=5 docs/bench/curve.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-5}
CHATD=${CHATD:-.build/release/chatd}
CHATD_LOAD=${CHATD_LOAD:-.build/release/chatd-load}
LOAD_ARGS=${LOAD_ARGS:---store-workers 1 --rooms 8 --senders 4 --messages 1000 --window 100 --runs 1}
# A port free now (the kernel's pick), kept for every run: the peers file's
# line names it. Something else could take it in between; BUS overrides.
BUS=${BUS:-tcp://127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
OUT=${OUT:-$(mktemp -d /tmp/chatd-curve.XXXXXX)}
mkdir -p "$OUT"
echo "logs in $OUT; $(uptime)"
# The key's line for the peers file names this host's broker (CHAT_BUS at keygen).
env -u CHAT_RUN CHAT_BUS=$BUS "$CHATD" keygen --out "$OUT/bus.key" --host bench --force | tail -1 > "$OUT/bus-peers"
chmod 600 "$OUT/bus.key"; chmod 644 "$OUT/bus-peers"
cat "$OUT/bus-peers"

for round in $(seq "$RUNS"); do
  for mode in plain curve; do
    log=$OUT/$mode-$round.txt
    if [ $mode = curve ]; then
      CHAT_BUS=$BUS CHAT_BUS_KEY=$OUT/bus.key CHAT_BUS_PEER_KEYS=$OUT/bus-peers CHATD_BINARY=$CHATD "$CHATD_LOAD" $LOAD_ARGS > "$log" 2>&1
    else
      CHAT_BUS=$BUS CHAT_BUS_INSECURE=true CHATD_BINARY=$CHATD "$CHATD_LOAD" $LOAD_ARGS > "$log" 2>&1
    fi || { echo "FAILED: $mode round $round, see $log"; tail -5 "$log"; exit 1; }
    echo "$mode $round: $(grep '^summary:' "$log" | tail -1) [load $(cut -d' ' -f1 /proc/loadavg)]"
  done
done

python3 - "$OUT" <<'EOF'
import glob, re, statistics, sys
out = sys.argv[1]
for mode in ("plain", "curve"):
    rates, costs, procs = [], [], {}
    for path in sorted(glob.glob(f"{out}/{mode}-*.txt")):
        text = open(path).read()
        summary = [l for l in text.splitlines() if l.startswith("summary:")][-1]
        rates.append(float(re.search(r"([\d.]+) msg/s persisted", summary).group(1)))
        costs.append(float(re.search(r"server CPU ([\d.]+) µs", summary).group(1)))
        cpu = [l for l in text.splitlines() if l.strip().startswith("cpu:")][-1]
        for proc, micro in re.findall(r"([\w.+ ]+?) ([\d.]+) µs/\w+ \(\d+%\)", cpu.split("cpu:", 1)[1]):
            procs.setdefault(proc.strip(" ,"), []).append(float(micro))
    print(f"{mode}: {statistics.median(rates):.0f} msg/s (runs {' · '.join(f'{r:.0f}' for r in rates)}), "
          f"server CPU {statistics.median(costs):.0f} µs/msg (runs {' · '.join(f'{c:.0f}' for c in costs)})")
    print("  per process, median µs/msg: " + ", ".join(f"{p} {statistics.median(v):.1f} ({' · '.join(f'{x:.1f}' for x in v)})" for p, v in procs.items()))
EOF
