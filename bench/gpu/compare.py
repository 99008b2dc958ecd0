#!/usr/bin/env python3
"""Agreement of two per-example score files (JSONL rows with "id", "scores_chosen",
"scores_rejected", as `worker score -o` and bench/reference_pipeline.py --scores write them), for
bench/gpu/run.

Prints one JSON object: rows compared, max |diff| over every score, how many rows flip (chosen >
rejected in one file but not the other), both accuracies. Exits 1 when --max-diff is given and
exceeded, or when the files do not hold the same ids.

Usage: compare.py A.jsonl B.jsonl [--max-diff 1e-4] [--label NAME]
"""

import argparse
import json
import sys


def read(path):
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                rows[str(row["id"])] = (row["scores_chosen"], row["scores_rejected"])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--max-diff", type=float, default=None)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    a, b = read(args.a), read(args.b)
    if a.keys() != b.keys():
        print(f"{args.a} and {args.b} hold different ids ({len(a)} and {len(b)} rows)", file=sys.stderr)
        return 1
    max_diff = 0.0
    flips = wins_a = wins_b = 0
    for key, (ca, ra) in a.items():
        cb, rb = b[key]
        for x, y in zip(ca + ra, cb + rb):
            max_diff = max(max_diff, abs(x - y))
        win_a, win_b = ca > ra, cb > rb  # list comparison, as run_rm.py
        wins_a += win_a
        wins_b += win_b
        flips += win_a != win_b
    n = max(len(a), 1)
    out = {
        "label": args.label,
        "rows": len(a),
        "max_abs_diff": max_diff,
        "flips": flips,
        "accuracy_a": wins_a / n,
        "accuracy_b": wins_b / n,
    }
    print(json.dumps(out))
    if args.max_diff is not None and not max_diff <= args.max_diff:
        print(f"{args.label}: max |diff| {max_diff:.3g} exceeds {args.max_diff:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
