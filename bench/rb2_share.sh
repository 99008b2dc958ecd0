#!/usr/bin/env bash
# RewardBench 2 on CPU with and without prefix sharing, in one run: `worker score --schema rb2`
# scores a 4-completion best-of-N set once with each prompt's completions in one row (the prompt
# computed once, the default) and once with every completion in a row of its own
# (--no-share-prefix), alternating ROUNDS times, then prints a Markdown block (timings, the ratio,
# score agreement) to paste into bench/RESULTS.md.
#
# The set is made here from a RewardBench v1 JSONL file: each row's prompt with its chosen
# (correct) and rejected completion plus the next row's two completions (borrowed, incorrect), so
# 4 completions per prompt as in RewardBench 2's non-Ties subsets (subset "Focus").
#
# usage: bench/rb2_share.sh [DATASET] [THREADS]
#   DATASET  default ../shared/data/rewardbench-hep.jsonl (relative to the repository root):
#            HumanEvalPack's code prompts are long, as many RewardBench 2 prompts are
#   THREADS  default 2
# environment:
#   BENCH_ROWS=N        only the first N rows of DATASET (default: all)
#   BENCH_ROUNDS=N      shared/unshared pairs of runs (default 2)
#   BENCH_MODEL=DIR     model folder (default bench/out/bench-llama-rm, made by make_bench_model.py)
#   BENCH_SKIP_BUILD=1  do not run cargo build (use the existing worker binary)
#   BENCH_WORKER=PATH   worker binary (default target/release/worker)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
abspath() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
if [[ $# -ge 1 ]]; then DATASET="$(abspath "$1")"; else DATASET="../shared/data/rewardbench-hep.jsonl"; fi
if [[ -n "${BENCH_WORKER:-}" ]]; then WORKER="$(abspath "$BENCH_WORKER")"; else WORKER="$REPO/target/release/worker"; fi
cd "$REPO"

THREADS="${2:-2}"
ROUNDS="${BENCH_ROUNDS:-2}"
OUT=bench/out
MODEL="${BENCH_MODEL:-$OUT/bench-llama-rm}"
ROWS="${BENCH_ROWS:-}"
mkdir -p "$OUT"

[[ -f "$DATASET" ]] || { echo "dataset not found: $DATASET" >&2; exit 2; }
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "THREADS must be a positive integer: $THREADS" >&2; exit 2; }
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_ROUNDS must be a positive integer: $ROUNDS" >&2; exit 2; }
[[ -z "$ROWS" || "$ROWS" =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_ROWS must be a positive integer: $ROWS" >&2; exit 2; }

set +u
# shellcheck disable=SC1091
source scripts/env
set -u
PY="$HERD_VENV/bin/python"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS"
log() { printf '[rb2_share.sh] %s\n' "$*" >&2; }

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release -p herd-worker"
    cargo build --release -p herd-worker >&2
fi
[[ -x "$WORKER" ]] || { echo "missing $WORKER (build failed?)" >&2; exit 1; }
if [[ ! -f "$MODEL/model.safetensors" ]]; then
    log "making the benchmark model in $MODEL"
    "$PY" bench/make_bench_model.py --out "$MODEL" >&2
fi

# --- the 4-completion set ---------------------------------------------------------------------------
DATA="$OUT/rb2-share-$(basename "$DATASET" .jsonl)${ROWS:+-first-$ROWS}.jsonl"
"$PY" - "$DATASET" "$DATA" "${ROWS:-0}" <<'PYEOF'
import json, sys
src, dst, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = [json.loads(l) for l in open(src, encoding="utf-8") if l.strip()]
if rows:
    data = data[:rows]
with open(dst, "w", encoding="utf-8") as f:
    for i, row in enumerate(data):
        other = data[(i + 1) % len(data)]
        f.write(json.dumps({
            "id": str(i), "prompt": row["prompt"], "chosen": [row["chosen"]],
            "rejected": [row["rejected"], other["chosen"], other["rejected"]],
            "num_correct": 1, "subset": "Focus",
        }, ensure_ascii=False) + "\n")
PYEOF
PROMPTS=$(awk 'NF { c++ } END { print c + 0 }' "$DATA")
log "set $DATA ($PROMPTS prompts x 4 completions), model $MODEL, $THREADS threads, $ROUNDS rounds"

# run NAME FLAGS...: scores the set, keeps the results folder and the worker's own time
run() {
    local name="$1"; shift
    rm -rf "$OUT/$name"
    "$WORKER" score --schema rb2 --model "$MODEL" --dataset "$DATA" --device cpu --dtype fp32 \
        --threads "$THREADS" -o "$OUT/$name" "$@" 2> "$OUT/$name.log" || { cat "$OUT/$name.log" >&2; exit 1; }
    sed -n 's/.*scored [0-9]* completions of [0-9]* prompts in \([0-9.]*\)s.*/\1/p' "$OUT/$name.log" | tail -n 1
}

TIMES=()
for round in $(seq 1 "$ROUNDS"); do
    log "round $round: shared prompts"
    TIMES+=("shared $(run rb2-shared)")
    log "round $round: --no-share-prefix"
    TIMES+=("unshared $(run rb2-unshared --no-share-prefix)")
done

COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then COMMIT="$COMMIT+dirty"; fi
CPU="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"
MODEL_NAME="$(basename "$MODEL")"

"$PY" - "$OUT" "$DATA" "$PROMPTS" "$THREADS" "$MODEL" "$COMMIT" "${CPU:-unknown CPU}" "${TIMES[@]}" <<'PYEOF' | tee "$OUT/rb2-share-report.md"
import datetime, glob, json, sys
from pathlib import Path

out, data, prompts, threads, model, commit, cpu, *times = sys.argv[1:]
out = Path(out)
runs = {"shared": [], "unshared": []}
for t in times:
    name, seconds = t.split()
    runs[name].append(float(seconds))

def scores(name):
    [path] = glob.glob(str(out / name / "eval-set-scores" / "**" / "*.json"), recursive=True)
    return json.load(open(path))
a, b = scores("rb2-shared"), scores("rb2-unshared")
diff = max(abs(x[0] - y[0]) for ra, rb in zip(a["scores"], b["scores"]) for x, y in zip(ra, rb))
flips = sum(int(x != y) for x, y in zip(a["results"], b["results"]))
completions = sum(len(r) for r in a["scores"])
best = lambda xs: min(xs)
ratio = best(runs["unshared"]) / best(runs["shared"])
print(f"### RewardBench 2 prefix sharing on CPU — {datetime.date.today().isoformat()}, commit {commit}")
print()
print(f"- machine: {cpu}, {threads} threads (`--threads`, OMP/MKL/RAYON_NUM_THREADS={threads})")
print(f"- model: `{Path(model).name}` (bench/make_bench_model.py), fp32, worker defaults otherwise")
print(f"- data: `{Path(data).name}`: {prompts} prompts x 4 completions = {completions} sequences")
print()
print("| run | worker's load+score s, each round | best s | completions/s (best) |")
print("|---|---|---:|---:|")
for name, label in (("shared", "prompt shared per row (default)"), ("unshared", "`--no-share-prefix`")):
    xs = runs[name]
    print(f"| {label} | {' / '.join(f'{x:.2f}' for x in xs)} | {best(xs):.2f} | {completions / best(xs):.1f} |")
print()
print(f"**Ratio shared / unshared (completions/s, best of each): {ratio:.2f}x.** Agreement: max |score diff| "
      f"{diff:.3g}, best-of-N credit differences {flips} of {prompts}.")
PYEOF
