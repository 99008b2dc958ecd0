#!/usr/bin/env python3
"""Golden files for the prior preference sets (`worker score --pref-sets`), checked byte for byte
by common/rewardbench/tests/prior_sets.rs.

Regenerate (from the repository root, after scripts/setup):

    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 \
        $HOME/.cache/herd/venv-rewardbench-0.1.4/bin/python tests/golden/make_prior_sets_golden.py

Writes common/rewardbench/tests/golden/prior-sets/:

1. pref-test-sets/: a FIXTURE in the layout of the Hub dataset `allenai/pref-test-sets`
   (`data/<split>-00000-of-00001.parquet`, one file per split, the nine splits of the real
   dataset, pku_better and pku_safer included). The real prior-set data cannot be reached from
   this machine, so the rows are NOT the prior sets: they are real RewardBench rows from
   ../shared/data (LLMBar and HumanEvalPack, see its README), repackaged in the prior sets'
   columns: `prompt` as a list of {content, role} messages, `chosen`, `rejected`, `subset` (the
   row's RewardBench subset, standing in for the sub-subset some prior sets carry) and `id`
   (restarting at 0 in every split, as split-local ids do). One row per split is a three-turn
   conversation stitched from two real rows (prompt, chosen answer, next prompt), to exercise the
   multi-turn path. pref-test-sets/README.md says the same.
2. scores.json: per-example scores, one `[[chosen], [rejected]]` per row in the order the
   reference loads the rows: synthetic float32 values from a seeded generator (with ties), standing
   in for a model's logits.
3. results/: what the reference writes for those scores, through the REAL package:
   - `rewardbench.utils.load_eval_dataset(core_set=False, conv=get_conv_template("tulu"), ...)`
     (rewardbench 0.1.4, real) with its `load_dataset` pointed at the fixture folder (the one
     substitution: `datasets.load_dataset(<fixture folder>)` instead of the Hub id
     `allenai/pref-test-sets`): the split concatenation, the subset -> subsubset renaming, the
     dropped pku splits, the FastChat formatting of text_chosen / text_rejected;
   - the few lines of scripts/run_rm.py that build `out_dataset` and `results_grouped` (that
     script is not in the wheel: TRANSCRIBED from allenai/reward-bench HEAD 05a9005, run_rm.py
     lines 334-394), with `datasets.Dataset.add_column` / `to_dict` and `np.unique` (real);
   - `rewardbench.utils.save_to_hub(..., local_only=True)` (real): with local_only it writes
     `./results/{target_path}{model}.json` and skips `api.upload_file` (nothing is pushed);
     `save_metrics_for_beaker=False` keeps it off `/output/metrics.json`.
   So results/pref-sets/<model>.json and results/pref-sets-scores/<model>.json are the
   reference's own bytes. results/eval-set/<model>.json: a RewardBench core-set results dict
   (synthetic accuracies k/n for all 23 subsets) written by the same real save_to_hub, the input
   of the overall score below.
4. summary.json: the aggregate numbers: `Prior Sets (0.5 weight)` = np.nanmean over
   anthropic_helpful, anthropic_hhh, shp, summarize and the overall
   np.ma.average([Chat, Chat Hard, Safety, Reasoning, Prior Sets], weights=[2, 2, 2, 2, 1])
   (TRANSCRIBED from analysis/get_benchmark_results.py::get_average_over_rewardbench, lines
   107-132, which the wheel lacks), with the four sections from the REAL
   `rewardbench.utils.calculate_scores_per_section(EXAMPLE_COUNTS, SUBSET_MAPPING, ...)`.
   Floats are stored as hex bit patterns next to their repr.
"""

import json
import os
import random
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import rbref  # noqa: E402,F401  (first: the documented runtime patches)

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from fastchat.conversation import get_conv_template  # noqa: E402
from rewardbench import utils  # noqa: E402
from rewardbench.constants import EXAMPLE_COUNTS, SUBSET_MAPPING  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(os.environ.get("HERD_SHARED", os.path.join(os.path.dirname(ROOT), "shared")), "data")
OUT = os.path.join(ROOT, "common", "rewardbench", "tests", "golden", "prior-sets")
FIXTURE = os.path.join(OUT, "pref-test-sets")

MODEL = "prior-sets-fixture/tiny-rm"
MODEL_TYPE = "Seq. Classifier"
CHAT_TEMPLATE = "tulu"
SPLITS = [
    "anthropic_harmless",
    "anthropic_helpful",
    "anthropic_hhh",
    "mtbench_gpt4",
    "mtbench_human",
    "pku_better",
    "pku_safer",
    "shp",
    "summarize",
]
ROWS_PER_SPLIT = 4

SCHEMA = pa.schema(
    [
        ("prompt", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("subset", pa.string()),
        ("id", pa.int64()),
    ]
)


def shared_rows():
    rows = []
    for name in ["rewardbench-llmbar.jsonl", "rewardbench-hep.jsonl"]:
        with open(os.path.join(SHARED, name), encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    # short rows keep the golden files small
    rows = [r for r in rows if len(r["prompt"]) + len(r["chosen"]) + len(r["rejected"]) < 1200]
    return rows


def make_fixture():
    rng = random.Random(20240610)
    rows = shared_rows()
    picks = rng.sample(rows, len(SPLITS) * (ROWS_PER_SPLIT + 1))
    if os.path.isdir(FIXTURE):
        shutil.rmtree(FIXTURE)
    os.makedirs(os.path.join(FIXTURE, "data"))
    for s, split in enumerate(SPLITS):
        mine = picks[s * (ROWS_PER_SPLIT + 1) : (s + 1) * (ROWS_PER_SPLIT + 1)]
        out = []
        for i, row in enumerate(mine[:ROWS_PER_SPLIT]):
            prompt = [{"content": row["prompt"], "role": "user"}]
            if i == 1:
                # three turns from two real rows: prompt, its chosen answer, the next prompt
                nxt = mine[ROWS_PER_SPLIT]
                prompt = [
                    {"content": nxt["prompt"], "role": "user"},
                    {"content": nxt["chosen"], "role": "assistant"},
                    {"content": row["prompt"], "role": "user"},
                ]
            out.append(
                {
                    "prompt": prompt,
                    "chosen": row["chosen"],
                    "rejected": row["rejected"],
                    "subset": row["subset"],
                    "id": i,
                }
            )
        table = pa.Table.from_pylist(out, schema=SCHEMA)
        pq.write_table(table, os.path.join(FIXTURE, "data", f"{split}-00000-of-00001.parquet"))
    with open(os.path.join(FIXTURE, "README.md"), "w") as f:
        f.write(
            "# A FIXTURE in the layout of allenai/pref-test-sets, NOT its data\n\n"
            "Made by tests/golden/make_prior_sets_golden.py. The real prior preference sets cannot\n"
            "be reached offline, so every split here holds real RewardBench rows from\n"
            "../shared/data (LLMBar, HumanEvalPack) in the prior sets' columns (prompt as\n"
            "{content, role} messages, chosen, rejected, subset, id). The `subset` column holds the\n"
            "row's RewardBench subset; ids restart at 0 in every split. Row 1 of every split is a\n"
            "three-turn conversation stitched from two real rows.\n"
        )


def float32(x):
    return float(np.float32(x))


def make_scores(n):
    rng = random.Random(7)
    scores = []
    for i in range(n):
        chosen = float32(rng.gauss(0.3, 1.0))
        rejected = chosen if i % 7 == 3 else float32(rng.gauss(0.0, 1.0))
        scores.append([[chosen], [rejected]])
    return scores


def hexbits(x):
    return struct.pack(">d", x).hex()


def main():
    make_fixture()

    def load_dataset(name, *args, **kwargs):
        assert name == utils.EXTRA_PREF_SETS, name
        return datasets.load_dataset(FIXTURE)

    utils.load_dataset = load_dataset
    conv = get_conv_template(CHAT_TEMPLATE)
    dataset, subsets = utils.load_eval_dataset(
        core_set=False,
        conv=conv,
        custom_dialogue_formatting=False,
        tokenizer=None,
        logger=None,
        keep_columns=["text_chosen", "text_rejected", "id"],
    )

    scores = make_scores(len(dataset))
    with open(os.path.join(OUT, "scores.json"), "w") as f:
        json.dump(scores, f)
        f.write("\n")
    scores_chosen = [s[0] for s in scores]
    scores_rejected = [s[1] for s in scores]

    # --- scripts/run_rm.py (HEAD 05a9005), lines 184-186 and 334-394, transcribed ---
    ids = dataset["id"]
    dataset = dataset.remove_columns("id")
    results = [1 if chosen > rejected else 0 for chosen, rejected in zip(scores_chosen, scores_rejected)]
    out_dataset = dataset.add_column("results", results)
    out_dataset = out_dataset.add_column("subset", subsets)
    out_dataset = out_dataset.add_column("id", ids)
    out_dataset = out_dataset.add_column("scores_chosen", scores_chosen)
    out_dataset = out_dataset.add_column("scores_rejected", scores_rejected)
    results_grouped = {}
    results_grouped["model"] = MODEL
    results_grouped["model_type"] = MODEL_TYPE
    results_grouped["chat_template"] = CHAT_TEMPLATE  # the tokenizer has no template
    present_subsets = np.unique(subsets)
    for subset in present_subsets:
        subset_dataset = out_dataset.filter(lambda example: example["subset"] == subset)
        num_correct = sum(subset_dataset["results"])
        num_total = len(subset_dataset["results"])
        results_grouped[subset] = num_correct / num_total
    # --- end of the transcription ---

    results_dir = os.path.join(OUT, "results")
    if os.path.isdir(results_dir):
        shutil.rmtree(results_dir)
    cwd = os.getcwd()
    os.chdir(OUT)
    try:
        utils.save_to_hub(results_grouped, MODEL, "pref-sets/", False, local_only=True,
                          save_metrics_for_beaker=False)
        scores_dict = out_dataset.to_dict()
        scores_dict["model"] = MODEL
        scores_dict["model_type"] = MODEL_TYPE
        scores_dict["chat_template"] = CHAT_TEMPLATE
        utils.save_to_hub(scores_dict, MODEL, "pref-sets-scores/", False, local_only=True)

        # a core-set results dict for the overall score: k/n accuracies on all 23 subsets
        rng = random.Random(23)
        core = {"model": MODEL, "model_type": MODEL_TYPE, "chat_template": CHAT_TEMPLATE}
        for subset in sorted(EXAMPLE_COUNTS):
            n = EXAMPLE_COUNTS[subset]
            core[subset] = rng.randint(0, n) / n
        utils.save_to_hub(core, MODEL, "eval-set/", False, local_only=True,
                          save_metrics_for_beaker=False)
    finally:
        os.chdir(cwd)

    sections = utils.calculate_scores_per_section(EXAMPLE_COUNTS, SUBSET_MAPPING, core)
    # --- analysis/get_benchmark_results.py (HEAD 05a9005), lines 107-132, transcribed ---
    pref_columns = ["anthropic_helpful", "anthropic_hhh", "shp", "summarize"]
    pref_data = np.array([[results_grouped.get(c, np.nan) for c in pref_columns]])
    prior_sets = np.nanmean(pref_data, axis=1)[0]
    final_data = np.array([[*[sections[k] for k in SUBSET_MAPPING], prior_sets]])
    masked_data = np.ma.masked_array(final_data, np.isnan(final_data))
    average = np.ma.average(masked_data, axis=1, weights=[2, 2, 2, 2, 1]).filled(np.nan)[0]
    # --- end of the transcription ---
    mean_of_4 = sum(sections.values()) / 4

    def num(x):
        return {"hex": hexbits(float(x)), "repr": repr(float(x))}

    summary = {
        "reference": rbref.REFERENCE,
        "rows": len(out_dataset),
        "subsubsets_dropped": "subsubset" not in out_dataset.column_names,
        "prior_sets": num(prior_sets),
        "sections": {k: num(v) for k, v in sections.items()},
        "score_mean_of_4": num(mean_of_4),
        "overall_weighted": num(average),
    }
    with open(os.path.join(OUT, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
