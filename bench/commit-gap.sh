#!/usr/bin/env bash
# Same-run A/B of the store writer's commit gap: [store] commit_gap_us = 0 (every transaction starts
# as soon as the previous one ends) against the default 2000, interleaved, twice, on fresh servers
# pinned like `make bench`. Usage: bash bench/commit-gap.sh [RESULT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wsim-target}"
source bench/lib.sh
OUT="${1:-bench/results/$(date +%F)-commit-gap.json}"
prepare_bench
run() { # backend gap label wsim-bench-args…
  local backend=$1 gap=$2 label=$3; shift 3
  SERVER_TOML="[store]
commit_gap_us = $gap"
  start_server "$backend"
  generate "$OUT" "$label" "$@"
  stop_server
}
for rep in 1 2; do
  for gap in 0 2000; do
    run sqlite "$gap" "sqlite-gap$gap-ring4000" ring --connections 1000 --rate 4000 --duration 8
    run sqlite "$gap" "sqlite-gap$gap-ring6554" ring --connections 1000 --rate 6554 --duration 8
    run sqlite "$gap" "sqlite-gap$gap-ring8000" ring --connections 1000 --rate 8000 --duration 8
    run sqlite "$gap" "sqlite-gap$gap-group800" group --connections 1000 --group-size 100 --senders 2 --rate 800 --duration 8
    run mysql "$gap" "mysql-gap$gap-ring10486" ring --connections 1000 --rate 10486 --duration 8
  done
done
echo "results in $OUT"
