"""The `coord run` check of deploy/images/build: its input and its verdict.

    check_run.py dataset GOLDEN OUT.jsonl
        the evaluation set of a committed classifier golden (tests/golden/fixtures/<case>.json:
        LLMBar and HEP rows of ../shared/data), ids made unique as tests/testkit's
        dataset_from_golden does (the goldens number rows per source file)
    check_run.py compare REPORT_DIR GOLDEN...
        each golden's model was scored by `coord run` inside the worker image: its
        REPORT_DIR/eval-set-scores/<model>.json must hold the golden's fp32 scores (transformers
        4.57.6 on torch 2.11.0, CPU; the bound of worker/tests/cli.rs) and the same win/loss
        results, row by row

Standard library only: it runs on the host that built the images, before or without any venv.
"""

import json
import sys
from pathlib import Path

# worker/tests/cli.rs compares `worker score` with the same goldens at this bound
TOLERANCE = 1e-4


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def dataset(golden_path, out_path):
    golden = load(golden_path)
    with open(out_path, "w", encoding="utf-8") as out:
        for index, example in enumerate(golden["examples"]):
            row = {key: example[key] for key in ("prompt", "chosen", "rejected", "subset")}
            row["id"] = index
            out.write(json.dumps(row) + "\n")
    print(f"{out_path}: {len(golden['examples'])} pairs from {golden_path}")


def compare(report_dir, golden_paths):
    failures = []
    for golden_path in golden_paths:
        golden = load(golden_path)
        model = golden["model"]
        scores_path = Path(report_dir) / "eval-set-scores" / f"{model}.json"
        if not scores_path.is_file():
            failures.append(f"{model}: {scores_path} was not written")
            continue
        ours = load(scores_path)
        examples = golden["examples"]
        if ours["id"] != list(range(len(examples))):
            failures.append(f"{model}: rows {ours['id']} instead of 0..{len(examples) - 1}")
            continue
        worst = 0.0
        for index, example in enumerate(examples):
            for side in ("scores_chosen", "scores_rejected"):
                diff = abs(ours[side][index][0] - example[side][0])
                worst = max(worst, diff)
                if diff > TOLERANCE:
                    failures.append(
                        f"{model} row {index} {side}: {ours[side][index][0]} vs the golden's "
                        f"{example[side][0]}"
                    )
            win = int(example["scores_chosen"][0] > example["scores_rejected"][0])
            if ours["results"][index] != win:
                failures.append(f"{model} row {index}: result {ours['results'][index]}, golden {win}")
        print(f"{model}: {len(examples)} pairs, max |score - golden| {worst:.2e} (bound {TOLERANCE})")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


def main(argv):
    if len(argv) == 3 and argv[0] == "dataset":
        dataset(argv[1], argv[2])
        return 0
    if len(argv) >= 3 and argv[0] == "compare":
        return compare(argv[1], argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
