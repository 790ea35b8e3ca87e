#!/usr/bin/env bash
# Schema-driven attacks on a real fountain: schemathesis against every role's /openapi.json,
# with a stepped-up admin token, with a service token and with no token. One command:
#
#   hardening/schemathesis.sh                 # cargo build --release, run, summary table
#   hardening/schemathesis.sh --no-build      # use target/release/fountain as it is
#   hardening/schemathesis.sh --binary PATH   # another fountain binary (implies --no-build)
#
# Settings (environment): PORT_BASE (27400: roles on PORT_BASE..PORT_BASE+6), MAX_EXAMPLES (60
# per operation and phase), SEED (20261130), WORKERS (1), REQUEST_TIMEOUT (10 s), OUT_DIR
# (target/schemathesis). Exit status 0 only when every run has 0 failures, 0 server errors,
# 0 timeouts and 0 errors. See hardening/README.md for the last result.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
ST_VERSION=4.32.5
PYOTP_VERSION=2.12.1
VENV=${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fountain-hardening/schemathesis-$ST_VERSION}
PORT_BASE=${PORT_BASE:-27400}
MAX_EXAMPLES=${MAX_EXAMPLES:-60}
SEED=${SEED:-20261130}
# One worker: with more, CPython 3.11's parser fails now and then under schemathesis's threads
# ("AST constructor recursion depth mismatch", a SystemError that aborts the case).
WORKERS=${WORKERS:-1}
REQUEST_TIMEOUT=${REQUEST_TIMEOUT:-10}
OUT_DIR=${OUT_DIR:-$ROOT/target/schemathesis}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance
PHASES=examples,coverage,fuzzing
ROLES=(gateway search sequence kms twofa secrets notify)   # port = PORT_BASE + index
# Modes in this order, and kms last with the admin token: an admin may revoke the API keys that
# the service token and fountain's own roles use.
ADMIN_ORDER=(gateway search sequence twofa secrets notify kms)
ADMIN_USER=ops
SERVICE=sequence
# Operations that end the token they are called with, or the account it belongs to, are tested
# after every other run with that token, in a phase of their own, so that the other runs keep a
# valid token (the service token's right after the service runs, the admin's at the very end):
#   kms logoutUser: revokes the calling token (tested with the service token, and with a spare
#     stepped-up admin token of its own session);
#   twofa resetTwoFactor: removes the run's admin's second factor;
#   kms deleteUser, updateUser: may delete, disable or change the roles of the run's admin
#     (schemathesis feeds them the usernames GET /users lists), which ends its tokens. deleteUser
#     goes first: while the run's admin is the last one it cannot be deleted (409), and
#     updateUser's first change of that admin's roles ends the token for the rest of its run.
LAST_FOR_SERVICE=(kms logoutUser)
LAST_FOR_ADMIN_SPARE=(kms logoutUser)
LAST_FOR_ADMIN=(twofa resetTwoFactor kms deleteUser kms updateUser)
# With a token, notify's streamEvents (GET /events/stream) answers an endless Server-Sent Events
# stream: schemathesis reads a response to its end, so each accepted case would end only at the
# request timeout. It is tested without a token here (401s, bad parameters) and with a token by
# tests/integration/first_hour.rs.
ENDLESS=(streamEvents)
MAIN_EXCLUDED_SERVICE=(logoutUser "${ENDLESS[@]}")
MAIN_EXCLUDED_ADMIN=(logoutUser updateUser deleteUser resetTwoFactor "${ENDLESS[@]}")

build=1
binary=$ROOT/target/release/fountain
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --binary) binary=$2; build=0; shift ;;
    *) echo "usage: $0 [--no-build] [--binary PATH]" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[schemathesis.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

install_schemathesis() {
  if [ -x "$VENV/bin/st" ] && [ "$("$VENV/bin/st" --version)" = "st, version $ST_VERSION" ]; then
    return
  fi
  log "installing schemathesis $ST_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$ST_VERSION" "pyotp==$PYOTP_VERSION"
}

port_of() {
  local i
  for i in "${!ROLES[@]}"; do
    [ "${ROLES[$i]}" = "$1" ] && { echo $((PORT_BASE + i)); return; }
  done
  return 1
}

url_of() { echo "http://127.0.0.1:$(port_of "$1")"; }

refuse_busy_ports() {
  local role
  for role in "${ROLES[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$(port_of "$role")") 2>/dev/null; then
      echo "port $(port_of "$role") (for $role) is in use: choose another PORT_BASE" >&2
      exit 1
    fi
  done
}

# fountain refuses unknown FOUNTAIN_* variables, and the run must not inherit a database URL.
CLEAN_ENV=(env)
for name in $(compgen -e); do
  case "$name" in FOUNTAIN_*|DATABASE_URL) CLEAN_ENV+=(-u "$name") ;; esac
done
fountain() { "${CLEAN_ENV[@]}" "$binary" --config "$WORK/fountain.toml" --data-dir "$WORK/data" "$@"; }

# Ports away from the defaults (and from other runs on the machine); token lifetimes that
# outlast the run; a cheap bcrypt cost so that login and registration cases are fast.
write_config() {
  local role
  {
    printf '[log]\nformat = "json"\n\n'
    for role in "${ROLES[@]}"; do
      printf '[roles.%s]\nport = %s\n' "$role" "$(port_of "$role")"
      case "$role" in
        kms) printf 'bcrypt_cost = 4\naccess_token_ttl_seconds = 3600\nservice_token_ttl_seconds = 3600\n' ;;
        twofa) printf 'step_up_ttl_seconds = 3600\n' ;;
      esac
      printf '\n'
    done
  } > "$WORK/fountain.toml"
}

stop_fountain() {
  if [ -n "${FOUNTAIN_PID:-}" ] && kill -0 "$FOUNTAIN_PID" 2>/dev/null; then
    kill -TERM "$FOUNTAIN_PID"
    wait "$FOUNTAIN_PID" || true
  fi
  FOUNTAIN_PID=
}

cleanup() {
  stop_fountain
  rm -rf "$WORK"
}

wait_until_ready() {
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "$(url_of gateway)/ready" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$FOUNTAIN_PID" 2>/dev/null; then
      echo "fountain did not become ready; its log: $OUT_DIR/fountain.log" >&2
      exit 1
    fi
    sleep 0.5
  done
}

provision() {
  local password
  password=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')
  fountain admin create-user --init --username "$ADMIN_USER" --role admin <<<"$password" >/dev/null
  "${CLEAN_ENV[@]}" "$binary" --config "$WORK/fountain.toml" --data-dir "$WORK/data" serve \
    >"$OUT_DIR/fountain.log" 2>&1 &
  FOUNTAIN_PID=$!
  wait_until_ready
  fountain admin issue-credential --service "$SERVICE" --out "$WORK/$SERVICE.key" >/dev/null
  log "provisioning: admin login, 2FA enrolment and step-up (waits for the next TOTP window)"
  "$VENV/bin/python" "$HERE/provision.py" "$(url_of kms)" "$(url_of twofa)" "$ADMIN_USER" \
    "$SERVICE" "$WORK/$SERVICE.key" "$WORK" <<<"$password"
}

# schemathesis with its settings; the bearer token, when there is one, comes from the
# environment through the config file, never on a command line.
run_schemathesis() {
  local role=$1 token_name=$2 name=$3; shift 3
  local config=$HERE/schemathesis.toml token=
  if [ "$token_name" != none ]; then
    config=$HERE/schemathesis-bearer.toml
    token=$(cat "$WORK/$token_name.token")
  fi
  BEARER_TOKEN=$token SCHEMATHESIS_HOOKS=hooks PYTHONPATH=$HERE "$VENV/bin/st" --config-file "$config" run "$(url_of "$role")/openapi.json" \
    --checks "$CHECKS" --phases "$PHASES" --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
    --workers "$WORKERS" --request-timeout "$REQUEST_TIMEOUT" --continue-on-failure --no-color \
    --generation-database none \
    --report ndjson --report-ndjson-path "$OUT_DIR/reports/$name.ndjson" "$@" \
    >"$OUT_DIR/reports/$name.txt" 2>&1 || true
}

excluding() { local op; for op in "$@"; do printf -- '--exclude-operation-id %s ' "$op"; done; }

# run_last TOKEN MODE ROLE OPERATION [ROLE OPERATION]...: one run per operation, in this order.
run_last() {
  local token_name=$1 mode=$2; shift 2
  while [ $# -gt 0 ]; do
    log "$1 with the $token_name token: $2"
    run_schemathesis "$1" "$token_name" "$1-$mode-$2" --include-operation-id "$2"
    shift 2
  done
}

main() {
  install_schemathesis
  if [ $build = 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release)
  fi
  [ -x "$binary" ] || { echo "no fountain binary at $binary" >&2; exit 1; }
  refuse_busy_ports
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/fountain-schemathesis.XXXXXX")
  trap cleanup EXIT
  rm -rf "$OUT_DIR/reports"
  mkdir -p "$OUT_DIR/reports"
  write_config
  provision

  local started=$SECONDS role
  for role in "${ROLES[@]}"; do
    log "$role without a token"
    run_schemathesis "$role" none "$role-none"
  done
  for role in "${ROLES[@]}"; do
    log "$role with the service token"
    run_schemathesis "$role" service "$role-service" $(excluding "${MAIN_EXCLUDED_SERVICE[@]}")
  done
  # Before the admin runs: they may revoke the API key behind the service token.
  run_last service service-last "${LAST_FOR_SERVICE[@]}"
  for role in "${ADMIN_ORDER[@]}"; do
    log "$role with the admin token"
    run_schemathesis "$role" admin "$role-admin" $(excluding "${MAIN_EXCLUDED_ADMIN[@]}")
  done
  log "last phase: operations that end their token"
  run_last admin-spare admin-last-spare "${LAST_FOR_ADMIN_SPARE[@]}"
  run_last admin admin-last "${LAST_FOR_ADMIN[@]}"
  log "schemathesis took $((SECONDS - started)) s"
  stop_fountain

  local status=0
  "$VENV/bin/python" "$HERE/summarize.py" "$OUT_DIR/reports" "${ROLES[@]}" >"$OUT_DIR/summary.md" || status=$?
  {
    echo "schemathesis $ST_VERSION, max examples $MAX_EXAMPLES, seed $SEED, workers $WORKERS,"
    echo "phases $PHASES, checks $CHECKS, request timeout ${REQUEST_TIMEOUT} s"
    echo
    cat "$OUT_DIR/summary.md"
  } | tee "$OUT_DIR/summary.txt"
  log "reports: $OUT_DIR/reports (per run: <role>-<mode>.txt and .ndjson)"
  return $status
}

main
