# Shared by the bench scripts: the set-up, a fresh wsim release server pinned to CPU 0, the generator.
#   prepare_bench               builds the release binaries, raises the open-file limit
#   generate RESULT LABEL ARGS… one wsim-bench run (on CPU 1) against the started server, labelled;
#                               its JSON lines appended to RESULT
#   start_server sqlite|mysql   sets SERVER_PID, SERVER_PORT, SERVER_TMP (and SERVER_DB for MariaDB);
#                               $SERVER_TOML, when set, is the server's configuration file
#   start_peer SCRIPT ARGS…     a Node reference server from bench/peers (its port first), same variables
#   stop_server                 SIGTERM, wait, drop the database, remove the temporary directory
#   ensure_peers                npm ci in bench/peers when its lock file changed
BIN="$CARGO_TARGET_DIR/release"
MYSQL_ADMIN_URL="${WSIM_BENCH_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"

start_server() {
  local backend=$1 url
  SERVER_TMP="$(mktemp -d)"
  SERVER_DB=""
  if [ "$backend" = sqlite ]; then
    url="sqlite://$SERVER_TMP/wsim.db"
  else
    SERVER_DB="wsim_bench_$$_$(date +%s)"
    mysql -uroot -h127.0.0.1 -e "CREATE DATABASE \`$SERVER_DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    url="${MYSQL_ADMIN_URL%/*}/$SERVER_DB"
  fi
  local config=()
  if [ -n "${SERVER_TOML:-}" ]; then
    printf '%s\n' "$SERVER_TOML" >"$SERVER_TMP/wsim.toml"
    config=(--config "$SERVER_TMP/wsim.toml")
  fi
  SERVER_PORT=$((20000 + RANDOM % 20000))
  RUST_LOG=warn taskset -c 0 "$BIN/wsim" --listen "127.0.0.1:$SERVER_PORT" --database-url "$url" \
    --data-dir "$SERVER_TMP" "${config[@]}" >"$SERVER_TMP/server.out" 2>"$SERVER_TMP/server.err" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q listening "$SERVER_TMP/server.out" 2>/dev/null && break; sleep 0.1; done
}

stop_server() {
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true
  if [ -n "$SERVER_DB" ]; then mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$SERVER_DB\`"; fi
  rm -rf "$SERVER_TMP"
}

start_peer() {
  local script=$1; shift
  SERVER_TMP="$(mktemp -d)"
  SERVER_DB=""
  SERVER_PORT=$((20000 + RANDOM % 20000))
  taskset -c 0 node "bench/peers/$script" "$SERVER_PORT" "$@" >"$SERVER_TMP/server.out" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q listening "$SERVER_TMP/server.out" 2>/dev/null && break; sleep 0.1; done
}

prepare_bench() {
  cargo build --release --bins --features bench-tool -q
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

generate() {
  local result=$1 label=$2; shift 2
  taskset -c 1 "$BIN/wsim-bench" "$@" --server "127.0.0.1:$SERVER_PORT" --server-pid "$SERVER_PID" \
    --label "$label" | tee -a /dev/stderr | grep '^{' >>"$result" || true
}

ensure_peers() {
  if [ ! bench/peers/node_modules/.package-lock.json -nt bench/peers/package-lock.json ]; then
    (cd bench/peers && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
