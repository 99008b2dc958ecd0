#!/usr/bin/env bash
# The distributed-sweep benchmark: simulated workers (STUB scoring: a sleep, not a GPU) against a
# real `coord serve` on 127.0.0.1. Three runs:
#   1. sweep:  1, 2, 4, 8 workers on the same sweep (scaling efficiency, coordinator overhead)
#   2. ingest: 200 workers streaming with zero scoring time, kill -9 of the coordinator mid-run,
#              restart, then the state file is checked against every acknowledgement
#   3. load:   the same with 500 workers (the hardening load test)
# Output (Markdown) goes to stdout and bench/out/sweep-report.md. Sizes finish in a few minutes on
# 2 cores; the sizes can be changed through the variables below (SIM_SKIP_BUILD=1: use the
# binaries already in target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f scripts/env ] && source scripts/env

SIM_WORKERS="${SIM_WORKERS:-1,2,4,8}"
SIM_CHECKPOINTS="${SIM_CHECKPOINTS:-8}"
SIM_EXAMPLES="${SIM_EXAMPLES:-2000}"
SIM_SHARD="${SIM_SHARD:-250}"
SIM_MS="${SIM_MS:-2}"
INGEST_WORKERS="${INGEST_WORKERS:-200}"
INGEST_SECONDS="${INGEST_SECONDS:-20}"
INGEST_KILL_AT="${INGEST_KILL_AT:-8}"
# enough planned results that the workers never run dry (~200k results/s measured on 2 cores)
INGEST_CHECKPOINTS="${INGEST_CHECKPOINTS:-600}"
LOAD_WORKERS="${LOAD_WORKERS:-500}"
LOAD_SECONDS="${LOAD_SECONDS:-30}"
LOAD_KILL_AT="${LOAD_KILL_AT:-12}"
LOAD_CHECKPOINTS="${LOAD_CHECKPOINTS:-900}"

if [ -z "${SIM_SKIP_BUILD:-}" ]; then
  cargo build --release -p herd-coordinator -p herd-bench
fi
SIM=target/release/herd-sim
COORD=target/release/coord
mkdir -p bench/out
REPORT=bench/out/sweep-report.md
{
  echo "## herd-sim on $(nproc) cores, commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- coordinator proto bench || echo ' (+ uncommitted changes)'), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "### sweep: $SIM_CHECKPOINTS checkpoints x $SIM_EXAMPLES examples, shards of $SIM_SHARD, STUB $SIM_MS ms/example"
  echo
  echo '```'
  echo "$SIM sweep --coord-bin $COORD --workers $SIM_WORKERS --checkpoints $SIM_CHECKPOINTS --examples $SIM_EXAMPLES --shard-size $SIM_SHARD --ms-per-example $SIM_MS"
  echo '```'
  "$SIM" sweep --coord-bin "$COORD" --workers "$SIM_WORKERS" --checkpoints "$SIM_CHECKPOINTS" \
    --examples "$SIM_EXAMPLES" --shard-size "$SIM_SHARD" --ms-per-example "$SIM_MS"
  echo
  echo "### ingest: $INGEST_WORKERS workers, $INGEST_SECONDS s, kill -9 at $INGEST_KILL_AT s"
  echo
  echo '```'
  echo "$SIM ingest --coord-bin $COORD --workers $INGEST_WORKERS --seconds $INGEST_SECONDS --kill-at $INGEST_KILL_AT --checkpoints $INGEST_CHECKPOINTS --examples 10000"
  echo '```'
  "$SIM" ingest --coord-bin "$COORD" --workers "$INGEST_WORKERS" --seconds "$INGEST_SECONDS" \
    --kill-at "$INGEST_KILL_AT" --checkpoints "$INGEST_CHECKPOINTS" --examples 10000
  echo
  echo "### load test: $LOAD_WORKERS workers, $LOAD_SECONDS s, kill -9 at $LOAD_KILL_AT s"
  echo
  echo '```'
  echo "$SIM ingest --coord-bin $COORD --workers $LOAD_WORKERS --seconds $LOAD_SECONDS --kill-at $LOAD_KILL_AT --checkpoints $LOAD_CHECKPOINTS --examples 10000"
  echo '```'
  "$SIM" ingest --coord-bin "$COORD" --workers "$LOAD_WORKERS" --seconds "$LOAD_SECONDS" \
    --kill-at "$LOAD_KILL_AT" --checkpoints "$LOAD_CHECKPOINTS" --examples 10000
} | tee "$REPORT"
echo "report: $REPORT" >&2
