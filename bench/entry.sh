#!/usr/bin/env bash
# /entry against a naive in-memory Node server of the same signaling (part of `make bench`): the same
# wsim-bench client against wsim (SQLite, every message stored before delivery) and against
# bench/peers/ws-entry.js (Node's `ws`, no storage), each alone on CPU 0, the generator on CPU 1.
# Idle memory per connection, the ring and group-of-100 knees, and both at equal loads (EQUAL_RING,
# EQUAL_GROUP offered msg/s). Writes bench/results/<date>-entry.json ("label" says which server) and
# bench/results/<date>-entry-summary.md with the ratios wsim/node.
#   BENCH_BACKEND=mysql bash bench/entry.sh       # wsim on MariaDB instead
#   BENCH_SCENARIOS=idle BENCH_TAG=-idle bash bench/entry.sh   # only some scenarios (idle ring group),
#                                                             # into <date>-entry-idle.json
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wsim-target}"
DATE="$(date -u +%Y-%m-%d)"
OUT="${BENCH_OUT:-bench/results}"
STEP_SECS="${BENCH_STEP_SECS:-5}"
IDLE_SECS="${BENCH_IDLE_SECS:-10}"
IDLE_CONNS="${BENCH_IDLE_CONNS:-19000}"
BACKEND="${BENCH_BACKEND:-sqlite}"
EQUAL_RING="${BENCH_EQUAL_RING:-4000 8000}"
EQUAL_GROUP="${BENCH_EQUAL_GROUP:-800 2000}"
SCENARIOS=" ${BENCH_SCENARIOS:-idle ring group} "
TAG="${BENCH_TAG:-}"
mkdir -p "$OUT"
source bench/lib.sh
prepare_bench
ensure_peers
result="$OUT/$DATE-entry$TAG.json"
: >"$result"

gen() {
  generate "$result" "$@"
}

# Each scenario on a fresh server (idle connections would weigh on the others).
each() {
  local label=$1 start=$2; shift 2
  $start; gen "$label" "$@"; stop_server
}

scenarios() {
  local label=$1 start=$2 r
  if [[ $SCENARIOS == *" idle "* ]]; then
    echo "== $label: idle ($IDLE_CONNS connections)"
    each "$label" "$start" idle --connections "$IDLE_CONNS" --connect-rate 1500 --duration "$IDLE_SECS"
  fi
  if [[ $SCENARIOS == *" ring "* ]]; then
    echo "== $label: ring knee"
    each "$label" "$start" ring --connections 1000 --rate 2000 --find-knee --knee-step 1.6 --knee-steps 10 --duration "$STEP_SECS"
    for r in $EQUAL_RING; do
      echo "== $label: ring at $r msg/s"
      each "$label" "$start" ring --connections 1000 --rate "$r" --duration "$STEP_SECS"
    done
  fi
  if [[ $SCENARIOS == *" group "* ]]; then
    echo "== $label: group 100 knee"
    each "$label" "$start" group --connections 1000 --group-size 100 --senders 2 --rate 100 --find-knee --knee-step 2 --knee-steps 8 --duration "$STEP_SECS"
    for r in $EQUAL_GROUP; do
      echo "== $label: group 100 at $r msg/s"
      each "$label" "$start" group --connections 1000 --group-size 100 --senders 2 --rate "$r" --duration "$STEP_SECS"
    done
  fi
}

scenarios "wsim-$BACKEND" "start_server $BACKEND"
scenarios node-ws "start_peer ws-entry.js"
python3 bench/compare.py "$result" "wsim-$BACKEND" node-ws \
  "/entry: wsim ($BACKEND, stored) vs a naive in-memory Node ws server (same client)" | tee "$OUT/$DATE-entry$TAG-summary.md"
