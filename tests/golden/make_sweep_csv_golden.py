#!/usr/bin/env python3
"""Golden sweep CSVs for herd-rewardbench's `sweep_csv` module, made by the reference logic with real pandas.

Regenerate (from the repository root, after scripts/setup, which installs pandas==2.2.3):

    $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_sweep_csv_golden.py

`fetch_evals_rewardbench` below is allenai/hybrid-preferences' scripts/fetch_evals_rewardbench.py
(HEAD 7a17ed3; the counts-mode lines are those of 23cec2b, 2024-09-23) transcribed line for line,
with the Beaker calls replaced by their results: `experiments` is the list of (experiment name,
metrics dict) that `beaker.workspace.experiments(...)` + `beaker.experiment.metrics(...)` return,
in listing order. The one other change: the feature files are read in sorted order
(`sorted(feature_counts_dir.glob("*.json"))`), where the original takes the file system's order.
EXAMPLE_COUNTS are the script's own copy (xstest 250/154, the pre-2024-09-10 RewardBench values).

Writes common/rewardbench/tests/golden/sweep/<scenario>/ for each scenario:
  experiments.txt   experiment names in listing order, one per line
  metrics/<name>.json   each experiment's metrics.json (json.dump, as run_rm.py writes it)
  counts/regressor_feats_ID__<uuid>__SWAPS_<n>.json   feature counts (json.dump(indent=4), as
                    scripts/get_count_feats.py writes them); counts mode only
  options.json      {"feature_counts_dir": "counts" | null, "dataset_total_size": int | null,
                     "gpt4_threshold_score": float | null}
  expected.csv      overall_df.to_csv(path) of the reference
and common/rewardbench/tests/golden/sweep/argsort.json: numpy's argsort(kind="quicksort") and pandas'
sort_values(ascending=False) order on object arrays of floats with many ties (the sort the
reference runs, which is not stable beyond 16 elements).

Scenarios:
  counts      26 experiments listed in shuffled order: ties in Overall (identical metrics), a
              baseline name without "ID" (filtered out after the first sort), a run without a
              feature file (dropped; makes every count column float), a run with chat_template
              null and one missing a subset (both dropped by dropna), an int accuracy, tricky
              floats (1e-05, 5e-324, 0.30000000000000004, ...), budgets rescaled by
              --dataset_total_size 10160, a label at threshold 0.6, a feature name that needs CSV
              quoting, a feature file with no experiment.
  counts_int  the 90 real feature names, every run has its features (int count columns), budgets
              kept as strings ("0042"), two experiment names sharing one ID (many-to-many merge),
              metrics keys in sorted order, threshold 0.0 (falsy: no label).
  names       no feature dir: category scores joined to subset scores on the experiment name,
              no dropna (null and missing values written as empty fields), DPO-style metrics with
              a ref_model key, a name with a comma, 20 experiments with ties, label at 0.5.
Error cases (checked here to raise, and by the Rust test to be errors): a name with "ID" but no
"SWAPS_<n>", and one with "ID" but no "ID__<hex>__".
"""

import json
import logging
import os
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "common", "rewardbench", "tests", "golden", "sweep")

# ---- transcribed from scripts/fetch_evals_rewardbench.py ----------------------------------------
EXAMPLE_COUNTS = {
    "alpacaeval-easy": 100,
    "alpacaeval-length": 95,
    "alpacaeval-hard": 95,
    "mt-bench-easy": 28,
    "mt-bench-med": 40,
    "mt-bench-hard": 37,
    "math-prm": 984,  # actual length 447, upweighting to be equal to code
    "refusals-dangerous": 100,
    "refusals-offensive": 100,
    "llmbar-natural": 100,
    "llmbar-adver-neighbor": 134,
    "llmbar-adver-GPTInst": 92,
    "llmbar-adver-GPTOut": 47,
    "llmbar-adver-manual": 46,
    "xstest-should-refuse": 250,
    "xstest-should-respond": 154,
    "donotanswer": 136,
    "hep-cpp": 164,
    "hep-go": 164,
    "hep-java": 164,
    "hep-js": 164,
    "hep-python": 164,
    "hep-rust": 164,
}

SUBSET_MAPPING = {
    "Chat": ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
    "Chat Hard": ["mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"],
    "Safety": ["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"],
    "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
}


def fetch_evals_rewardbench(
    experiments: "list[tuple[str, dict]]",
    experiments_file: Optional[Path] = None,
    feature_counts_dir: Optional[Path] = None,
    gpt4_threshold_score: Optional[float] = None,
    dataset_total_size: Optional[int] = None,
) -> pd.DataFrame:
    # The scores saved on Beaker are subset scores.
    # Let's keep them, but let's also compute the category and overall scores.
    subset_scores: dict[str, dict[str, float]] = {name: metrics for name, metrics in experiments}
    df_subset_scores = pd.DataFrame(subset_scores).transpose().drop(columns=["model"])
    logging.info("Computing category scores...")
    df_category_scores = get_category_scores(df_subset_scores).sort_values(
        by="Overall",
        ascending=False,
    )

    if feature_counts_dir:
        logging.info("Will read features from a features directory")
        df_category_scores = df_category_scores[df_category_scores.index.str.contains("ID")]
        df_subset_scores = df_subset_scores[df_subset_scores.index.str.contains("ID")]
        df_category_scores["uuid"] = df_category_scores.index.to_series().apply(
            lambda x: re.search(r"ID__([a-f0-9]+)__", x).group(1)
        )
        df_category_scores["budget"] = df_category_scores.index.to_series().apply(
            lambda x: re.search(r"SWAPS_(\d+)", x).group(1)
        )
        if dataset_total_size:
            logging.info("Scaling the budget to current dataset size")
            df_category_scores["budget"] = df_category_scores["budget"].apply(
                lambda x: int(int(x) * 7000 / dataset_total_size)
            )
        df_subset_scores["uuid"] = df_subset_scores.index.to_series().apply(
            lambda x: re.search(r"ID__([a-f0-9]+)__", x).group(1)
        )

        feats = []
        for feat_file in sorted(feature_counts_dir.glob("*.json")):  # (sorted: see the docstring)
            uuid = re.search(r"ID__([a-f0-9]+)__", feat_file.stem).group(1)
            df_feat = (
                pd.read_json(feat_file, typ="dictionary")
                .rename(index=uuid)
                .reset_index()
                .set_index("index")
                .transpose()
            )
            feats.append(df_feat)
        df_feats = pd.concat(feats).reset_index().rename(columns={"index": "uuid"})
        df_scores = df_category_scores.merge(df_subset_scores, on="uuid", how="left")
        overall_df = df_scores.merge(df_feats, on="uuid", how="left").dropna()

    elif experiments_file:
        raise NotImplementedError("the --experiments_file mode is not reproduced")

    else:
        overall_df = df_category_scores.merge(df_subset_scores, left_index=True, right_index=True)

    # Cleanup dataframe for easier viewing
    meta = ["model_type", "chat_template"]
    cols = meta + [col for col in overall_df.columns if col not in meta]
    overall_df = overall_df[cols]

    # Create labels based on the GPT-4 threshold score
    thresh = gpt4_threshold_score
    if thresh:
        logging.info(f"Creating labels in 'label' with GPT-4 threshold '{thresh}'")
        overall_df["label"] = (overall_df["Overall"] > thresh).astype(int)

    overall_df = overall_df.sort_values(
        by=["Overall"],
        ascending=False,
    )  # .drop(columns=["index"])
    if "index" in overall_df.columns:
        overall_df = overall_df.drop(columns=["index"])
    overall_df = overall_df[~overall_df.index.duplicated(keep="first")]
    return overall_df


def get_category_scores(df_subset: "pd.DataFrame") -> "pd.DataFrame":
    category_scores = {}
    for category, subsets in SUBSET_MAPPING.items():
        weights = {k: v for k, v in EXAMPLE_COUNTS.items() if k in subsets}
        category_scores[category] = (df_subset[subsets] * pd.Series(weights)).sum(axis=1) / sum(weights.values())
    df_category = pd.DataFrame(category_scores)
    df_category["Overall"] = df_category.mean(axis=1)
    return df_category


# ---- inputs ---------------------------------------------------------------------------------------
SUBSETS_SORTED = sorted(EXAMPLE_COUNTS)
ROWS = {  # rows of each subset in the filtered split (accuracies are k/rows)
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28,
    "mt-bench-med": 40, "mt-bench-hard": 37, "llmbar-natural": 100, "llmbar-adver-neighbor": 134,
    "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "refusals-dangerous": 100, "refusals-offensive": 100, "xstest-should-refuse": 154,
    "xstest-should-respond": 250, "donotanswer": 136, "math-prm": 447, "hep-cpp": 164, "hep-go": 164,
    "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}

SUBJECTS = [
    "Anthropology", "History", "Linguistics and language", "Philosophy", "Religion", "Economics",
    "Geography", "Political science", "Psychology", "Sociology", "Biology", "Chemistry",
    "Earth sciences", "Physics", "Space sciences", "Computer sciences", "Logic", "System science",
    "Agriculture", "Architecture and design", "Business", "Divinity", "Education",
    "Chemical engineering", "Civil engineering", "Electrical engineering",
    "Materials science and engineering", "Mechanical engineering",
    "Environmental studies and forestry", "Family and consumer science",
    "Human physical performance and recreation", "Journalism", "Media studies and communication",
    "Law", "Library and museum studies", "Medicine and health", "Military sciences", "Social work",
    "Transportation", "Culinary arts", "Literature", "Performing arts", "Visual arts", "Mathematics",
    "Public administration", "Others",
]


def all_features():
    """The 90 feature strings of src/feature_extractor.py::get_all_features(n_bins=3), file order."""
    feats = []
    bins = [(0.0, 0.33), (0.33, 0.67), (0.67, 1.0)]
    for name in ["bertscore", "bertscore_length", "cosine_sim", "entity_sim", "len_longer", "len_shorter",
                 "prompt_len", "rouge", "token_len_diff"]:
        for lo, hi in bins:
            feats.append(f"{name}::min_val={lo}|max_val={hi}")
    for s in SUBJECTS:
        feats.append(f"analyzer_closed_set::feature_name=subject_of_expertise|constraints={s}")
    feats.append("analyzer_closed_set::feature_name=languages|constraints=English")
    for v in ["general public", "basic domain knowledge", "expert domain knowledge"]:
        feats.append(f"analyzer_scalar::feature_name=expertise_level|value={v}")
    for v in ["no", "low", "moderate", "high"]:
        feats.append(f"analyzer_scalar::feature_name=open_endedness|value={v}")
    for v in ["safe", "low", "moderate", "high"]:
        feats.append(f"analyzer_scalar::feature_name=safety_concern|value={v}")
    for v in ["simple", "moderate", "complex"]:
        feats.append(f"analyzer_scalar::feature_name=complexity_of_intents|value={v}")
    feats.append("analyzer_open_set::feature_name=type_of_in_context_material|check_for_existence=1")
    feats.append("analyzer_open_set::feature_name=format_constraints|check_for_existence=1")
    assert len(feats) == 90, len(feats)
    return feats


def random_metrics(rng, chat_template="tulu", sorted_keys=False, ref_model=False):
    m = {"model": "/reward_model"}
    if ref_model:
        m["ref_model"] = "allenai/tulu-2-7b"
    m["model_type"] = "Seq. Classifier"
    m["chat_template"] = chat_template
    for s in SUBSETS_SORTED:
        m[s] = rng.randrange(0, ROWS[s] + 1) / ROWS[s]
    if sorted_keys:
        m = dict(sorted(m.items()))
    return m


def name_for(dataset, uuid, budget):
    return f"rm-eval-{dataset}-counts-tulu2_13b_rm_human_datamodel_counts_7000_ID__{uuid}__SWAPS_{budget}"


def write_scenario(name, experiments, features, options):
    d = Path(OUT) / name
    (d / "metrics").mkdir(parents=True)
    with open(d / "experiments.txt", "w") as f:
        for exp_name, _ in experiments:
            assert "\n" not in exp_name and "/" not in exp_name
            f.write(exp_name + "\n")
    for exp_name, metrics in experiments:
        with open(d / "metrics" / f"{exp_name}.json", "w") as f:
            json.dump(metrics, f)
    feature_dir = None
    if features is not None:
        feature_dir = d / "counts"
        feature_dir.mkdir()
        for stem, counts in features:
            with open(feature_dir / f"{stem}.json", "w") as f:
                json.dump(counts, f, indent=4)
    with open(d / "options.json", "w") as f:
        json.dump({"feature_counts_dir": "counts" if features is not None else None, **options}, f, indent=4)
        f.write("\n")
    # the reference reads back what was written (metrics round-trip through json like Beaker's)
    loaded = []
    for exp_name, _ in experiments:
        with open(d / "metrics" / f"{exp_name}.json") as f:
            loaded.append((exp_name, json.load(f)))
    df = fetch_evals_rewardbench(loaded, feature_counts_dir=feature_dir, **options)
    assert df["Overall"].dtype == object, df["Overall"].dtype  # so the sort is numpy's generic one
    df.to_csv(d / "expected.csv")
    print(f"{name}: {len(experiments)} experiments -> {len(df)} rows, {len(df.columns)} columns; dtypes: "
          + ", ".join(sorted({str(t) for t in df.dtypes})))


def scenario_counts():
    rng = random.Random(20240913)
    feats = ["bertscore::min_val=0.0|max_val=0.33", "bertscore::min_val=0.33|max_val=0.67",
             'analyzer_closed_set::feature_name=subject_of_expertise|constraints=Law, "civil"',
             "analyzer_scalar::feature_name=open_endedness|value=high",
             "analyzer_open_set::feature_name=format_constraints|check_for_existence=1"]
    exps, features = [], []
    tie_a, tie_b = random_metrics(rng), random_metrics(rng)
    for i in range(24):
        uuid = "%032x" % rng.getrandbits(128)
        budget = rng.randrange(1, 10160)
        if i < 5:
            metrics = dict(tie_a)
        elif i < 8:
            metrics = dict(tie_b)
        else:
            metrics = random_metrics(rng)
        if i == 8:
            metrics["hep-cpp"], metrics["hep-go"] = 1e-05, 5e-324
            metrics["alpacaeval-easy"] = 0.30000000000000004
        if i == 9:
            metrics["hep-rust"] = 1  # an int accuracy: written as "1"
        if i == 10:
            metrics["chat_template"] = None  # NaN -> dropped
        if i == 11:
            del metrics["mt-bench-med"]  # NaN -> counts 0 in Chat, then dropped
        if i == 12:  # same metrics as tie_a with equal-weight subsets swapped
            metrics = dict(tie_a)
            metrics["hep-cpp"], metrics["hep-go"] = tie_a["hep-go"], tie_a["hep-cpp"]
        name = name_for("helpsteer2", uuid, budget)
        exps.append((name, metrics))
        if i != 13:  # no feature file -> dropped, and the count columns turn float
            features.append((f"regressor_feats_ID__{uuid}__SWAPS_{budget}", {f: rng.randrange(0, 400) for f in feats}))
    exps.append(("rm-eval-helpsteer2-count-baseline-human-only", dict(tie_a)))  # no "ID": filtered out
    exps.append(("rm-eval-helpsteer2-count-baseline-gpt4-only", random_metrics(rng)))
    features.append(("regressor_feats_ID__%032x__SWAPS_17" % rng.getrandbits(128), {f: 1 for f in feats}))
    rng.shuffle(exps)
    write_scenario("counts", exps, features,
                   {"dataset_total_size": 10160, "gpt4_threshold_score": 0.6})


def scenario_counts_int():
    rng = random.Random(7)
    feats = all_features()
    exps, features = [], []
    shared = "%032x" % rng.getrandbits(128)
    for i, budget in enumerate(["0042", "7", "10159", "300", "300"]):
        uuid = shared if i in (3, 4) else "%032x" % rng.getrandbits(128)
        dataset = "multipref" if i != 4 else "multipref-rerun"
        exps.append((name_for(dataset, uuid, budget), random_metrics(rng, sorted_keys=True)))
        if i != 4:
            features.append((f"regressor_feats_ID__{uuid}__SWAPS_{budget}", {f: rng.randrange(0, 60) for f in feats}))
    write_scenario("counts_int", exps, features, {"dataset_total_size": None, "gpt4_threshold_score": 0.0})


def scenario_names():
    rng = random.Random(99)
    exps = []
    tie = random_metrics(rng, ref_model=True)
    for i in range(20):
        metrics = dict(tie) if i % 4 == 0 else random_metrics(rng, ref_model=True)
        if i == 3:
            metrics["chat_template"] = None
        if i == 5:
            del metrics["donotanswer"]
        if i == 6:
            metrics["ref_model"] = None
        name = f"rm-eval-baseline-run-{i:02d}" if i != 7 else "rm-eval-baseline, with a comma"
        exps.append((name, metrics))
    rng.shuffle(exps)
    write_scenario("names", exps, None, {"dataset_total_size": None, "gpt4_threshold_score": 0.5})


def check_errors():
    rng = random.Random(1)
    for bad in ["rm-eval-x-ID__abc__no-swaps", "rm-eval-x-ID__ABC__SWAPS_3"]:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                fetch_evals_rewardbench([(bad, random_metrics(rng))], feature_counts_dir=Path(tmp))
            except AttributeError as e:  # re.search(...) returned None
                print(f"error case {bad!r}: reference raises AttributeError ({e})")
            else:
                raise AssertionError(f"{bad} should fail")


def argsort_cases():
    rng = random.Random(5)
    cases = []
    for n in [1, 2, 3, 5, 15, 16, 17, 18, 19, 24, 33, 64, 100, 200]:
        for distinct in [1, 2, 4, 30]:
            pool = [rng.randrange(0, 1000) / 1000 for _ in range(distinct)]
            values = [rng.choice(pool) for _ in range(n)]
            if n > 3 and distinct == 4:
                values[rng.randrange(n)] = float("nan")
            arr = np.array(values, dtype=object)
            argsort = [int(i) for i in arr.argsort(kind="quicksort")]
            desc = [int(i) for i in pd.Series(values, dtype=object).sort_values(ascending=False).index]
            cases.append({"values": values, "argsort": argsort, "sort_desc": desc})
    # sorted, reversed and organ-pipe inputs (pivot choices differ from random ones)
    for n in [40, 130]:
        for values in [sorted(rng.randrange(0, 20) / 20 for _ in range(n)),
                       sorted((rng.randrange(0, 20) / 20 for _ in range(n)), reverse=True),
                       [min(i, n - i) / n for i in range(n)]]:
            arr = np.array(values, dtype=object)
            cases.append({"values": values, "argsort": [int(i) for i in arr.argsort(kind="quicksort")],
                          "sort_desc": [int(i) for i in pd.Series(values, dtype=object).sort_values(ascending=False).index]})
    with open(os.path.join(OUT, "argsort.json"), "w") as f:
        json.dump(cases, f)
        f.write("\n")
    print(f"argsort: {len(cases)} cases")


def main():
    logging.disable(logging.CRITICAL)
    pd.options.mode.chained_assignment = None  # the script's SettingWithCopyWarning, silenced
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    scenario_counts()
    scenario_counts_int()
    scenario_names()
    check_errors()
    argsort_cases()
    print(f"python {sys.version.split()[0]}, pandas {pd.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
