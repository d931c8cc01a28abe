#!/usr/bin/env bash
# The standard benchmark suite (`make bench`): release build, the server pinned to CPU 0 and the load
# generator to CPU 1, scenarios idle, ring and group (10/100/1000) on SQLite and on MariaDB. Writes
# bench/results/<date>-<backend>.json (one JSON line per run) and bench/results/<date>-summary.md.
# Everything targets 127.0.0.1 and every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wsim-target}"
BIN="$CARGO_TARGET_DIR/release"
DATE="$(date -u +%Y-%m-%d)"
OUT=bench/results
STEP_SECS="${BENCH_STEP_SECS:-5}"
IDLE_SECS="${BENCH_IDLE_SECS:-10}"
IDLE_CONNS="${BENCH_IDLE_CONNS:-19500}"
BACKENDS="${BENCH_BACKENDS:-sqlite mysql}"
MYSQL_ADMIN_URL="${WSIM_BENCH_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"

mkdir -p "$OUT"
cargo build --release --bins
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

run_backend() {
  local backend=$1 tmp url db="" port pid result
  tmp="$(mktemp -d)"
  if [ "$backend" = sqlite ]; then
    url="sqlite://$tmp/wsim.db"
  else
    db="wsim_bench_$$_$(date +%s)"
    mysql -uroot -h127.0.0.1 -e "CREATE DATABASE \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    url="${MYSQL_ADMIN_URL%/*}/$db"
  fi
  port=$((20000 + RANDOM % 20000))
  RUST_LOG=warn taskset -c 0 "$BIN/wsim" --listen "127.0.0.1:$port" --database-url "$url" --data-dir "$tmp" \
    >"$tmp/server.out" 2>"$tmp/server.err" &
  pid=$!
  for _ in $(seq 100); do grep -q "listening" "$tmp/server.out" 2>/dev/null && break; sleep 0.1; done
  result="$OUT/$DATE-$backend.json"
  : >"$result"
  gen() {
    taskset -c 1 "$BIN/wsim-bench" "$@" --server "127.0.0.1:$port" --server-pid "$pid" --label "$backend" \
      | tee -a "$tmp/generator.log" /dev/stderr | grep '^{' >>"$result" || true
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
  kill -TERM "$pid"; wait "$pid" || true
  if [ -n "$db" ]; then mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$db\`"; fi
  rm -rf "$tmp"
}

for b in $BACKENDS; do run_backend "$b"; done
python3 bench/summarize.py "$OUT" "$DATE" >"$OUT/$DATE-summary.md"
cat "$OUT/$DATE-summary.md"
