#!/usr/bin/env bash
# CPU throughput of `worker score` against Hugging Face transformers, same model, inputs and threads,
# in one run:
#   1. reference  = RewardBench run_rm.py pipeline (bench/reference_pipeline.py)
#   2. optimized  = transformers with length-sorted token-budget batches (reference_pipeline.py --optimized)
#   3. herd       = target/release/worker score
# then prints a Markdown block (timings, ratios, score agreement) to paste into bench/RESULTS.md.
#
# usage: bench/scoring.sh [DATASET] [THREADS]
#   DATASET  default ../shared/data/rewardbench-llmbar.jsonl (relative to the repository root)
#   THREADS  default 2
# environment:
#   BENCH_ROWS=N        only the first N rows of DATASET
#   BENCH_MODEL=DIR     model folder (default bench/out/bench-llama-rm, made by make_bench_model.py)
#   BENCH_SKIP_BUILD=1  do not run cargo build (use the existing worker binary)
#   BENCH_WORKER=PATH   worker binary (default target/release/worker)
#   BENCH_ATTN=IMPL     attn_implementation of both transformers runs (default transformers' choice,
#                       sdpa; Gemma 2 needs eager for its attention soft cap)
#   BENCH_OPT_BATCH_TOKENS=N  token budget of the optimized transformers run (default 2048, the
#                       worker's CPU default; 2048-4096 measured fastest for transformers on 2 cores)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
abspath() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
# an explicit DATASET is relative to the caller's directory; the default to the repository root
if [[ $# -ge 1 ]]; then DATASET="$(abspath "$1")"; else DATASET="../shared/data/rewardbench-llmbar.jsonl"; fi
if [[ -n "${BENCH_WORKER:-}" ]]; then WORKER="$(abspath "$BENCH_WORKER")"; else WORKER="$REPO/target/release/worker"; fi
cd "$REPO"

THREADS="${2:-2}"
OUT=bench/out
MODEL="${BENCH_MODEL:-$OUT/bench-llama-rm}"
ROWS="${BENCH_ROWS:-}"
OPT_BATCH_TOKENS="${BENCH_OPT_BATCH_TOKENS:-2048}"
ATTN_ARGS=()
if [[ -n "${BENCH_ATTN:-}" ]]; then ATTN_ARGS=(--attn-implementation "$BENCH_ATTN"); fi
mkdir -p "$OUT"

[[ -f "$DATASET" ]] || { echo "dataset not found: $DATASET" >&2; exit 2; }
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "THREADS must be a positive integer: $THREADS" >&2; exit 2; }

# scripts/env is written for interactive shells; do not let `set -u` trip over it
set +u
# shellcheck disable=SC1091
source scripts/env
set -u
PY="$HERD_VENV/bin/python"

# every thread pool gets the same count: libtorch/OpenMP (intra-op), MKL, and the Rust
# `tokenizers` rayon pool (used by both the Python fast tokenizer and the worker)
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
log() { printf '[scoring.sh] %s\n' "$*" >&2; }
# busy CPU seconds of the whole machine so far (all cores, from /proc/stat)
busy_s() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat; }
# run NAME CMD...: runs CMD and writes "wall_s cpu_s machine_busy_s" to $OUT/NAME.time, where cpu_s is
# the command's user+sys (from /usr/bin/time when present) and machine_busy_s all CPU time used
# on the machine meanwhile, so that busy - cpu = what other processes took (contention)
run() {
    local name="$1" t0 b0 cpu="nan"; shift
    t0=$(now); b0=$(busy_s)
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -f '%U %S' -o "$OUT/$name.rusage" "$@" || return 1
        cpu=$(awk '{ print $1 + $2 }' "$OUT/$name.rusage")
    else
        "$@" || return 1
    fi
    echo "$(since "$t0") $cpu $(awk -v a="$b0" -v b="$(busy_s)" 'BEGIN { printf "%.2f", b - a }')" > "$OUT/$name.time"
}

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release -p herd-worker"
    cargo build --release -p herd-worker >&2
fi
[[ -x "$WORKER" ]] || { echo "missing $WORKER (build failed?)" >&2; exit 1; }

if [[ ! -f "$MODEL/model.safetensors" ]]; then
    log "making the benchmark model in $MODEL"
    "$PY" bench/make_bench_model.py --out "$MODEL" >&2
fi

DATA="$DATASET"
if [[ -n "$ROWS" ]]; then
    [[ "$ROWS" =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_ROWS must be a positive integer: $ROWS" >&2; exit 2; }
    DATA="$OUT/$(basename "$DATASET" .jsonl)-first-$ROWS.jsonl"
    awk -v n="$ROWS" 'NF { print; if (++c >= n) exit }' "$DATASET" > "$DATA"
fi
PAIRS=$(awk 'NF { c++ } END { print c + 0 }' "$DATA")
log "dataset $DATA ($PAIRS pairs), model $MODEL, $THREADS threads"

# --- 1. RewardBench reference pipeline -----------------------------------------------------------
log "reference pipeline (run_rm.py: batch 8, dataset order, tokenizer padding side)"
run reference "$PY" bench/reference_pipeline.py --model "$MODEL" --dataset "$DATA" --threads "$THREADS" "${ATTN_ARGS[@]}" \
    --scores "$OUT/reference-scores.jsonl" --json "$OUT/reference.json" > /dev/null 2> "$OUT/reference.log" \
    || { cat "$OUT/reference.log" >&2; exit 1; }

# --- 2. optimized transformers ---------------------------------------------------------------------
log "optimized transformers (length-sorted, $OPT_BATCH_TOKENS-token batches, right padding)"
run optimized "$PY" bench/reference_pipeline.py --optimized --model "$MODEL" --dataset "$DATA" --threads "$THREADS" \
    --batch-tokens "$OPT_BATCH_TOKENS" --max-batch-rows 256 "${ATTN_ARGS[@]}" \
    --scores "$OUT/optimized-scores.jsonl" --json "$OUT/optimized.json" > /dev/null 2> "$OUT/optimized.log" \
    || { cat "$OUT/optimized.log" >&2; exit 1; }

# --- 3. herd ---------------------------------------------------------------------------------------
log "herd: worker score"
run herd "$WORKER" score --model "$MODEL" --dataset "$DATA" --device cpu --dtype fp32 --threads "$THREADS" \
    -o "$OUT/herd.jsonl" 2> "$OUT/herd.log" \
    || { cat "$OUT/herd.log" >&2; exit 1; }
HERD_OWN=$(sed -n 's/.*scored \([0-9]*\) pairs in \([0-9.]*\)s.*/\2/p' "$OUT/herd.log" | tail -n 1)
[[ -n "$HERD_OWN" ]] || { echo "could not find 'scored N pairs in S s' in $OUT/herd.log" >&2; exit 1; }

# --- report ----------------------------------------------------------------------------------------
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then COMMIT="$COMMIT+dirty"; fi
CPU="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"

"$PY" - "$OUT" "$DATA" "$PAIRS" "$THREADS" "$MODEL" "$HERD_OWN" \
    "$COMMIT" "${CPU:-unknown CPU}" "${ROWS:-all}" <<'PYEOF' | tee "$OUT/scoring-report.md"
import json, sys, datetime
from pathlib import Path

(out, data, pairs, threads, model, herd_own, commit, cpu, rows) = sys.argv[1:]
out = Path(out)
def timing(name):
    wall, cpu_s, busy = (float(x) for x in (out / f"{name}.time").read_text().split())
    return wall, cpu_s, busy
(ref_wall, ref_cpu, ref_busy), (opt_wall, opt_cpu, opt_busy), (herd_wall, herd_cpu, herd_busy) = (
    timing("reference"), timing("optimized"), timing("herd"))
pairs = int(pairs)
ref = json.loads((out / "reference.json").read_text())
opt = json.loads((out / "optimized.json").read_text())
herd_summary = json.loads((out / "herd.json").read_text()) if (out / "herd.json").exists() else {}

def scores(path):
    rows = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    return rows

def compare(a, b):
    """max |diff| over chosen and rejected scores, number of win/loss flips, rows compared."""
    assert len(a) == len(b), (len(a), len(b))
    max_diff, flips, id_mismatch = 0.0, 0, 0
    for x, y in zip(a, b):
        if str(x["id"]) != str(y["id"]):
            id_mismatch += 1
        for key in ("scores_chosen", "scores_rejected"):
            for u, v in zip(x[key], y[key]):
                max_diff = max(max_diff, abs(u - v))
        flips += int(int(x["results"]) != int(y["results"]))
    return max_diff, flips, id_mismatch

ref_rows = scores(out / "reference-scores.jsonl")
opt_rows = scores(out / "optimized-scores.jsonl")
herd_rows = scores(out / "herd.jsonl")
hd, hf, hm = compare(ref_rows, herd_rows)
od, of, om = compare(ref_rows, opt_rows)
margin = min(abs(r["scores_chosen"][0] - r["scores_rejected"][0]) for r in ref_rows)
acc = lambda rows: sum(int(r["results"]) for r in rows) / len(rows)

ref_ls, opt_ls, herd_ls = ref["load_plus_score_s"], opt["load_plus_score_s"], float(herd_own)
tokens = ref["tokens"]
f2 = lambda x: f"{x:.2f}"

lines = []
p = lines.append
p(f"### `worker score` vs transformers on CPU — {datetime.date.today().isoformat()}, commit {commit}")
p("")
p(f"- machine: {cpu}, {threads} threads for every run (torch.set_num_threads / --threads; "
  f"OMP/MKL/RAYON_NUM_THREADS={threads})")
p(f"- model: `{Path(model).name}` (random LlamaForSequenceClassification, hidden 512, 4 layers, GQA 8/4, "
  f"vocab 32000, fp32), Llama-2 tokenizer, FastChat tulu + EOS")
p(f"- data: `{Path(data).name}` ({'first ' + rows + ' rows' if rows != 'all' else 'all rows'}: "
  f"{pairs} pairs, {2 * pairs} sequences, {tokens} tokens); max_length 2048")
p(f"- torch {ref['torch']}, transformers {ref['transformers']}, attention {ref['attn_implementation']}")
p("")
p("| run | batching | load+score s | pairs/s | tokens/s | process wall s | process CPU s | other processes' CPU s | python split: tokenize / forward s |")
p("|---|---|---:|---:|---:|---:|---:|---:|---:|")
others = lambda busy, cpu_s: f"{max(busy - cpu_s, 0.0):.1f}"
p(f"| reference (RewardBench run_rm.py) | {ref['batch_size']} pairs, dataset order, {ref['padding_side']} padding, "
  f"{ref['padding_efficiency']:.0%} real tokens | {f2(ref_ls)} | {pairs / ref_ls:.2f} | {tokens / ref_ls:.0f} | "
  f"{f2(ref_wall)} | {ref_cpu:.1f} | {others(ref_busy, ref_cpu)} | {f2(ref['tokenize_s'])} / {f2(ref['forward_s'])} |")
p(f"| optimized transformers | sorted, {opt['batch_tokens']}-token batches, right padding, "
  f"{opt['padding_efficiency']:.0%} real tokens | {f2(opt_ls)} | {pairs / opt_ls:.2f} | {tokens / opt_ls:.0f} | "
  f"{f2(opt_wall)} | {opt_cpu:.1f} | {others(opt_busy, opt_cpu)} | {f2(opt['tokenize_s'])} / {f2(opt['forward_s'])} |")
p(f"| herd `worker score` | worker defaults (`--batch-tokens`/`--max-batch-rows`/prefix sharing) | {f2(herd_ls)} | {pairs / herd_ls:.2f} | "
  f"{tokens / herd_ls:.0f} | {f2(herd_wall)} | {herd_cpu:.1f} | {others(herd_busy, herd_cpu)} | — |")
p("")
p("| ratio (pairs/s) | load+score (in-process) | process wall | target |")
p("|---|---:|---:|---:|")
def verdict(x, target):
    return f"{x:.2f}x {'PASS' if x >= target else 'MISS'}"
p(f"| herd / reference | {verdict(ref_ls / herd_ls, 2.5)} | {ref_wall / herd_wall:.2f}x | >= 2.5x |")
p(f"| herd / optimized | {verdict(opt_ls / herd_ls, 1.2)} | {opt_wall / herd_wall:.2f}x | >= 1.2x |")
p("")
p(f"Agreement (fp32): herd vs reference max |score diff| = {hd:.3g}, win/loss flips = {hf} of {pairs}"
  + (f", id mismatches = {hm}" if hm else "")
  + f"; optimized vs reference max |diff| = {od:.3g}, flips = {of}"
  + (f", id mismatches = {om}" if om else "")
  + f". Smallest |chosen - rejected| margin in the reference = {margin:.3g}. "
  f"Accuracy: reference {acc(ref_rows):.4f}, optimized {acc(opt_rows):.4f}, herd {acc(herd_rows):.4f}"
  + (f" (herd.json accuracy {herd_summary['accuracy']:.4f})" if 'accuracy' in herd_summary else "") + ".")
p("")
p("load+score = model and tokenizer load + formatting + tokenization + forward passes, timed inside each "
  "process (Python: perf_counter around from_pretrained and the scoring loop; herd: its own "
  "\"scored N pairs in S s\"). Process wall additionally counts interpreter start and `import torch` "
  "(Python) or libtorch loading (herd). Process CPU = user+sys of the whole process; other processes' CPU = "
  "CPU time the rest of the machine used during that run (from /proc/stat): far from 0 means the "
  "timings were disturbed by other work.")
print("\n".join(lines))
PYEOF
