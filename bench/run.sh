#!/usr/bin/env bash
# kms hot-path benchmark: API-key verification over HTTP, in-process JWT verification, login.
# Every number is printed beside a peer measured in the same run on the same machine:
#   - GET /health on the same kms process (the HTTP floor: no database, no crypto),
#   - `openssl speed ed25519` (the raw signature-verify floor).
# Usage: bench/run.sh            (needs wrk and openssl; Debian: apt-get install wrk)
#        BENCH_DATABASE_URL=postgres://postgres@127.0.0.1/DB bench/run.sh   (PostgreSQL)
#        BCRYPT_COST=10 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }

# BENCH_BIN: measure a binary built elsewhere (e.g. from another commit) instead of this tree.
if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else cargo build --release --quiet; bin=$PWD/target/release/fountain; fi
work=$(mktemp -d)
port=${BENCH_PORT:-18003}
duration=${BENCH_SECONDS:-10}
cost=${BCRYPT_COST:-12}
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

export FOUNTAIN_DATA__DIR="$work/data" FOUNTAIN_ROLES__KMS__PORT="$port" FOUNTAIN_LOG__LEVEL=warn \
       FOUNTAIN_ROLES__KMS__BCRYPT_COST="$cost"
[ -n "${BENCH_DATABASE_URL:-}" ] && export FOUNTAIN_DATABASE__URL="$BENCH_DATABASE_URL"
password='bench password 1234'
printf '%s\n' "$password" > "$work/pw"
"$bin" admin create-user --init --username bench --role admin --password-file "$work/pw" >/dev/null
"$bin" serve --role kms > "$work/kms.log" 2>&1 &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -fs "$base/health" >/dev/null 2>&1 && break; sleep 0.1; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
token=$(curl -fs "$base/login" -H 'content-type: application/json' \
  -d "{\"username\":\"bench\",\"password\":\"$password\"}" | json access_token)
key=$(curl -fs "$base/keys" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"service_name":"bench"}' | json api_key)

cat > "$work/verify.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"api_key":"$key"}'
wrk.headers["Content-Type"] = "application/json"
LUA
cat > "$work/login.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"username":"bench","password":"$password"}'
wrk.headers["Content-Type"] = "application/json"
LUA

summary() { # name, wrk output file
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$2")
  p50=$(awk '$1=="50%" {print $2}' "$2")
  p99=$(awk '$1=="99%" {print $2}' "$2")
  printf '%-34s %12s req/s   p50 %8s   p99 %8s\n' "$1" "$rps" "$p50" "$p99"
}

echo "machine: $(nproc) cores; database: ${BENCH_DATABASE_URL:-sqlite}; wrk -t2 -c64 -d${duration}s"
wrk -t2 -c64 -d"${duration}s" --latency "$base/health" > "$work/health.txt"
summary "GET /health (HTTP floor, peer)" "$work/health.txt"
wrk -t2 -c64 -d"${duration}s" --latency -s "$work/verify.lua" "$base/keys/verify" > "$work/verify.txt"
summary "POST /keys/verify (VALID key)" "$work/verify.txt"
grep -q '"code":"VALID"' <(curl -fs "$base/keys/verify" -H 'content-type: application/json' -d "{\"api_key\":\"$key\"}") \
  || { echo "verify did not answer VALID" >&2; exit 1; }
wrk -t2 -c4 -d"${duration}s" --latency -s "$work/login.lua" "$base/login" > "$work/login.txt"
summary "POST /login (bcrypt cost $cost, c=4)" "$work/login.txt"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

echo
cargo bench --quiet --bench jwt_verify 2>/dev/null | grep jwt_verify
openssl speed -seconds 3 ed25519 2>/dev/null \
  | awk '/Ed25519/ {print "openssl Ed25519 raw verify (peer): " $NF "/s on one thread (sign " $(NF-1) "/s)"}'
