#!/usr/bin/env bash
# Attachment throughput (issue 5): upload and download of a 100 MB file with
# curl against a release chatd on its own temporary data directory.
#
#   swift build -c release && docs/bench/files.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
SIZE_MB=${SIZE_MB:-100}
dir=$(mktemp -d /tmp/chatd-files-bench.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export CHAT_DATA_DIR=$dir/data CHAT_LISTEN=127.0.0.1:$port CHAT_STORE_WORKERS=1 CHAT_LOG_LEVEL=warning
export CHAT_MAX_UPLOAD_BYTES=$(( (SIZE_MB + 10) << 20 ))
.build/release/chatd serve 2>"$dir/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
until curl -fs "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.2; done
token=$(.build/release/chatd token --sub bench)
auth="Authorization: Bearer $token"
room=$(curl -fs -H "$auth" -H 'Content-Type: application/json' -d '{"name":"files"}' "http://127.0.0.1:$port/api/chat/rooms/" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
head -c $(( SIZE_MB << 20 )) /dev/urandom > "$dir/blob"
for run in $(seq "$RUNS"); do
  # A byte changed per run, so each upload is new bytes (no content-address dedupe).
  printf '%08d' "$run" | dd of="$dir/blob" bs=1 seek=0 conv=notrunc status=none
  up=$(curl -fs -o "$dir/up.json" -w '%{time_total}' -H "$auth" -F "file_attachment=@$dir/blob;filename=blob.bin" \
        "http://127.0.0.1:$port/api/chat/rooms/$room/messages/")
  url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["file_attachment"])' "$dir/up.json")
  down=$(curl -fs -o "$dir/down" -w '%{time_total}' -H "$auth" "http://127.0.0.1:$port$url")
  cmp -s "$dir/blob" "$dir/down" || { echo "download differs from upload"; exit 1; }
  python3 -c "import sys; mb=$SIZE_MB; print(f'run $run: upload {mb/float(sys.argv[1]):.0f} MB/s ({sys.argv[1]} s), download {mb/float(sys.argv[2]):.0f} MB/s ({sys.argv[2]} s)')" "$up" "$down"
done
