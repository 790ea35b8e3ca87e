#!/usr/bin/env bash
# Service A → search, end to end: `POST /sequence` at a steady rate (default 100 writes/s for
# 30 s, every write a new element), and a poller that asks search's `POST /search` for every
# element written and not yet found (one query per round, `filter_by element_id:[…]`) until it
# is. Per element, the lag is from sending the write to the first search that finds it (so it
# includes the write itself, the outbox, the sync call and the search's commit). Prints p50/p99/
# max of that lag, the write latency, the outbox depth when the last write was answered, and
# whether every element was found.
# Usage: bench/sequence-search.sh                                     (SQLite in a temp dir)
#        BENCH_RATE=100 BENCH_SECONDS=30 BENCH_BIN=path BENCH_DATABASE_URL=postgres://… bench/sequence-search.sh
# Needs curl and python3. Ports BENCH_PORT (default 18400) … +6.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else cargo build --release --quiet; bin=$PWD/target/release/fountain; fi
work=$(mktemp -d)
rate=${BENCH_RATE:-100}
duration=${BENCH_SECONDS:-30}
base_port=${BENCH_PORT:-18400}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

export FOUNTAIN_DATA__DIR="$work/data" FOUNTAIN_LOG__LEVEL=error \
       FOUNTAIN_ROLES__KMS__BCRYPT_COST=4 \
       FOUNTAIN_ROLES__GATEWAY__PORT=$base_port FOUNTAIN_ROLES__SEARCH__PORT=$((base_port + 1)) \
       FOUNTAIN_ROLES__SEQUENCE__PORT=$((base_port + 2)) FOUNTAIN_ROLES__KMS__PORT=$((base_port + 3)) \
       FOUNTAIN_ROLES__TWOFA__PORT=$((base_port + 4)) FOUNTAIN_ROLES__SECRETS__PORT=$((base_port + 5)) \
       FOUNTAIN_ROLES__NOTIFY__PORT=$((base_port + 6))
[ -n "${BENCH_DATABASE_URL:-}" ] && export FOUNTAIN_DATABASE__URL="$BENCH_DATABASE_URL"
"$bin" serve --role all > "$work/fountain.log" 2>&1 &
pids+=($!)
search="http://127.0.0.1:$((base_port + 1))"
sequence="http://127.0.0.1:$((base_port + 2))"
kms="http://127.0.0.1:$((base_port + 3))"
for _ in $(seq 1 300); do curl -fs "$sequence/ready" >/dev/null 2>&1 && curl -fs "$search/ready" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$search/ready" >/dev/null || { echo "fountain did not start:" >&2; tail -5 "$work/fountain.log" >&2; exit 1; }

json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
curl -fs "$kms/register" -H 'content-type: application/json' \
  -d '{"username":"bench","password":"bench password 1234"}' >/dev/null
token=$(curl -fs "$kms/login" -H 'content-type: application/json' \
  -d '{"username":"bench","password":"bench password 1234"}' | json access_token)

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); database: ${BENCH_DATABASE_URL:-sqlite}; search: embedded; $rate writes/s for ${duration}s"
python3 - "$sequence" "$search" "$token" "$rate" "$duration" <<'PY'
import http.client, json, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

sequence, search, token, rate, duration = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
total = rate * duration
headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
local = threading.local()

def post(base, path, body):
    """One JSON POST on this thread's keep-alive connection to `base`."""
    conns = local.__dict__.setdefault("conns", {})
    if base not in conns:
        u = urlparse(base)
        conns[base] = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn = conns[base]
    try:
        conn.request("POST", path, json.dumps(body), headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    except (http.client.HTTPException, OSError):
        conn.close()
        del conns[base]
        raise

sent, answered, status_of, found_at = {}, {}, {}, {}
lock = threading.Lock()

def write(element_id):
    start = time.monotonic()
    with lock:
        sent[element_id] = start
    status, _ = post(sequence, "/sequence", {"elementType": "action", "elementId": element_id,
                                             "comment": f"INT. WAREHOUSE - NIGHT. Take {element_id}."})
    with lock:
        answered[element_id] = time.monotonic()
        status_of[element_id] = status

done_writing = threading.Event()

def poll():
    """Asks search for every element sent and not yet found, up to 250 per query, until all are."""
    while True:
        with lock:
            pending = sorted(i for i in sent if i not in found_at)
        if not pending:
            if done_writing.is_set() and len(found_at) == total:
                return
            time.sleep(0.005)
            continue
        for chunk in (pending[k:k + 250] for k in range(0, len(pending), 250)):
            query = {"q": "*", "query_by": "comment", "max_hits": 250,
                     "filter_by": "element_type:=action && element_id:[" + ",".join(map(str, chunk)) + "]"}
            status, body = post(search, "/search", query)
            now = time.monotonic()
            if status != 200:
                raise SystemExit(f"search answered {status}: {body[:200]!r}")
            with lock:
                for hit in json.loads(body)["hits"]:
                    found_at.setdefault(hit["element_id"], now)
        if done_writing.is_set() and time.monotonic() > deadline:
            return

deadline = float("inf")
poller = threading.Thread(target=poll)
poller.start()
begin = time.monotonic()
with ThreadPoolExecutor(max_workers=32) as pool:
    futures = []
    for i in range(total):
        due = begin + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        futures.append(pool.submit(write, i + 1))
    for f in futures:
        f.result()
writing = time.monotonic() - begin
conn = http.client.HTTPConnection(urlparse(sequence).hostname, urlparse(sequence).port)
conn.request("GET", "/sync/status", headers=headers)
sync_status = json.loads(conn.getresponse().read())
deadline = time.monotonic() + 60
done_writing.set()
poller.join()

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] * 1000

created = sum(1 for s in status_of.values() if s == 201)
lags = [found_at[i] - sent[i] for i in found_at]
writes = [answered[i] - sent[i] for i in answered]
print(f"writes: {total} sent in {writing:.1f} s ({total / writing:.1f}/s), {created} answered 201")
print(f"write latency           p50 {pct(writes, 50):7.1f} ms  p99 {pct(writes, 99):7.1f} ms  max {max(writes) * 1000:7.1f} ms")
print(f"write -> searchable     p50 {pct(lags, 50):7.1f} ms  p99 {pct(lags, 99):7.1f} ms  max {max(lags) * 1000:7.1f} ms")
print(f"found: {len(found_at)} of {total}; outbox when the last write was answered: "
      f"depth {sync_status['outboxDepth']}, oldest {sync_status['oldestPendingAgeSeconds']:.2f} s, "
      f"failed {sync_status['failedCount']}")
PY
grep -E '^sequence_(sync_deliveries_total|outbox_depth)' <(curl -fs "$sequence/metrics") || true
