#!/usr/bin/env bash
# PostgreSQL stopped under load: `fountain serve` (all roles, one process) over a private
# PostgreSQL 15 cluster (initdb in a temp dir, port BENCH_PG_PORT, default 55433; the machine's
# own PostgreSQL is never touched). BENCH_RATE req/s (default 40) of mixed requests through the
# gateway (sequence writes, notify publishes, secrets reads, logins, twofa and kms reads,
# searches); at BENCH_STOP_AT s (default 10) `pg_ctl stop -m fast`, BENCH_DOWN_SECONDS (default
# 30) later `pg_ctl start`, then BENCH_AFTER_SECONDS (default 20) more of load. fountain is not
# restarted. Prints the failed requests and their statuses (each must be a clean 503 JSON error
# without internals), per kind how long a failing request waited and how soon after PostgreSQL
# came back it succeeded, and whether anything acknowledged was lost (elements found by search,
# events delivered to a webhook).
# Usage: bench/faults/pg-stop.sh            BENCH_BIN=path bench/faults/pg-stop.sh
# Needs python3 with aiohttp and pyotp (installed with pip if missing), runuser, PostgreSQL 15
# binaries in /usr/lib/postgresql/15/bin. Ports BENCH_PORT (default 18200) … +6.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else cargo build --release --quiet; bin=$PWD/target/release/fountain; fi
python3 -c 'import aiohttp, pyotp' 2>/dev/null || pip install --quiet aiohttp pyotp
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $("$bin" --version)"
timeout 600 python3 bench/faults/pg-stop.py "$bin" "$work"
