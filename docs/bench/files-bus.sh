#!/usr/bin/env bash
# Attachments over the bus (issue 15): upload and download of a 10 MiB file
# with curl, `attachments: local` against `attachments: bus`, on one host
# (so the difference is the bus's own cost, no network). Each mode runs on
# a release chatd of its own temporary data directory; the runs interleave
# (local, bus, local, ...). Per run: wall time of each curl, and the CPU time
# (/proc/<pid>/task/*/schedstat, ns) the frontend, the files worker and the
# supervisor (whose broker forwards every chunk) spent over the upload and
# the download together. curl's `Expect: 100-continue` wait is turned off.
#
#   swift build -c release && RUNS=5 docs/bench/files-bus.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-5}
SIZE_MB=${SIZE_MB:-10}
BIN=${CHATD:-.build/release/chatd}
top=$(mktemp -d /tmp/chatd-files-bus.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$top"' EXIT
head -c $(( SIZE_MB << 20 )) /dev/urandom > "$top/blob"

start() {  # mode -> "port dir token room"
  local mode=$1 dir=$top/$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$dir"
  CHAT_DATA_DIR=$dir/data CHAT_LISTEN=127.0.0.1:$port CHAT_STORE_WORKERS=1 CHAT_FRONTENDS=1 CHAT_LOG_LEVEL=warning \
    CHAT_RATE_LIMITS=off CHAT_ATTACHMENTS=$mode "$BIN" serve 2>"$dir/log" &
  pids+=($!)
  echo $! > "$dir/pid"
  until curl -fs "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.2; done
  local token room
  token=$(CHAT_DATA_DIR=$dir/data "$BIN" token --sub bench)
  room=$(curl -fs -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"name":"files"}' \
    "http://127.0.0.1:$port/api/chat/rooms/" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  echo "$port $dir $token $room"
}

child() {  # dir name -> pid of that child (ctl status)
  CHAT_DATA_DIR=$1/data "$BIN" ctl status --json | python3 -c \
    "import json,sys; print(next(c['pid'] for c in json.load(sys.stdin)['children'] if c['child']=='$2'))"
}

# Every thread's (a process's own schedstat is its main thread's alone).
cpu() { cat /proc/"$1"/task/*/schedstat | awk '{ns += $1} END {printf "%.6f\n", ns / 1e9}'; }

read -r lport ldir ltoken lroom < <(start local)
read -r bport bdir btoken broom < <(start bus)
echo "run mode upload_s download_s frontend_cpu_s files_cpu_s supervisor_cpu_s"
for run in $(seq "$RUNS"); do
  for mode in local bus; do
    if [ $mode = local ]; then port=$lport dir=$ldir token=$ltoken room=$lroom; else port=$bport dir=$bdir token=$btoken room=$broom; fi
    # New bytes each time, so content addressing cannot skip the store.
    printf '%08d%s' "$run" "$mode" | dd of="$top/blob" bs=1 seek=0 conv=notrunc status=none
    fe=$(child "$dir" frontend.0); fw=$(child "$dir" files.0)
    sv=$(cat "$dir/pid")
    fe0=$(cpu "$fe"); fw0=$(cpu "$fw"); sv0=$(cpu "$sv")
    auth="Authorization: Bearer $token"
    up=$(curl -fs -o "$top/up.json" -w '%{time_total}' -H "$auth" -H 'Expect:' -F "file_attachment=@$top/blob;filename=blob.bin" \
      "http://127.0.0.1:$port/api/chat/rooms/$room/messages/")
    url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["file_attachment"])' "$top/up.json")
    down=$(curl -fs -o "$top/down" -w '%{time_total}' -H "$auth" "http://127.0.0.1:$port$url")
    cmp -s "$top/blob" "$top/down" || { echo "download differs from upload"; exit 1; }
    echo "$run $mode $up $down $(python3 -c "print(f'{$(cpu "$fe")-$fe0:.3f} {$(cpu "$fw")-$fw0:.3f} {$(cpu "$sv")-$sv0:.3f}')")"
  done
done
