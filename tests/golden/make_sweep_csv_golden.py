#!/usr/bin/env python3
"""Golden sweep CSVs for herd-rewardbench's `sweep_csv` and `coord csv`, written by the real script.

Regenerate (from the repository root, after scripts/setup, which installs pandas==2.2.3):

    $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_sweep_csv_golden.py

What is real: allenai/hybrid-preferences' scripts/fetch_evals_rewardbench.py at commit 7a17ed3
(its counts mode unchanged since 23cec2b, 2024-09-23), read from a git clone or mirror of the
repository (HYBRID_PREFERENCES_GIT, default ../hybrid-preferences beside this checkout, as
../shared is) and checked against the
sha256 pinned below, is run unmodified: its `main()` with its own argparse flags, DataFrame code,
EXAMPLE_COUNTS (xstest 250/154, the pre-2024-09-10 RewardBench values), glob of the feature
folder and `to_csv`, under pandas 2.2.3 / numpy.
What is the stand-in: the `beaker` module (injected through sys.modules; there is no Beaker at
test time). Its `workspace.experiments(match=...)` lists the scenario's experiment names in a given
order, keeping those that contain the --experiment_prefix text, every one finalized, and its
`experiment.metrics(exp)` is json.load of `metrics/<name>.json`, the metrics.json Beaker serves.
Two listings per scenario: experiments.txt's (Beaker's listing order, shuffled: ties in Overall
depend on it) for the library test, and every file of metrics/ in file-name order, which is what
`coord csv --metrics DIR --experiment-prefix rm-eval-` reads.
The scenarios have one feature file per uuid and the same keys in every file, so the script's
file-system glob order does not change its output.

Writes common/rewardbench/tests/golden/sweep/<scenario>/ for each scenario:
  experiments.txt   experiment names in listing order, one per line
  metrics/<name>.json   each experiment's metrics.json (json.dump, as run_rm.py writes it)
  counts/regressor_feats_ID__<uuid>__SWAPS_<n>.json   feature counts (json.dump(indent=4), as
                    scripts/get_count_feats.py writes them); counts mode only
  options.json      {"feature_counts_dir": "counts" | null, "experiment_prefix": "rm-eval-",
                     "dataset_total_size": int | null, "gpt4_threshold_score": float | null}
  expected.csv      the script's --output_path CSV, experiments listed as in experiments.txt
  expected-from-dir.csv   the same, listing every metrics/*.json file in file-name order
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
              a ref_model key, a name with a comma, 20 experiments with ties, label at 0.5, and two
              more metrics files (not in experiments.txt): "dpo-eval-baseline-run-00", outside
              the "rm-eval-" text, and "dpo-rm-eval-", which contains it (listed from the folder).
Error cases (checked here to raise, and by the Rust test to be errors): a name with "ID" but no
"SWAPS_<n>", and one with "ID" but no "ID__<hex>__".
"""

import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import sys
import subprocess
import tempfile
import types
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "common", "rewardbench", "tests", "golden", "sweep")
PREFIX = "rm-eval-"  # the script's default --experiment_prefix

# ---- the real script, with a stand-in `beaker` module ---------------------------------------------
REPO_COMMIT = "7a17ed3015138bb8294bc45b4ba3e417236eeff3"  # allenai/hybrid-preferences HEAD
SCRIPT = "scripts/fetch_evals_rewardbench.py"
SCRIPT_SHA256 = "be54c10fa47ccb434521d99e60de02cad737e8f4522d78c7d930d31f94e0f9d5"
DEFAULT_MIRROR = os.path.join(os.path.dirname(ROOT), "hybrid-preferences")

SOURCE = ""  # the script's text, read in main()

def script_source() -> str:
    """The pinned script's text from a git checkout or mirror of allenai/hybrid-preferences."""
    repo = os.environ.get("HYBRID_PREFERENCES_GIT", DEFAULT_MIRROR)
    git_dir = os.path.join(repo, ".git") if os.path.isdir(os.path.join(repo, ".git")) else repo
    try:
        text = subprocess.run(["git", "--git-dir", git_dir, "show", f"{REPO_COMMIT}:{SCRIPT}"],
                              check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"cannot read {SCRIPT} at {REPO_COMMIT} from {repo} (set HYBRID_PREFERENCES_GIT to a "
                 f"clone of allenai/hybrid-preferences): {e}")
    digest = hashlib.sha256(text).hexdigest()
    if digest != SCRIPT_SHA256:
        sys.exit(f"{SCRIPT} at {REPO_COMMIT}: sha256 {digest}, expected {SCRIPT_SHA256}")
    return text.decode()


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def stand_in_beaker(metrics_dir: Path, listing: "list[str]") -> types.ModuleType:
    """A `beaker` module serving local metrics files.

    `Beaker.from_env(...).workspace.experiments(workspace, match=text)` lists `listing` (the
    experiment names, in the order Beaker would list them) keeping the names that contain `match`
    (beaker-py documents `match` as "only include experiments matching the text"; a substring test
    here), every experiment finalized (`jobs[0].status.finalized`); `.experiment.metrics(exp)` is
    `json.load` of `metrics_dir/<name>.json`, the file Beaker serves as the run's metrics.json.
    """
    mod = types.ModuleType("beaker")

    class Experiment:
        def __init__(self, name):
            self.name = name
            self.jobs = [_Obj(status=_Obj(finalized="2024-09-23T00:00:00Z"))]

    class Beaker:
        def __init__(self):
            self.account = _Obj(whoami=lambda: _Obj(name="stand-in", email="stand-in@localhost"))
            self.workspace = _Obj(experiments=self._experiments)
            self.experiment = _Obj(metrics=self._metrics)

        @classmethod
        def from_env(cls, default_workspace=None):
            return cls()

        @staticmethod
        def _experiments(workspace, match=None):
            return [Experiment(n) for n in listing if match is None or match in n]

        @staticmethod
        def _metrics(experiment):
            with open(metrics_dir / f"{experiment.name}.json") as f:
                return json.load(f)

    mod.Beaker, mod.Experiment = Beaker, Experiment
    return mod


def run_reference(metrics_dir: Path, listing, output: Path, prefix="rm-eval-", feature_counts_dir=None,
                  gpt4_threshold_score=None, dataset_total_size=None):
    """Runs the pinned script's `main()` (its own argparse, DataFrame code and `to_csv`)."""
    argv = [SCRIPT, "--output_path", str(output), "--experiment_prefix", prefix]
    if feature_counts_dir is not None:
        argv += ["--feature_counts_dir", str(feature_counts_dir)]
    if gpt4_threshold_score is not None:
        argv += ["--gpt4_threshold_score", repr(gpt4_threshold_score)]
    if dataset_total_size is not None:
        argv += ["--dataset_total_size", str(dataset_total_size)]
    saved_argv, saved_beaker = sys.argv, sys.modules.get("beaker")
    sys.argv = argv
    sys.modules["beaker"] = stand_in_beaker(metrics_dir, listing)
    try:
        code = compile(SOURCE, f"{REPO_COMMIT[:7]}:{SCRIPT}", "exec")
        namespace = {"__name__": "__main__", "__file__": SCRIPT}
        # its logging goes to stdout, tqdm's bar to stderr
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            exec(code, namespace)
        return namespace
    finally:
        sys.argv = saved_argv
        if saved_beaker is None:
            del sys.modules["beaker"]
        else:
            sys.modules["beaker"] = saved_beaker


# ---- inputs ---------------------------------------------------------------------------------------
ROWS = {  # rows of each subset in the filtered split (accuracies are k/rows)
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28,
    "mt-bench-med": 40, "mt-bench-hard": 37, "llmbar-natural": 100, "llmbar-adver-neighbor": 134,
    "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "refusals-dangerous": 100, "refusals-offensive": 100, "xstest-should-refuse": 154,
    "xstest-should-respond": 250, "donotanswer": 136, "math-prm": 447, "hep-cpp": 164, "hep-go": 164,
    "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}
SUBSETS_SORTED = sorted(ROWS)

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


def write_scenario(name, experiments, features, options, extra_metrics=()):
    d = Path(OUT) / name
    (d / "metrics").mkdir(parents=True)
    with open(d / "experiments.txt", "w") as f:
        for exp_name, _ in experiments:
            assert "\n" not in exp_name and "/" not in exp_name
            f.write(exp_name + "\n")
    for exp_name, metrics in list(experiments) + list(extra_metrics):
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
        json.dump({"feature_counts_dir": "counts" if features is not None else None,
                   "experiment_prefix": PREFIX, **options}, f, indent=4)
        f.write("\n")
    # Beaker's listing order (experiments.txt): what the library test feeds sweep_csv
    listing = [exp_name for exp_name, _ in experiments]
    run_reference(d / "metrics", listing, d / "expected.csv", prefix=PREFIX,
                  feature_counts_dir=feature_dir, **options)
    # a folder of metrics files (`coord csv --metrics`): every file, in file-name order
    files = sorted(p.name[: -len(".json")] for p in (d / "metrics").glob("*.json"))
    run_reference(d / "metrics", files, d / "expected-from-dir.csv", prefix=PREFIX,
                  feature_counts_dir=feature_dir, **options)
    with open(d / "expected.csv") as f:
        rows = sum(1 for _ in f) - 1
    print(f"{name}: {len(experiments)} experiments (+{len(extra_metrics)} other metrics files) -> "
          f"{rows} rows")


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
    # from the folder, the first is left out by --experiment_prefix, the second matches its text
    others = [("dpo-eval-baseline-run-00", random_metrics(rng, ref_model=True)),
              ("dpo-rm-eval-", random_metrics(rng))]
    write_scenario("names", exps, None, {"dataset_total_size": None, "gpt4_threshold_score": 0.5},
                   extra_metrics=others)


def check_errors():
    rng = random.Random(1)
    for bad in ["rm-eval-x-ID__abc__no-swaps", "rm-eval-x-ID__ABC__SWAPS_3"]:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "metrics").mkdir()
            (tmp / "counts").mkdir()
            with open(tmp / "metrics" / f"{bad}.json", "w") as f:
                json.dump(random_metrics(rng), f)
            try:
                run_reference(tmp / "metrics", [bad], tmp / "out.csv", feature_counts_dir=tmp / "counts")
            except AttributeError as e:  # re.search(...) returned None
                print(f"error case {bad!r}: the script raises AttributeError ({e})")
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
    global SOURCE
    SOURCE = script_source()
    warnings.simplefilter("ignore")  # the script's SettingWithCopyWarning
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
