#!/usr/bin/env bash
# Which HTTP client should the gateway forward with? Two minimal actix-web proxies that differ
# only in their upstream client — awc, hyper-util's pooled client, and hyper's bare connections in
# a pool of each worker's own — beside nginx `proxy_pass`, all
# in front of the same trivial upstream (nginx `return 200`), wrk -t2 -c64 on loopback,
# interleaved rounds, medians. Neither minimal proxy authenticates, logs or counts anything: the
# difference between them is the client alone.
# Usage: bench/upstream-client.sh   (needs wrk, nginx and bc: apt-get install wrk nginx bc)
# BENCH_SECONDS (default 10) per run, BENCH_ROUNDS (default 3), BENCH_WORKERS (default 2).
set -euo pipefail
source "$(dirname "$0")/nginx.sh"
cd "$(dirname "$0")/upstream-client"
for tool in wrk nginx bc; do
  command -v "$tool" >/dev/null || { echo "$tool is required (apt-get install $tool)" >&2; exit 1; }
done
cargo build --release --quiet
bin=$PWD/target/release/upstream-client-bench
work=$(mktemp -d)
duration=${BENCH_SECONDS:-10}; rounds=${BENCH_ROUNDS:-3}; workers=${BENCH_WORKERS:-2}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
up=18110; nginx_proxy=18111; awc_proxy=18112; hyper_proxy=18113; conn_proxy=18114
(nginx_upstream "$work" $up) & pids+=($!)
(nginx_proxy "$work" $nginx_proxy $up "$workers") & pids+=($!)
"$bin" awc "$workers" $awc_proxy "http://127.0.0.1:$up" & pids+=($!)
"$bin" hyper "$workers" $hyper_proxy "http://127.0.0.1:$up" & pids+=($!)
"$bin" hyper-conn "$workers" $conn_proxy "http://127.0.0.1:$up" & pids+=($!)
for port in $nginx_proxy $awc_proxy $hyper_proxy $conn_proxy; do
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
done

rps() { wrk -t2 -c64 -d"${duration}s" "$1" | awk '/Requests\/sec/ {print $2}'; }
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "machine: $(nproc) cores; wrk -t2 -c64 -d${duration}s; $workers workers each; $rounds interleaved rounds"
for round in $(seq 1 "$rounds"); do
  for path in awc hyper hyper-conn nginx; do
    case $path in
      awc) port=$awc_proxy ;; hyper) port=$hyper_proxy ;; hyper-conn) port=$conn_proxy ;; nginx) port=$nginx_proxy ;;
    esac
    result=$(rps "http://127.0.0.1:$port/")
    echo "round $round  $path: $result req/s"
    echo "$result" >> "$work/$path"
  done
done
nginx_rps=$(median < "$work/nginx")
for path in awc hyper hyper-conn nginx; do
  m=$(median < "$work/$path")
  printf '%-10s %10s req/s  %s× nginx\n' "$path" "$m" "$(echo "scale=2; $m / $nginx_rps" | bc)"
done
