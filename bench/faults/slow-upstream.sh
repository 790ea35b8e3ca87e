#!/usr/bin/env bash
# A slow upstream behind the gateway: `fountain serve --role gateway,kms` (release build) with
# two upstreams routed through it (bench/faults/upstream.py: /slow/ answers every request after
# BENCH_SLOW_SECONDS, default 5; /fast/ at once). Three runs of BENCH_SECONDS (default 20): the
# fast route alone at BENCH_FAST_RATE (default 150 req/s, one client), then beside the slow route
# at BENCH_SLOW_RATE (default 50 req/s, another client) with the default upstream timeout (30 s),
# then the same with roles.gateway.upstream_timeout_seconds = BENCH_SHORT_TIMEOUT (default 2).
# Prints the fast route's p50/p99 in each run, the slow route's outcome (its 5 s answers, or 504
# JSON errors), and the gateway process's RSS, open fds and connections to the slow upstream,
# during the runs and 10 s and 50 s after them.
# Usage: bench/faults/slow-upstream.sh          BENCH_BIN=path bench/faults/slow-upstream.sh
# Needs python3 with aiohttp (installed with pip if missing) and ss. Ports BENCH_PORT (default
# 18600) … +6 and +10, +11 for the upstreams.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else cargo build --release --quiet; bin=$PWD/target/release/fountain; fi
python3 -c 'import aiohttp, pyotp' 2>/dev/null || pip install --quiet aiohttp pyotp
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $("$bin" --version)"
timeout 600 python3 bench/faults/slow-upstream.py "$bin" "$work"
