#!/usr/bin/env bash
# kill -9 of each role in turn, under load. Every role runs as its own `fountain serve --role X`
# process (its own data directory and credential, `fountain admin issue-credential --all`), all
# over one private PostgreSQL 15 cluster (initdb in a temp dir, port BENCH_PG_PORT, default
# 55432; the machine's own PostgreSQL is never touched). For each role in turn: BENCH_SECONDS
# (default 20) of load through the gateway, BENCH_RATE req/s (default 40) of requests that need
# that role plus BENCH_BACKGROUND_RATE (default 10) of sequence writes and notify publishes;
# `kill -9` of the role's process at BENCH_KILL_AT s, started again BENCH_DOWN_SECONDS later.
# Prints per role: requests failed (and their statuses), failures outside the outage, restart to
# ready and to the first success; then every acknowledged write checked after recovery: sequence
# elements found by search, notify events and secrets.rotated events delivered to a webhook.
# Usage: bench/faults/kill9.sh            BENCH_BIN=path bench/faults/kill9.sh
# Needs python3 with aiohttp and pyotp (installed with pip if missing), runuser, PostgreSQL 15
# binaries in /usr/lib/postgresql/15/bin. Ports BENCH_PORT (default 18100) … +6.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else cargo build --release --quiet; bin=$PWD/target/release/fountain; fi
python3 -c 'import aiohttp, pyotp' 2>/dev/null || pip install --quiet aiohttp pyotp
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $("$bin" --version)"
timeout 900 python3 bench/faults/kill9.py "$bin" "$work"
