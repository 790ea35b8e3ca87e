#!/usr/bin/env bash
# The search role down while Service A takes writes: every role in its own process over a
# private PostgreSQL 15 cluster (port BENCH_PG_PORT, default 55434; the machine's own PostgreSQL
# is never touched), search stopped (SIGTERM), then BENCH_RATE (default 50) `POST /sequence`
# per second through the gateway for BENCH_SECONDS (default 60), then search started again.
# Prints the writes failed (sequence acknowledges and keeps the change in its outbox), the
# outbox depth, the time from search's start until every acknowledged element is found by
# search and until the outbox is empty, and the acknowledged writes lost.
# Usage: bench/faults/search-down.sh          BENCH_BIN=path bench/faults/search-down.sh
# Needs python3 with aiohttp and pyotp (installed with pip if missing), runuser, PostgreSQL 15
# binaries in /usr/lib/postgresql/15/bin. Ports BENCH_PORT (default 18700) … +6.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else cargo build --release --quiet; bin=$PWD/target/release/fountain; fi
python3 -c 'import aiohttp, pyotp' 2>/dev/null || pip install --quiet aiohttp pyotp
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $("$bin" --version)"
timeout 900 python3 bench/faults/search-down.py "$bin" "$work"
