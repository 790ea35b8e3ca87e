#!/usr/bin/env bash
# Gateway throughput and latency beside its peers, measured in one run on one machine:
#   1. a trivial upstream directly (nginx `return 200`),
#   2. fountain's gateway with JWT verification in front of it,
#   3. nginx `proxy_pass` (2 workers, keep-alive) in front of it,
#   4. Caddy `reverse_proxy` in front of it.
# wrk -t2 -c64 on loopback, small responses. Also the gateway's RSS under that load. The
# gateway's rate limiter stays on (its cost is part of the path) with a limit wrk cannot reach;
# any non-2xx answer is printed in the errors column and makes the run worthless.
# The paths are measured in interleaved rounds (upstream, gateway, nginx, caddy; then gateway,
# nginx, caddy, upstream; …) and the medians reported: on a shared 2-core machine a single run of
# each drifts by ±15 %.
# Usage: bench/gateway.sh   (needs wrk, nginx, caddy and bc: apt-get install wrk nginx caddy bc)
# BENCH_SECONDS (default 10) per run, BENCH_ROUNDS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/nginx.sh
for tool in wrk nginx caddy bc; do
  command -v "$tool" >/dev/null || { echo "$tool is required (apt-get install $tool)" >&2; exit 1; }
done
# BENCH_BIN: measure a binary built elsewhere (e.g. from another commit) instead of this tree.
if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else cargo build --release --quiet; bin=$PWD/target/release/fountain; fi
work=$(mktemp -d)
duration=${BENCH_SECONDS:-10}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
up=18100; nginx_proxy=18101; caddy_proxy=18102; gw=18000; kms=18003

cat > "$work/Caddyfile" <<CONF
{
	admin off
	auto_https off
}
http://127.0.0.1:$caddy_proxy {
	reverse_proxy 127.0.0.1:$up
}
CONF
(nginx_upstream "$work/nginx" $up) & pids+=($!)
(nginx_proxy "$work/nginx" $nginx_proxy $up 2) & pids+=($!)
caddy run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 & pids+=($!)

export FOUNTAIN_DATA__DIR="$work/data" FOUNTAIN_LOG__LEVEL=warn FOUNTAIN_ROLES__KMS__BCRYPT_COST=4 \
  FOUNTAIN_ROLES__GATEWAY__PORT=$gw FOUNTAIN_ROLES__KMS__PORT=$kms \
  FOUNTAIN_PEERS__BENCH="http://127.0.0.1:$up" FOUNTAIN_ROLES__GATEWAY__ROUTES__BENCH=bench \
  FOUNTAIN_ROLES__GATEWAY__RATE_LIMIT__REQUESTS_PER_SECOND=10000000 FOUNTAIN_ROLES__GATEWAY__RATE_LIMIT__BURST=10000000
printf 'bench password 1234\n' > "$work/pw"
"$bin" admin create-user --init --username bench --role admin --password-file "$work/pw" >/dev/null
"$bin" serve --role kms,gateway > "$work/fountain.log" 2>&1 & gw_pid=$!; pids+=($gw_pid)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$gw/health" >/dev/null 2>&1 && break; sleep 0.1; done
token=$(curl -fs "http://127.0.0.1:$kms/login" -H 'content-type: application/json' \
  -d '{"username":"bench","password":"bench password 1234"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
curl -fs "http://127.0.0.1:$gw/bench/" -H "authorization: Bearer $token" | grep -q ok \
  || { echo "the gateway does not reach the upstream" >&2; cat "$work/fountain.log" >&2; exit 1; }
sleep 1

# One wrk run; prints "req/s p50 p99 errors" (latencies in ms).
measure() { # url, [header]
  local out="$work/wrk.txt"
  if [ -n "${2:-}" ]; then wrk -t2 -c64 -d"${duration}s" --latency -H "$2" "$1" > "$out"
  else wrk -t2 -c64 -d"${duration}s" --latency "$1" > "$out"; fi
  ms() { awk -v q="$1" '$1==q {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.3f", v}' "$out"; }
  local errors; errors=$(awk '/Non-2xx|Socket errors/ {print}' "$out" | tr '\n' ' ')
  echo "$(awk '/Requests\/sec/ {print $2}' "$out") $(ms 50%) $(ms 99%) ${errors:-none}"
}
# Median of a column over the rounds of one path.
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

paths=(upstream gateway nginx caddy)
declare -A label=(
  [upstream]="upstream directly (peer)"
  [gateway]="fountain gateway, JWT verified"
  [nginx]="nginx proxy_pass (peer)"
  [caddy]="caddy reverse_proxy (peer)"
)
target() {
  case $1 in
    upstream) measure "http://127.0.0.1:$up/" ;;
    gateway) measure "http://127.0.0.1:$gw/bench/" "Authorization: Bearer $token" ;;
    nginx) measure "http://127.0.0.1:$nginx_proxy/" ;;
    caddy) measure "http://127.0.0.1:$caddy_proxy/" ;;
  esac
}

rounds=${BENCH_ROUNDS:-3}
echo "machine: $(nproc) cores; wrk -t2 -c64 -d${duration}s; upstream: nginx return 200; $rounds interleaved rounds, medians"
rss_max=0
for round in $(seq 1 "$rounds"); do
  # Each round starts one path further on, so that no path always follows the same one.
  shift_by=$(( (round - 1) % ${#paths[@]} ))
  for path in "${paths[@]:$shift_by}" "${paths[@]:0:$shift_by}"; do
    if [ "$path" = gateway ]; then
      ( sleep $((duration / 2)); awk '/VmRSS/ {print $2}' /proc/$gw_pid/status > "$work/rss.$round" ) &
      sampler=$!
    fi
    result=$(target "$path")
    echo "round $round  ${label[$path]}: $result"
    echo "$result" >> "$work/$path.results"
    [ "${result##* }" = none ] || echo "  ^ errors: this round is worthless" >&2
  done
  wait "$sampler"
  rss=$(cat "$work/rss.$round"); [ "$rss" -gt "$rss_max" ] && rss_max=$rss
done
echo
printf '%-34s %12s %10s %10s\n' path "req/s" "p50 ms" "p99 ms"
for path in "${paths[@]}"; do
  f="$work/$path.results"
  printf '%-34s %12s %10s %10s\n' "${label[$path]}" "$(cut -d' ' -f1 "$f" | median)" \
    "$(cut -d' ' -f2 "$f" | median)" "$(cut -d' ' -f3 "$f" | median)"
done
gw_rps=$(cut -d' ' -f1 "$work/gateway.results" | median); nginx_rps=$(cut -d' ' -f1 "$work/nginx.results" | median)
up_p99=$(cut -d' ' -f3 "$work/upstream.results" | median); gw_p99=$(cut -d' ' -f3 "$work/gateway.results" | median)
echo "gateway / nginx throughput (ratio of the medians): $(echo "scale=2; $gw_rps / $nginx_rps" | bc)"
# Each round measures both within the same half minute, so its ratio is spared the machine's
# slower drifts; the median of those paired ratios is the steadier figure of the two.
paired=$(paste -d' ' <(cut -d' ' -f1 "$work/gateway.results") <(cut -d' ' -f1 "$work/nginx.results") |
  awk '{printf "%.2f\n", $1 / $2}')
echo "gateway / nginx throughput (median of the rounds' ratios): $(echo "$paired" | median) (rounds: $(echo $paired))"
echo "gateway p99 added over the direct upstream: $(echo "scale=3; $gw_p99 - $up_p99" | bc) ms"
echo "gateway+kms process RSS under load (max of rounds): $((rss_max / 1024)) MB"
