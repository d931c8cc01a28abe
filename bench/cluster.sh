#!/usr/bin/env bash
# Cluster figures: release nodes on one MariaDB database and a Redis of their own, on this machine.
#   bench/cluster.sh idle [nodes] [connections per node]   memory per connection (all nodes) and
#                                                          Redis memory per online user
#   bench/cluster.sh load [nodes]                          ring and group of 100 at the same offered
#                                                          rates on one node and on [nodes] nodes
# Prints JSON lines (wsim-bench's own, plus "cluster_idle") and a summary. Loopback only, bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wsim-target}"
MODE=${1:-idle}
NODES=${2:-5}
PER_NODE=${3:-19000}
source bench/lib.sh
prepare_bench
TMP="$(mktemp -d)"
DB="wsim_cluster_bench_$$"
REDIS_PORT=$((10000 + RANDOM % 9000))
PIDS=()
PORTS=()

cleanup() {
  echo "node warnings and errors:"; (cat "$TMP"/n*/err 2>/dev/null || true) | grep -E "WARN|ERROR" | sed 's/^\[[^]]*Z //' | sort | uniq -c | sort -rn | head || true
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$DB\`" || true
  rm -rf "$TMP"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$TMP/redis.log" 2>&1 &
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis_used() { redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/ {print $2+0}'; }

# start_nodes N: nodes 1..N, all on the same database and Redis.
start_nodes() {
  local n=$1 i port
  mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$DB\`; CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
  printf '[cluster]\nkey_prefix = "bench%s"\n' "$$$n" >"$TMP/wsim.toml"
  PIDS=(); PORTS=()
  for i in $(seq "$n"); do
    port=$((20000 + RANDOM % 12000))
    mkdir -p "$TMP/n$i"
    RUST_LOG=warn "$BIN/wsim" --listen "127.0.0.1:$port" --public-url "http://127.0.0.1:$port" \
      --database-url "mysql://root@127.0.0.1:3306/$DB" --data-dir "$TMP/n$i" --config "$TMP/wsim.toml" \
      --redis-url "redis://127.0.0.1:$REDIS_PORT" --node-id "$i" >"$TMP/n$i/out" 2>"$TMP/n$i/err" &
    PIDS+=($!); PORTS+=("$port")
    for _ in $(seq 100); do grep -q listening "$TMP/n$i/out" 2>/dev/null && break; sleep 0.1; done
  done
  sleep 7 # every node sees the others (heartbeats every node_ttl_secs / 3 = 5 s)
}

stop_nodes() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=(); PORTS=()
}

servers() { local IFS=,; local a=(); for p in "${PORTS[@]}"; do a+=("127.0.0.1:$p"); done; echo "${a[*]}"; }
pids() { local IFS=,; echo "${PIDS[*]}"; }
rss_sum() { local t=0 p; for p in "${PIDS[@]}"; do t=$((t + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status") * 1024)); done; echo "$t"; }

if [ "$MODE" = idle ]; then
  start_nodes "$NODES"
  total=$((NODES * PER_NODE))
  rss0=$(rss_sum); redis0=$(redis_used)
  # One generator per node's worth of connections (a process holds at most ~19,900 sockets); each
  # spreads its users over every node.
  gens=()
  for s in $(seq 0 $((NODES - 1))); do
    "$BIN/wsim-bench" idle --connections "$total" --shard "$s/$NODES" --connect-rate "${CONNECT_RATE:-150}" --duration 120 \
      --server "$(servers)" --label "cluster-$NODES" >"$TMP/gen$s.log" 2>&1 &
    gens+=($!)
  done
  for _ in $(seq 600); do
    done_n=$( (grep -l "connections logged in" "$TMP"/gen*.log 2>/dev/null || true) | wc -l)
    [ "$done_n" -ge "$NODES" ] && break
    sleep 1
  done
  sleep 12 # two heartbeats: a node whose presence writes failed has written them again
  rss1=$(rss_sum); redis1=$(redis_used)
  for port in "${PORTS[@]}"; do
    curl -s "http://127.0.0.1:$port/metrics" | grep -E '^wsim_(connections_open\{frontend="wsim"\}|users_online) ' | tr '\n' ' '; echo
  done
  online=$(redis-cli -p "$REDIS_PORT" --scan --pattern "bench$$$NODES:users:*" | while read -r k; do redis-cli -p "$REDIS_PORT" scard "$k"; done | awk '{s+=$1} END {print s+0}')
  for g in "${gens[@]}"; do wait "$g" || true; done
  grep -h "^note" "$TMP"/gen*.log || true
  python3 - "$NODES" "$total" "$online" "$rss0" "$rss1" "$redis0" "$redis1" <<'EOF'
import json, sys
nodes, total, online, rss0, rss1, r0, r1 = map(int, sys.argv[1:])
v = {"tool": "bench/cluster.sh", "scenario": "cluster_idle", "nodes": nodes, "connections": total,
     "users_online_in_redis": online, "nodes_rss_before": rss0, "nodes_rss_after": rss1,
     "rss_per_connection_bytes": (rss1 - rss0) / max(online, 1),
     "redis_used_before": r0, "redis_used_after": r1, "redis_bytes_per_user": (r1 - r0) / max(online, 1)}
print(json.dumps(v))
print(f"{nodes} nodes, {online} of {total} users online: {v['rss_per_connection_bytes']/1024:.2f} KiB of node RSS "
      f"per connection, {v['redis_bytes_per_user']:.0f} bytes of Redis per user")
EOF
  stop_nodes
else
  for n in 1 "$NODES"; do
    start_nodes "$n"
    for rate in 2000 4000; do
      echo "== $n node(s): ring, 1000 users, $rate msg/s"
      "$BIN/wsim-bench" ring --connections 1000 --rate "$rate" --duration 5 --server "$(servers)" \
        --server-pid "$(pids)" --label "nodes=$n" || true
    done
    for rate in 200 400; do
      echo "== $n node(s): group of 100, 1000 users, 2 senders per group, $rate msg/s"
      "$BIN/wsim-bench" group --connections 1000 --group-size 100 --senders 2 --rate "$rate" --duration 5 \
        --server "$(servers)" --server-pid "$(pids)" --label "nodes=$n" || true
    done
    stop_nodes
  done
fi
