#!/usr/bin/env bash
# Secret rotation → visible in the role's memory: `fountain serve` (all roles, release build),
# rotate one role's secrets over HTTP, poll that role's /metrics until fountain_secrets_version
# changes. Prints the time for each role. Usage: bench/rotation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# BENCH_BIN: measure a binary built elsewhere (e.g. from another commit) instead of this tree.
if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else cargo build --release --quiet; bin=$PWD/target/release/fountain; fi
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export FOUNTAIN_DATA__DIR="$work/data" FOUNTAIN_LOG__LEVEL=warn FOUNTAIN_ROLES__KMS__BCRYPT_COST=4
offset=${BENCH_PORT_OFFSET:-20000}
roles="gateway search sequence kms twofa secrets notify"
ports=(8000 8001 8002 8003 8004 8005 8006)
i=0
for role in $roles; do
  export "FOUNTAIN_ROLES__${role^^}__PORT=$((ports[i] + offset))"
  i=$((i + 1))
done
printf 'bench password 1234\n' > "$work/pw"
"$bin" admin create-user --init --username bench --role admin --password-file "$work/pw" >/dev/null
"$bin" serve > "$work/log" 2>&1 &
pid=$!
kms="http://127.0.0.1:$((8003 + offset))"
secrets="http://127.0.0.1:$((8005 + offset))"
for _ in $(seq 1 100); do curl -fs "$kms/health" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 1
token=$(curl -fs "$kms/login" -H 'content-type: application/json' \
  -d '{"username":"bench","password":"bench password 1234"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
version() { curl -fs "http://127.0.0.1:$1/metrics" | awk '$1=="fountain_secrets_version" {print $2}'; }
i=0
for role in $roles; do
  port=$((ports[i] + offset)); i=$((i + 1))
  before=$(version "$port")
  start=$(date +%s%N)
  curl -fs -X POST "$secrets/secrets/$role/rotate" -H "authorization: Bearer $token" >/dev/null
  while [ "$(version "$port")" = "$before" ]; do sleep 0.005; done
  end=$(date +%s%N)
  printf 'rotation of %-8s visible in the role after %6s ms (version %s -> %s)\n' \
    "$role" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')" "$before" "$(version "$port")"
done
