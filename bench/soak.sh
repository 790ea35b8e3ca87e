#!/usr/bin/env bash
# Soak: BENCH_SECONDS (default 600) of mixed traffic through the gateway at a steady
# BENCH_RATE (default 150 req/s) against one `fountain serve` (all roles, release build,
# SQLite in a temp dir, bcrypt at the production cost 12): sequence writes, searches, secrets
# reads (a stepped-up admin), kms key listings and API-key verifications, notify publishes (to a
# webhook), twofa status reads, one login a second, a secret rotation every 30 s. Every
# BENCH_WINDOW seconds (default 5) it records the requests answered in that window, errors,
# p50/p99, and the process's RSS (VmRSS, and of it RssAnon and RssFile) and open file descriptors; writes bench/soak.csv and
# bench/soak.png (matplotlib, installed with pip if missing), and prints the totals, first vs
# last minute, and whether every acknowledged write arrived (elements found by search, events
# and secrets.rotated delivered).
# Usage: bench/soak.sh            BENCH_BIN=path BENCH_SECONDS=60 bench/soak.sh
# Ports BENCH_PORT (default 18300) … +6.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else cargo build --release --quiet; bin=$PWD/target/release/fountain; fi
python3 -c 'import aiohttp, pyotp, matplotlib' 2>/dev/null || pip install --quiet aiohttp pyotp matplotlib
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $("$bin" --version)"
timeout $(( ${BENCH_SECONDS:-600} + 600 )) python3 bench/soak.py "$bin" "$work" "${BENCH_CSV:-bench/soak.csv}"
python3 bench/soak_plot.py "${BENCH_CSV:-bench/soak.csv}" "${BENCH_PNG:-bench/soak.png}"
echo "machine load after: $(cut -d' ' -f1-3 /proc/loadavg)"
