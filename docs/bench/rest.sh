#!/usr/bin/env bash
# REST read benchmark (issue 3): requests/s of the room list (a user in 100
# rooms) and of a room of 100,000 messages (first page and a cursor page),
# for chatd and, when REF is given and its server runs, the Django reference,
# with the same data and the same wrk load in one run.
#
#   swift build -c release
#   docs/bench/rest.sh                                  # chatd only
#   REF=../shared/reference/django-chat REF_PORT=8001 REF_SECRET=... docs/bench/rest.sh
#
# Prints one line per (server, endpoint, run) and the median of the runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
ENDPOINTS=${ENDPOINTS:-rooms messages cursor}
work=$(mktemp -d)
trap 'kill $fixture_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

CHATD_BINARY=.build/release/chatd .build/release/chatd-load --rest-fixture "$work/chatd.json" &
fixture_pid=$!
while [ ! -s "$work/chatd.json" ]; do kill -0 $fixture_pid || exit 1; sleep 0.5; done

servers=(chatd)
if [ -n "${REF:-}" ]; then
  CHAT_JWT_SECRET=$REF_SECRET "$REF/.venv/bin/python" docs/bench/django_fixture.py "$REF" "${REF_PORT:-8001}" "$work/django.json"
  servers+=(django)
fi

field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
# CPU time (µs) of chatd's frontend and store processes: the server's cost
# per request, which other load on the machine disturbs far less than req/s.
server_cpu() {
  local total=0 pid
  for pid in $(pgrep -f "$(readlink -f .build/release/chatd) (frontend|worker --role store)"); do
    total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat") ))
  done
  echo $(( total * 1000000 / $(getconf CLK_TCK) ))
}
for server in "${servers[@]}"; do
  token=$(field "$work/$server.json" token)
  for endpoint in $ENDPOINTS; do
    url=$(field "$work/$server.json" $endpoint)
    curl -fsS -o /dev/null -H "Authorization: Bearer $token" "$url"   # warm up, and fail early
    rates=()
    costs=()
    for run in $(seq "$RUNS"); do
      before=$(server_cpu)
      out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "Authorization: Bearer $token" "$url")
      after=$(server_cpu)
      rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      count=$(echo "$out" | awk '/requests in/ {print $1}')
      cost=$([ "$server" = chatd ] && echo $(( (after - before) / count )) || echo "?")
      echo "$server $endpoint run $run: $rate req/s, $cost µs server CPU per request"
      rates+=("$rate")
      costs+=("$cost")
    done
    median=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
    cost=$(printf '%s\n' "${costs[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")  # "?" for Django: not measured
    echo "$server $endpoint median: $median req/s, $cost µs server CPU per request"
  done
done
