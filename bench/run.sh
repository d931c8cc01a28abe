#!/usr/bin/env bash
# The standard benchmark suite (`make bench`): release build, the server pinned to CPU 0 and the load
# generator to CPU 1, scenarios idle, ring and group (10/100/1000) on SQLite and on MariaDB. Writes
# bench/results/<date>-<backend>.json (one JSON line per run) and bench/results/<date>-summary.md,
# then the Gru comparison with Node's socket.io (bench/gru.sh) and /entry's with a Node ws server
# (bench/entry.sh).
# Everything targets 127.0.0.1 and every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wsim-target}"
DATE="$(date -u +%Y-%m-%d)"
OUT=bench/results
STEP_SECS="${BENCH_STEP_SECS:-5}"
IDLE_SECS="${BENCH_IDLE_SECS:-10}"
IDLE_CONNS="${BENCH_IDLE_CONNS:-19500}"
BACKENDS="${BENCH_BACKENDS:-sqlite mysql}"

mkdir -p "$OUT"
source bench/lib.sh
prepare_bench

run_backend() {
  local backend=$1 result
  start_server "$backend"
  result="$OUT/$DATE-$backend.json"
  : >"$result"
  gen() {
    taskset -c 1 "$BIN/wsim-bench" "$@" --server "127.0.0.1:$SERVER_PORT" --server-pid "$SERVER_PID" \
      --label "$backend" | tee -a "$SERVER_TMP/generator.log" /dev/stderr | grep '^{' >>"$result" || true
  }
  echo "== $backend: idle"
  gen idle --connections "$IDLE_CONNS" --connect-rate 1500 --duration "$IDLE_SECS"
  echo "== $backend: ring"
  gen ring --connections 1000 --rate 2000 --find-knee --knee-step 1.6 --knee-steps 12 --duration "$STEP_SECS"
  echo "== $backend: group 10"
  gen group --connections 1000 --group-size 10 --senders 1 --rate 500 --find-knee --knee-step 1.6 --knee-steps 12 --duration "$STEP_SECS"
  echo "== $backend: group 100"
  gen group --connections 1000 --group-size 100 --senders 2 --rate 100 --find-knee --knee-step 1.6 --knee-steps 12 --duration "$STEP_SECS"
  echo "== $backend: group 1000"
  gen group --connections 1000 --group-size 1000 --senders 10 --rate 20 --find-knee --knee-step 1.6 --knee-steps 12 --duration "$STEP_SECS"
  # Latency at half the knee of the ring scenario.
  local knee
  knee="$(jq -r 'select(.scenario=="ring" and .knee_rate!=null) | .knee_rate' "$result" | tail -1)"
  if [ -n "$knee" ] && [ "$knee" != null ]; then
    echo "== $backend: ring at half the knee ($knee / 2)"
    gen ring --connections 1000 --rate "$(jq -n "$knee/2")" --duration "$STEP_SECS"
  fi
  stop_server
}

for b in $BACKENDS; do run_backend "$b"; done
python3 bench/summarize.py "$OUT" "$DATE" >"$OUT/$DATE-summary.md"
cat "$OUT/$DATE-summary.md"
# Gru against Node's socket.io (installs the reference server from npm); BENCH_GRU=0 skips it.
if [ "${BENCH_GRU:-1}" = 1 ]; then bash bench/gru.sh; fi
# /entry against a naive in-memory Node ws server, same run; BENCH_ENTRY=0 skips it.
if [ "${BENCH_ENTRY:-1}" = 1 ]; then bash bench/entry.sh; fi
