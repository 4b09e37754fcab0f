#!/usr/bin/env bash
# docs/capacity.md §9's scaled-down check, by hand as docs/multihost-test.md
# "By hand" builds it: two `run: frontend` hosts (one frontend process
# each, each its own broker) and one `run: workers` host (4 store shards)
# as network namespaces on a bridge, CURVE keys on every host, SQLite on
# the workers host's disk. chatd-load, in the machine's namespace, drives
# both frontend hosts (`--target ... --split`: each room's members over the
# two in turn) at the model's load per frontend process, and reads every
# host's processes' CPU from their control sockets. Everything started is
# stopped by pid and the namespaces (prefix `bcap`, not the test's `cns`)
# are deleted on exit. As root.
#
#   swift build -c release && RUNS=3 docs/bench/capacity-netns.sh
#   LOAD_ARGS="--rooms 20 --members 40 --senders 1 --message-bytes 128 --rate 1500 --messages 1500" docs/bench/capacity-netns.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "capacity-netns.sh: run as root (ip netns)" >&2; exit 1; }
RUNS=${RUNS:-3}
CHATD=$(realpath "${CHATD:-.build/release/chatd}")
CHATD_LOAD=$(realpath "${CHATD_LOAD:-.build/release/chatd-load}")
LOAD_ARGS=${LOAD_ARGS:---rooms 20 --members 40 --senders 1 --message-bytes 128 --rate 1500 --messages 1500}
STORE_WORKERS=${STORE_WORKERS:-4}
P=bcap$$
# A third octet no route of the machine mentions.
N=$(for n in $(seq 200 249); do ip route show table all | grep -q "10\.231\.$n\." || { echo $n; break; }; done)
[ -n "$N" ] || { echo "capacity-netns.sh: no free 10.231.200-249.0/24" >&2; exit 1; }
DIR=$(mktemp -d /tmp/$P.XXXX)
pids=()
hosts=(frontend1 frontend2 workers)

teardown() {
  set +e
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  wait 2>/dev/null
  for h in "${hosts[@]}"; do ip netns del $P-$h 2>/dev/null; done
  ip netns del $P-switch 2>/dev/null   # takes the machine's veth $P and its route with it
  [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap teardown EXIT

ip netns add $P-switch
ip -n $P-switch link set dev lo up
ip -n $P-switch link add br0 type bridge
ip -n $P-switch link set dev br0 up
ip link add $P type veth peer name uplink netns $P-switch
ip -n $P-switch link set dev uplink master br0 up
ip addr add 10.231.$N.254/24 dev $P
ip link set dev $P up
for i in 1 2 3; do
  h=${hosts[$((i - 1))]}
  ip netns add $P-$h
  ip -n $P-$h link set dev lo up
  ip -n $P-$h link add eth0 type veth peer name port$i netns $P-switch
  ip -n $P-switch link set dev port$i master br0 up
  ip -n $P-$h addr add 10.231.$N.$i/24 dev eth0
  ip -n $P-$h link set dev eth0 up
  mkdir -p "$DIR/$h"
done
BUS1=tcp://10.231.$N.1:7400 BUS2=tcp://10.231.$N.2:7400
# Exported, not passed as an argument: argv is world-readable in /proc.
CHAT_JWT_SECRET=$(openssl rand -hex 32)
export CHAT_JWT_SECRET

# Keys: a broker's line names its bus address (CHAT_RUN/CHAT_BUS at keygen).
env -i PATH="$PATH" CHAT_RUN=frontend CHAT_BUS=$BUS1 "$CHATD" keygen --out "$DIR/frontend1/bus.key" --host frontend1 | tail -1 > "$DIR/peers"
env -i PATH="$PATH" CHAT_RUN=frontend CHAT_BUS=$BUS2 "$CHATD" keygen --out "$DIR/frontend2/bus.key" --host frontend2 | tail -1 >> "$DIR/peers"
env -i PATH="$PATH" "$CHATD" keygen --out "$DIR/workers/bus.key" --host workers | tail -1 >> "$DIR/peers"
chmod 644 "$DIR/peers"

serve() {  # host, then CHAT_* settings
  local h=$1; shift
  # A clean environment (as env -i) that keeps the exported secret out of argv:
  # every other variable stays a shell variable, not exported (CHATD, DIR ...
  # may have come from the environment). The subshell's pid becomes chatd's
  # (ip netns exec execs it).
  (
    for v in $(compgen -e); do case $v in PATH|CHAT_JWT_SECRET) ;; *) export -n "$v" ;; esac; done
    export CHAT_HOST=$h CHAT_DATA_DIR="$DIR/$h/data" CHAT_RUNTIME_DIR="$DIR/$h/run" \
      CHAT_BUS_KEY="$DIR/$h/bus.key" CHAT_BUS_PEER_KEYS="$DIR/peers" CHAT_LOG_LEVEL=warning CHAT_RATE_LIMITS=off "$@"
    exec ip netns exec $P-$h "$CHATD" serve --die-with-parent
  ) > "$DIR/$h/chatd.log" 2>&1 &
  pids+=($!)
}
serve workers CHAT_RUN=workers CHAT_PEERS=$BUS1,$BUS2 CHAT_STORE_WORKERS=$STORE_WORKERS
serve frontend1 CHAT_RUN=frontend CHAT_BUS=$BUS1 CHAT_PEERS=$BUS2 CHAT_LISTEN=10.231.$N.1:8000 CHAT_FRONTENDS=1 CHAT_STORE_WORKERS=$STORE_WORKERS
serve frontend2 CHAT_RUN=frontend CHAT_BUS=$BUS2 CHAT_PEERS=$BUS1 CHAT_LISTEN=10.231.$N.2:8000 CHAT_FRONTENDS=1 CHAT_STORE_WORKERS=$STORE_WORKERS
for i in 1 2; do
  for _ in $(seq 600); do curl -fs -o /dev/null http://10.231.$N.$i:8000/healthz && break; sleep 0.1; done
  curl -fs -o /dev/null http://10.231.$N.$i:8000/healthz || { echo "frontend$i not healthy"; tail -n 20 "$DIR"/*/chatd.log; exit 1; }
done
echo "hosts up (10.231.$N.1-3, $P-*); $(uptime)"

"$CHATD_LOAD" --target http://10.231.$N.1:8000,http://10.231.$N.2:8000 --split \
  --control "$DIR/frontend1/run/control.sock,$DIR/frontend2/run/control.sock,$DIR/workers/run/control.sock" $LOAD_ARGS --runs "$RUNS"
echo "done; $(uptime)"
