#!/usr/bin/env bash
# Disk full: `fountain serve` (all roles, SQLite and the embedded search index) with its data
# directory on a small tmpfs (BENCH_TMPFS_MB, default 64; needs root for mount), filled up to
# BENCH_HEADROOM_MB (default 4) by a ballast file, then BENCH_RATE req/s (default 40) through
# the gateway: 60 kB notify events, 1 kB sequence writes, twofa reads and searches, until the
# file system is full; BENCH_FULL_SECONDS (default 15) full, then the ballast is removed and the
# load runs BENCH_AFTER_SECONDS (default 15) more. fountain is not restarted. Prints the answers
# while full (each must be a clean 5xx JSON error without internals), recovery after the space
# came back, acknowledged writes lost, and `PRAGMA integrity_check` after a clean stop.
# Usage: bench/faults/disk-full.sh           BENCH_BIN=path bench/faults/disk-full.sh
# Needs root (mount -t tmpfs), python3 with aiohttp and pyotp (installed with pip if missing).
# Ports BENCH_PORT (default 18500) … +6.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else cargo build --release --quiet; bin=$PWD/target/release/fountain; fi
python3 -c 'import aiohttp, pyotp' 2>/dev/null || pip install --quiet aiohttp pyotp
work=$(mktemp -d)
mkdir "$work/mnt"
mount -t tmpfs -o "size=${BENCH_TMPFS_MB:-64}m,mode=0700" fountain-disk-full "$work/mnt"
cleanup() { umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $("$bin" --version)"
timeout 600 python3 bench/faults/disk-full.py "$bin" "$work" "$work/mnt"
