#!/usr/bin/env bash
# notify fairness: a healthy subscriber's publish -> webhook latency, first alone, then beside a
# subscriber that accepts every connection and never answers (each call to it hangs until
# roles.notify.delivery_timeout_ms, 10 s by default).
# `fountain serve --role kms,notify` (release build, SQLite in a temp dir); an admin publishes
# BENCH_EVENTS events (default 300) as fast as one client can, or at BENCH_RATE events/s; the
# healthy subscriber (a Python HTTP server) timestamps each arrival against the publish time in
# the payload (same clock). Prints p50 / p99 / max for both runs.
# Usage: bench/notify-fairness.sh
#        BENCH_BIN=/path/to/fountain bench/notify-fairness.sh   (another build, e.g. an older one)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
if [ -n "${BENCH_BIN:-}" ]; then
  bin=$BENCH_BIN
else
  cargo build --release --quiet
  bin=$PWD/target/release/fountain
fi
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

offset=${BENCH_PORT_OFFSET:-21000}
kms_port=$((8003 + offset))
notify_port=$((8006 + offset))
export FOUNTAIN_DATA__DIR="$work/data" FOUNTAIN_LOG__LEVEL=warn FOUNTAIN_ROLES__KMS__BCRYPT_COST=4 \
       FOUNTAIN_ROLES__KMS__PORT="$kms_port" FOUNTAIN_ROLES__NOTIFY__PORT="$notify_port"
printf 'bench password 1234\n' > "$work/pw"
"$bin" admin create-user --init --username bench --role admin --password-file "$work/pw" >/dev/null
"$bin" serve --role kms,notify > "$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$notify_port/health" >/dev/null 2>&1 && break; sleep 0.1; done

echo "machine: $(nproc) cores; $("$bin" --version); events per run: ${BENCH_EVENTS:-300}"
KMS="http://127.0.0.1:$kms_port" NOTIFY="http://127.0.0.1:$notify_port" python3 - <<'PY'
import http.server, json, os, socket, threading, time, urllib.request

KMS, NOTIFY = os.environ["KMS"], os.environ["NOTIFY"]
EVENTS = int(os.environ.get("BENCH_EVENTS", "300"))
RATE = float(os.environ.get("BENCH_RATE", "0"))

def call(url, body, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")

token = call(KMS + "/login", {"username": "bench", "password": "bench password 1234"})["access_token"]

arrivals = {}  # topic -> {event id: latency of its first arrival, seconds}
lock = threading.Lock()

class Healthy(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        latency = time.time() - body["payload"]["sentAt"]
        with lock:
            arrivals.setdefault(body["topic"], {}).setdefault(body["id"], latency)
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 drops connections (1 s SYN retries)

healthy = Server(("127.0.0.1", 0), Healthy)
threading.Thread(target=healthy.serve_forever, daemon=True).start()

silent = socket.socket()
silent.bind(("127.0.0.1", 0))
silent.listen(1024)
held = []
def hold():
    while True:
        held.append(silent.accept()[0])
threading.Thread(target=hold, daemon=True).start()

def run(name, topic, with_silent):
    if with_silent:
        call(NOTIFY + "/subscriptions",
             {"topics": [topic], "callbackUrl": "http://127.0.0.1:%d/hook" % silent.getsockname()[1]}, token)
    call(NOTIFY + "/subscriptions",
         {"topics": [topic], "callbackUrl": "http://127.0.0.1:%d/hook" % healthy.server_address[1]}, token)
    started = time.time()
    for n in range(EVENTS):
        if RATE > 0:
            time.sleep(max(0.0, started + n / RATE - time.time()))
        call(NOTIFY + "/events", {"topic": topic, "payload": {"n": n, "sentAt": time.time()}}, token)
    deadline = time.time() + 300
    while time.time() < deadline:
        with lock:
            got = sorted(arrivals.get(topic, {}).values())
        if len(got) >= EVENTS:
            break
        time.sleep(0.05)
    pct = lambda p: got[min(len(got) - 1, int(len(got) * p))] if got else float("nan")
    print("%-44s %4d/%d received   p50 %9.1f ms   p99 %9.1f ms   max %9.1f ms"
          % (name, len(got), EVENTS, pct(0.50) * 1000, pct(0.99) * 1000, (got[-1] if got else float("nan")) * 1000))

run("healthy subscriber alone", "bench.alone", False)
run("healthy subscriber beside a silent one", "bench.beside", True)
print("silent subscriber: %d connections accepted and held" % len(held))
PY
