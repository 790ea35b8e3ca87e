#!/usr/bin/env bash
# Service A write path: POST /sequence at 64 connections, every request a new element of one
# type (so every request competes for the next sequence number of that type), then a check
# that no number was given twice. Printed beside GET /health on the same process (the HTTP
# floor). The outbox worker delivers to a sink that answers 200 (search's part is not measured
# here) and the time the outbox takes to drain is printed too.
# Usage: bench/sequence.sh                                            (SQLite in a temp dir)
#        BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/DB bench/sequence.sh
# Needs wrk (apt-get install wrk), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }

if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else cargo build --release --quiet; bin=$PWD/target/release/fountain; fi
work=$(mktemp -d)
duration=${BENCH_SECONDS:-10}
base_port=${BENCH_PORT:-18100}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# The sink search's POST /documents/sync stands for: answers 200 to every call.
sink_port=$((base_port + 9))
python3 - "$sink_port" > "$work/sink.log" 2>&1 <<'PY' &
import sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"message":"ok"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
pids+=($!)

export FOUNTAIN_DATA__DIR="$work/data" FOUNTAIN_LOG__LEVEL=error \
       FOUNTAIN_ROLES__KMS__BCRYPT_COST=4 \
       FOUNTAIN_ROLES__GATEWAY__PORT=$base_port FOUNTAIN_ROLES__SEARCH__PORT=$((base_port + 1)) \
       FOUNTAIN_ROLES__SEQUENCE__PORT=$((base_port + 2)) FOUNTAIN_ROLES__KMS__PORT=$((base_port + 3)) \
       FOUNTAIN_ROLES__TWOFA__PORT=$((base_port + 4)) FOUNTAIN_ROLES__SECRETS__PORT=$((base_port + 5)) \
       FOUNTAIN_ROLES__NOTIFY__PORT=$((base_port + 6)) \
       FOUNTAIN_ROLES__SEQUENCE__SEARCH_SERVICE=sink FOUNTAIN_PEERS__SINK="http://127.0.0.1:$sink_port"
[ -n "${BENCH_DATABASE_URL:-}" ] && export FOUNTAIN_DATABASE__URL="$BENCH_DATABASE_URL"
"$bin" serve --role all > "$work/fountain.log" 2>&1 &
pids+=($!)
base="http://127.0.0.1:$((base_port + 2))"
kms="http://127.0.0.1:$((base_port + 3))"
for _ in $(seq 1 300); do curl -fs "$base/ready" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$base/ready" >/dev/null || { echo "fountain did not start:" >&2; tail -5 "$work/fountain.log" >&2; exit 1; }

json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
curl -fs "$kms/register" -H 'content-type: application/json' \
  -d '{"username":"bench","password":"bench password 1234"}' >/dev/null
token=$(curl -fs "$kms/login" -H 'content-type: application/json' \
  -d '{"username":"bench","password":"bench password 1234"}' | json access_token)

# Each wrk thread numbers its own element ids (thread t of n: t, t+n, t+2n…): all distinct.
cat > "$work/create.lua" <<LUA
local threads = 2
local counter = 0
local tid = 0
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
function init(args)
  tid = tonumber(wrk.thread:get("tid")) or 0
end
function request()
  counter = counter + 1
  local id = (counter - 1) * threads + tid + 1
  return wrk.format("POST", "/sequence", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer $token"
  }, '{"elementType":"action","elementId":' .. id .. ',"comment":"INT. HOUSE - NIGHT"}')
end
LUA

summary() { # name, wrk output file
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' "$2")
  p50=$(awk '$1=="50%" {print $2}' "$2")
  p99=$(awk '$1=="99%" {print $2}' "$2")
  errors=$(awk '/Non-2xx/ {print $5}' "$2")
  printf '%-28s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' "$1" "$rps" "$p50" "$p99" "${errors:-0}"
}

echo "machine: $(nproc) cores; database: ${BENCH_DATABASE_URL:-sqlite}; wrk -t2 -c64 -d${duration}s"
wrk -t2 -c64 -d"${duration}s" --latency "$base/health" > "$work/health.txt"
summary "GET /health (floor)" "$work/health.txt"
start=$(date +%s.%N)
wrk -t2 -c64 -d"${duration}s" --latency -s "$work/create.lua" "$base" > "$work/create.txt"
summary "POST /sequence" "$work/create.txt"

# Every stored number of the type, read back page by page: none twice, none missing.
python3 - "$base" "$token" <<'PY'
import json, sys, urllib.request
base, token = sys.argv[1], sys.argv[2]
numbers, cursor = [], None
while True:
    url = f"{base}/elements?elementType=action&limit=500" + (f"&cursor={cursor}" if cursor else "")
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    page = json.load(urllib.request.urlopen(req))
    numbers += [e["sequenceNumber"] for e in page["elements"]]
    cursor = page["nextCursor"]
    if not cursor:
        break
dupes = len(numbers) - len(set(numbers))
gaps = (max(numbers) - len(numbers)) if numbers else 0
print(f"elements stored: {len(numbers)}; duplicate sequence numbers: {dupes}; numbers 1..{max(numbers, default=0)} with {gaps} gaps")
PY

# How long the outbox takes to deliver everything to the sink after the writes end.
while :; do
  depth=$(curl -fs "$base/sync/status" -H "authorization: Bearer $token" | json outboxDepth)
  [ "$depth" = "0" ] && break
  sleep 0.2
done
end=$(date +%s.%N)
echo "outbox drained $(python3 -c "print(round($end - $start - $duration, 1))") s after the writes ended"
grep -E '^sequence_sync_deliveries_total' <(curl -fs "$base/metrics") || true
