#!/usr/bin/env bash
# One wsim-bench scenario against a fresh release server, pinned like `make bench` (server on CPU 0,
# generator on CPU 1). Usage: bench/quick.sh sqlite|mysql <wsim-bench arguments…>
#   bench/quick.sh sqlite ring --connections 1000 --rate 8000 --find-knee --knee-step 1.5 --knee-steps 4 --duration 4
#   bench/quick.sh sqlite idle --connections 19500 --connect-rate 1500 --duration 10
set -euo pipefail
cd "$(dirname "$0")/.."
backend=$1; shift
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wsim-target}"
cargo build --release --bins -q
T="$CARGO_TARGET_DIR/release"
tmp="$(mktemp -d)"
db=""
if [ "$backend" = sqlite ]; then
  url="sqlite://$tmp/w.db"
else
  db="wsim_quick_$$"
  mysql -uroot -h127.0.0.1 -e "CREATE DATABASE \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
  url="${WSIM_BENCH_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"; url="${url%/*}/$db"
fi
port=$((30000 + RANDOM % 10000))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
RUST_LOG=warn taskset -c 0 "$T/wsim" --listen "127.0.0.1:$port" --database-url "$url" --data-dir "$tmp" \
  >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$tmp/out" && break; sleep 0.1; done
taskset -c 1 "$T/wsim-bench" "$@" --server "127.0.0.1:$port" --server-pid "$pid" || true
kill -TERM "$pid"; wait "$pid" || true
if [ -n "$db" ]; then mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$db\`"; fi
rm -rf "$tmp"
