#!/usr/bin/env bash
# One wsim-bench scenario against a fresh release server, pinned like `make bench` (server on CPU 0,
# generator on CPU 1). Usage: bench/quick.sh sqlite|mysql <wsim-bench arguments…>
#   bench/quick.sh sqlite ring --connections 1000 --rate 8000 --find-knee --knee-step 1.5 --knee-steps 4 --duration 4
#   bench/quick.sh sqlite idle --connections 19500 --connect-rate 1500 --duration 10
set -euo pipefail
cd "$(dirname "$0")/.."
backend=$1; shift
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wsim-target}"
source bench/lib.sh
prepare_bench
start_server "$backend"
taskset -c 1 "$BIN/wsim-bench" "$@" --server "127.0.0.1:$SERVER_PORT" --server-pid "$SERVER_PID" || true
stop_server
