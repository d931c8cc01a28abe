#!/usr/bin/env bash
# The Gru comparison (part of `make bench`): the same wsim-bench Socket.IO client and the same rooms
# against wsim's Gru front-end (SQLite, messages stored) and against Node's socket.io 4.x server doing
# the same room broadcast (bench/peers/socketio-gru.js, no storage). Each server alone on CPU 0, the
# generator on CPU 1. Engine.IO pings are set longer than the run on both (the generator does not
# answer them). Writes bench/results/<date>-gru.json (one JSON line per step, "label" says which
# server) and prints a comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wsim-target}"
DATE="$(date -u +%Y-%m-%d)"
OUT="${BENCH_OUT:-bench/results}"
STEP_SECS="${BENCH_STEP_SECS:-5}"
PING_MS=3600000
mkdir -p "$OUT"
source bench/lib.sh
prepare_bench
ensure_peers
result="$OUT/$DATE-gru.json"
: >"$result"

gen() {
  local label=$1; shift
  generate "$result" "$label" "$@" --proto socketio
}

scenarios() {
  local label=$1
  echo "== $label: group 100 (10 rooms, 2 senders each)"
  gen "$label" group --connections 1000 --group-size 100 --senders 2 --rate 100 --find-knee \
    --knee-step 2 --knee-steps 8 --duration "$STEP_SECS"
  echo "== $label: group 1000 (1 room, 10 senders)"
  gen "$label" group --connections 1000 --group-size 1000 --senders 10 --rate 10 --find-knee \
    --knee-step 2 --knee-steps 8 --duration "$STEP_SECS"
}

SERVER_TOML="$(printf '[gru]\nping_interval_ms = %s\nhandshakes_per_ip_per_sec = 0' "$PING_MS")" start_server sqlite
scenarios wsim-gru
stop_server
start_peer socketio-gru.js "$PING_MS"; scenarios node-socket.io; stop_server
python3 bench/compare.py "$result" wsim-gru node-socket.io "Gru: wsim vs Node socket.io 4.x (same client, same rooms)" \
  | tee "$OUT/$DATE-gru-summary.md"
