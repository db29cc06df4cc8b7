#!/usr/bin/env bash
# Interleaved A/B of single-event publishes between tributary builds, for profiling work:
#   bash scripts/ab-publish.sh OLD_BINARY NEW_BINARY [...]
# Each run gets a fresh server (pinned to core 0) and data dir; wrk (core 1) publishes
# over 64 keep-alive connections on 127.0.0.1 for SECS seconds, ROUNDS rounds, A B A B.
# EXTRA passes flags to `serve` (EXTRA="--synchronous normal" takes the disk out).
# Prints requests/s per run. Installs wrk (Debian) when missing.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }
rounds=${ROUNDS:-3}; secs=${SECS:-5}; conns=${CONNS:-64}; port=${PORT:-7171}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
lua=$(mktemp --suffix=.lua)
cat > "$lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"topic":"bench.s1","name":"tick","args":{"pub":1,"seq":1,"sent_us":1,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}'
LUA
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -f "$lua"; }
trap cleanup EXIT
for r in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    data=$(mktemp -d)
    # shellcheck disable=SC2086 # EXTRA is a list of flags
    taskset -c 0 "$bin" serve --addr "127.0.0.1:$port" --data "$data" ${EXTRA:-} >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    rps=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s "$lua" "http://127.0.0.1:$port/api/v1/events" \
      | awk '/Requests\/sec/ {print $2}')
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    rm -rf "$data"
    echo "round $r $bin $rps"
  done
done
