#!/usr/bin/env python3
"""Golden result files for herd-rewardbench's `files` module (RewardBench-compatible outputs).

Regenerate (from the repository root, after scripts/setup):

    $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_results_golden.py

Writes common/rewardbench/tests/golden/results/ (checked byte for byte by common/rewardbench/tests/results.rs):

- inputs.json: what both sides start from (model names, accuracies, per-row scores, ...).
- run_rm/: what rewardbench's scripts/run_rm.py + rewardbench/utils.py::save_to_hub write for those
  inputs (transcribed from allenai/reward-bench at 82bd441, 2024-09-12, unchanged at HEAD 05a9005):
  - results/eval-set/{model}.json  = json.dumps(results_grouped, indent=4, sort_keys=True), no newline
  - results/eval-set-scores/{model}.json = json.dumps(scores_dict, indent=4, sort_keys=True) where
    scores_dict = out_dataset.to_dict() (columns text_chosen, text_rejected, results, subset, id,
    scores_chosen, scores_rejected; scores as [[x]]) plus model, model_type, chat_template
  - metrics.json = json.dump(results_grouped, f) (insertion order: model, model_type, chat_template,
    then the subsets in np.unique order; default separators; Beaker's /output/metrics.json)
  `out_dataset.to_dict()` is built here as the plain column dict it returns (datasets is not needed:
  to_dict() gives {column: [python values]}, and sort_keys makes the column order irrelevant).
- run_dpo/: the same for scripts/run_dpo.py at HEAD 05a9005 (ref_model key always written, "DPO Ref.
  Free", "_ref_free" save_modifier, chat_template "tokenizer" in eval-set/ and args.chat_template in
  eval-set-scores/, no id column in eval-set-scores/ (run_dpo.py removes it before to_dict())).
- cli/: what the `rewardbench` CLI (rewardbench/rewardbench.py at HEAD) writes:
  {output_dir}{model}.json = json.dump(final_results) and os.path.join(output_dir,
  f"{model}_outputs.jsonl") via save_jsonl (scores flattened by unwrap_if_list_of_lists).
- float_repr.json: [[hex bits, repr(x), str(np.float64(x))], ...] for tricky and random doubles.

Everything is plain CPython `json`, so the golden bytes are exactly what the reference writes.
"""

import json
import math
import os
import random
import shutil
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "common", "rewardbench", "tests", "golden", "results")


def bits(x: float) -> str:
    return struct.pack(">d", x).hex()


def from_bits(h: str) -> float:
    return struct.unpack(">d", bytes.fromhex(h))[0]


# --- save_to_hub (rewardbench/utils.py), local part ----------------------------------------------
def save_to_hub(results_dict, model_name, target_path, results_root, save_metrics_for_beaker, metrics_path):
    scores_path = f"{results_root}/{target_path}{model_name}.json"
    if save_metrics_for_beaker:
        os.makedirs(os.path.dirname(metrics_path), exist_ok=True)
        with open(metrics_path, "w+") as f:
            json.dump(results_dict, f)
    dirname = os.path.dirname(scores_path)
    os.makedirs(dirname, exist_ok=True)
    if os.path.isfile(scores_path):
        os.remove(scores_path)
    with open(scores_path, "w") as f:
        if isinstance(results_dict, dict):
            f.write(json.dumps(results_dict, indent=4, sort_keys=True))
        else:
            for record in results_dict:
                f.write(json.dumps(record, indent=4, sort_keys=True) + "\n")


# --- tricky values --------------------------------------------------------------------------------
TRICKY_FLOATS = [
    0.0, -0.0, 1.0, 0.1, 0.2, 0.30000000000000004, 1e-05, 0.0001, 1e-07, 2.5e20, 1e16, 1e15,
    9999999999999998.0, 1234567890123456.0, 12345678901234567.0, 123456789.123, 5e-324,
    2.2250738585072014e-308, 1.7976931348623157e308, 1 / 3, 2 / 3, 1 / 7, 0.9999999999999999,
    123 / 447, 446 / 447, 239 / 250, 0.5, -1.5, -2.5e-20, 100.0, 1e22, 1e23, 4.35, 0.015625,
    float(np.float32(0.1)), float(np.float32(-3.4028234663852886e38)), float(np.float32(1e-45)),
    float(np.float16(65504.0)), 6.103515625e-05, 0.6826171875, -7.25, 3.0517578125e-05,
]


def float_repr_cases():
    rng = random.Random(1234)
    cases = list(TRICKY_FLOATS)
    for _ in range(400):  # random bit patterns (finite)
        while True:
            x = from_bits("%016x" % rng.getrandbits(64))
            if math.isfinite(x):
                break
        cases.append(x)
    for _ in range(300):  # "nice" decimals and ratios, where digit-choice bugs show
        kind = rng.randrange(4)
        if kind == 0:
            cases.append(rng.randrange(0, 10**rng.randrange(1, 18)) / 10 ** rng.randrange(0, 25))
        elif kind == 1:
            cases.append(rng.randrange(0, 3000) / rng.randrange(1, 3000))
        elif kind == 2:
            cases.append(float(np.float32(rng.uniform(-50, 50))))
        else:
            cases.append(rng.choice([1, -1]) * 10.0 ** rng.randrange(-30, 30) * rng.randrange(1, 10))
    # float32 / float16 logits widened to double (what run_rm.py stores): their exact expansions are
    # short, so the shortest repr often ties between two candidates (Python takes the even one)
    nrng = np.random.default_rng(7)
    cases += [float(v) for v in (nrng.standard_normal(250) * 20).astype(np.float32)]
    cases += [float(v) for v in (nrng.standard_normal(100) * 20).astype(np.float16)]
    cases += [21.716323852539062, 0.10000000149011612, 9.5, 0.5000000000000001]
    for e in range(-8, 24):  # the fixed/exponent switch points
        cases.append(10.0**e)
        cases.append(1.5 * 10.0**e)
        cases.append(math.nextafter(10.0**e, 0.0))
    out = []
    for x in cases:
        r, s = repr(x), str(np.float64(x))
        assert r == s, (r, s)  # numpy's float64 -> str (what pandas to_csv writes) is Python's repr
        out.append([bits(x), r])
    arr = np.array(cases, dtype=np.float64).astype(str)
    assert [str(a) for a in arr] == [o[1] for o in out]
    return out


NASTY_STRINGS = [
    "plain",
    'quote " and backslash \\ and slash /',
    "newline\nreturn\rtab\tbell\x07 nul\x00 esc\x1b del\x7f",
    "accents: café, naïve, Ünïcödé",
    "cjk: 日本語の文章",
    "emoji: 😀🤖 (astral, surrogate pairs)",
    "\u2028\u2029 separators, \ufeff bom",
    "",
]


def make_inputs():
    subsets = [
        "alpacaeval-easy", "alpacaeval-hard", "alpacaeval-length", "donotanswer", "hep-cpp",
        "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust", "llmbar-adver-GPTInst",
        "llmbar-adver-GPTOut", "llmbar-adver-manual", "llmbar-adver-neighbor", "llmbar-natural",
        "math-prm", "mt-bench-easy", "mt-bench-hard", "mt-bench-med", "refusals-dangerous",
        "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
    ]
    accs = [0.1, 1e-05, 0.30000000000000004, 1.0, 0.0, 2 / 3, 1 / 7, 0.9999999999999999, 123 / 447,
            446 / 447, 239 / 250, 0.5, 5e-324, 0.015625, 0.7052631578947368, 0.5894736842105263,
            0.8235294117647058, 0.6280487804878049, 0.6341463414634146, 0.391304347826087, 1e-07,
            0.0001, 0.25]
    accuracies = dict(zip(subsets, accs))
    # rows for the per-example scores (eval-set-scores and the CLI outputs)
    score_pairs = [
        (1e-05, 0.1), (2.5e20, -2.5e20), (-0.0, 0.0), (0.6826171875, 0.6826171875),
        (float(np.float32(0.1)), float(np.float32(0.2))), (1e16, 1e15), (float("nan"), 1.0),
        (float("inf"), float("-inf")), (-7.25, 3.0517578125e-05), (123456789.123, 5e-324),
    ]
    rows = []
    for i, (c, r) in enumerate(score_pairs):
        rows.append({
            "id": [30, 7, 1000000007, 0, 12, 5, 6, 99, 3, 4][i],
            "subset": subsets[i % len(subsets)],
            "text_chosen": "<|user|>\n" + NASTY_STRINGS[i % len(NASTY_STRINGS)] + "\n<|assistant|>\nyes\n",
            "text_rejected": "<|user|>\n" + NASTY_STRINGS[(i + 3) % len(NASTY_STRINGS)] + "\n<|assistant|>\nno\n",
            "score_chosen": c,
            "score_rejected": r,
            # strict win on the python lists [c] > [r] (nan/inf rows follow python here)
            "result": 1 if [c] > [r] else 0,
            "prompt": "<|user|>\n" + NASTY_STRINGS[i % len(NASTY_STRINGS)] + "\n",
        })
    return {
        "rm": {
            "model": "org/RM-v1",
            "model_type": "Seq. Classifier",
            "chat_template": "tülu \"q\" \\ 😀\n",
            "scores_chat_template": "tulu",
            "accuracies": accuracies,
        },
        "rm_tokenizer_template": {
            "model": "/abs/path/rm",
            "model_type": "Seq. Classifier",
            "chat_template": "tokenizer",
            "scores_chat_template": None,
            "accuracies": {"anthropic_hhh": 0.5, "shp": 1 / 3, "summarize": 0.1},
        },
        "dpo": {
            "model": "org/dpo-model",
            "ref_model": None,
            "model_type": "DPO Ref. Free",
            # run_dpo.py: `args.chat_template if not hasattr(tokenizer, "chat_template") else
            # "tokenizer"`; every transformers tokenizer has the attribute, so "tokenizer"
            "chat_template": "tokenizer",
            # eval-set-scores: `scores_dict["chat_template"] = args.chat_template`
            "scores_chat_template": "tulu",
            "accuracies": {"alpacaeval-easy": 0.75, "hep-go": 1e-05},
        },
        "rows": rows,
        "cli": {
            "model": "org/cli-model",
            "ref_model": None,
            "tokenizer": "org/cli-model",
            "chat_template": None,
            "output_dir": "results/",
        },
    }


def write_run_rm(inputs, out_dir):
    for key in ("rm", "rm_tokenizer_template"):
        spec = inputs[key]
        results_grouped = {"model": spec["model"], "model_type": spec["model_type"],
                           "chat_template": spec["chat_template"]}
        for subset in np.unique(list(spec["accuracies"])):
            results_grouped[str(subset)] = spec["accuracies"][str(subset)]
        save_to_hub(results_grouped, spec["model"], "eval-set/", f"{out_dir}/{key}/results", True,
                    f"{out_dir}/{key}/metrics.json")
        rows = inputs["rows"]
        scores_dict = {  # out_dataset.to_dict(), in the column order run_rm.py builds
            "text_chosen": [r["text_chosen"] for r in rows],
            "text_rejected": [r["text_rejected"] for r in rows],
            "results": [r["result"] for r in rows],
            "subset": [r["subset"] for r in rows],
            "id": [r["id"] for r in rows],
            "scores_chosen": [[r["score_chosen"]] for r in rows],
            "scores_rejected": [[r["score_rejected"]] for r in rows],
        }
        scores_dict["model"] = spec["model"]
        scores_dict["model_type"] = spec["model_type"]
        scores_dict["chat_template"] = spec["scores_chat_template"]
        save_to_hub(scores_dict, spec["model"], "eval-set-scores/", f"{out_dir}/{key}/results", False, None)


def write_run_dpo(inputs, out_dir):
    spec = inputs["dpo"]
    results_grouped = {"model": spec["model"], "ref_model": spec["ref_model"], "model_type": spec["model_type"],
                       "chat_template": spec["chat_template"]}
    for subset in np.unique(list(spec["accuracies"])):
        results_grouped[str(subset)] = spec["accuracies"][str(subset)]
    save_to_hub(results_grouped, spec["model"] + "_ref_free", "eval-set/", f"{out_dir}/dpo/results", True,
                f"{out_dir}/dpo/metrics.json")
    rows = inputs["rows"]
    # run_dpo.py: keep_columns text_chosen, text_rejected, id, prompt, then
    # `dataset = dataset.remove_columns("id")` before out_dataset.to_dict(): no id column; scalar scores
    scores_dict = {
        "text_chosen": [r["text_chosen"] for r in rows],
        "text_rejected": [r["text_rejected"] for r in rows],
        "prompt": [r["prompt"] for r in rows],
        "results": [r["result"] for r in rows],
        "subset": [r["subset"] for r in rows],
        "scores_chosen": [r["score_chosen"] for r in rows],
        "scores_rejected": [r["score_rejected"] for r in rows],
    }
    scores_dict["model"] = spec["model"]
    scores_dict["model_type"] = "DPO"
    scores_dict["chat_template"] = spec["scores_chat_template"]
    save_to_hub(scores_dict, spec["model"] + "_ref_free", "eval-set-scores/", f"{out_dir}/dpo/results", False, None)


def save_jsonl(save_filename, table):  # rewardbench/rewardbench.py
    dirname = os.path.dirname(save_filename)
    if dirname:
        os.makedirs(dirname, exist_ok=True)
    with open(save_filename, "w") as outfile:
        for i in range(len(next(iter(table.values())))):
            json.dump({key: table[key][i] for key in table}, outfile)
            outfile.write("\n")


def write_cli(inputs, out_dir):
    spec = inputs["cli"]
    rows = inputs["rows"]
    cwd = os.getcwd()
    os.makedirs(f"{out_dir}/cli", exist_ok=True)
    os.chdir(f"{out_dir}/cli")
    try:
        def unwrap_if_list_of_lists(data):
            if isinstance(data, list):
                if isinstance(data[0], list):
                    return [item for sublist in data for item in sublist]
            return data

        results = [r["result"] for r in rows]
        scores_chosen = [[r["score_chosen"]] for r in rows]
        scores_rejected = [[r["score_rejected"]] for r in rows]
        combined_data = {
            "prompt": [r["prompt"] for r in rows],
            "results": unwrap_if_list_of_lists(results),
        }
        combined_data["scores_chosen"] = unwrap_if_list_of_lists(scores_chosen)
        combined_data["scores_rejected"] = unwrap_if_list_of_lists(scores_rejected)
        combined_data["text_chosen"] = [r["text_chosen"] for r in rows]
        combined_data["text_rejected"] = [r["text_rejected"] for r in rows]
        # metadata columns of the core set after load_eval_dataset(return_extra_data=True)
        combined_data["subset"] = [r["subset"] for r in rows]
        combined_data["id"] = [r["id"] for r in rows]
        save_jsonl(os.path.join(spec["output_dir"], f"{spec['model']}_outputs.jsonl"), combined_data)

        accuracy = sum(results) / len(results)
        results_grouped = {}
        subsets = [r["subset"] for r in rows]
        for subset in np.unique(subsets):
            sel = [res for res, s in zip(results, subsets) if s == subset]
            results_grouped[str(subset)] = sum(sel) / len(sel)
        output_path = spec["output_dir"] + spec["model"] + ".json"
        os.makedirs(os.path.dirname(output_path), exist_ok=True)
        final_results = {
            "accuracy": accuracy,
            "num_prompts": len(results),
            "model": spec["model"],
            "ref_model": spec["ref_model"],
            "tokenizer": spec["tokenizer"],
            "chat_template": spec["chat_template"],
            "extra_results": results_grouped,
        }
        with open(output_path, "w") as f:
            json.dump(final_results, f)
    finally:
        os.chdir(cwd)


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    inputs = make_inputs()
    with open(os.path.join(OUT, "inputs.json"), "w") as f:
        json.dump(inputs, f, indent=1)
        f.write("\n")
    write_run_rm(inputs, os.path.join(OUT, "run_rm"))
    write_run_dpo(inputs, os.path.join(OUT, "run_rm"))
    write_cli(inputs, OUT)
    with open(os.path.join(OUT, "float_repr.json"), "w") as f:
        json.dump(float_repr_cases(), f, indent=0)
        f.write("\n")
    n = sum(len(files) for _, _, files in os.walk(OUT))
    print(f"wrote {n} files under {os.path.relpath(OUT, ROOT)} (python {sys.version.split()[0]}, numpy {np.__version__})")


if __name__ == "__main__":
    main()
