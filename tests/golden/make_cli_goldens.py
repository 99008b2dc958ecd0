#!/usr/bin/env python3
"""Goldens from the REAL `rewardbench` CLI (the published rewardbench 0.1.4 console script).

Regenerate (from anywhere, after scripts/setup):

    $HOME/.cache/herd/venv-rewardbench-0.1.4/bin/python tests/golden/make_cli_goldens.py

What is the real package and what is not:
- Every file under tests/golden/cli/<case>/results/ is written by the real CLI:
  `rewardbench.rewardbench:main` of rewardbench 0.1.4 (transformers 4.51.0), run in process by
  `rbref.run_cli([...])` with rbref's documented runtime-only CPU patches (no arithmetic touched).
  Classifiers run with the CLI's own `--not_quantized` (its quantized branch needs a GPU); the
  DPO run loads both models in fp32 on CPU (rbref drops `load_in_8bit`, the package already
  passes `torch_dtype=None` and `device_map="cpu"` there). `--save_all` is passed, so the CLI
  writes `{model}.json`, `{model}_outputs.jsonl` and `{model}_all.jsonl` for preference data and
  `{model}_outputs.jsonl` alone for instruction data.
- The inputs tests/golden/cli/data/*.jsonl are made here (not by the package): a SUBSET of the
  real rows of ../shared/data (rewardbench-llmbar.jsonl and rewardbench-hep.jsonl: the
  SHORT_ROWS shortest rows of each file by characters, to keep the goldens small and every
  sequence far below any truncation), converted to the Hugging Face message-list format the
  CLI's `--load_json` path needs (rewardbench/utils.py::load_and_process_dataset):
  - preference.jsonl: `prompt` (the row's prompt string), `chosen` / `rejected` as
    `[{"role": "user", ...}, {"role": "assistant", ...}]`, then `subset` and `id` (kept by the
    CLI as metadata columns);
  - instruction.jsonl: `messages` = [user prompt, assistant chosen] and `id` (no chosen /
    rejected: the CLI scores each conversation and reports no accuracy).
- The model paths are given relative to the repository root, as the parity test passes them to
  `worker score` (the CLI writes `args.model` into file names and JSON as given).

Cases (the fixture models of tests/golden/fixtures/models):
  llama (llama-gqa-rm, no chat template: --chat_template tulu), mistral (mistral-rm, its
  tokenizer's template), qwen2 (qwen2-rm, its template), dpo (llama-policy with --ref_model
  llama-ref, tulu), and instruction sets on llama-gqa-rm (FastChat) and mistral-rm (Jinja).
Checked by worker/tests/cli_parity.rs.
"""

import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import rbref  # noqa: E402  (applies the documented runtime patches)

SHARED = os.path.join(os.environ.get("HERD_SHARED", os.path.join(ROOT, "..", "shared")), "data")
OUT = os.path.join(HERE, "cli")
MODELS = "tests/golden/fixtures/models"
SHORT_ROWS = 10

CASES = [
    # name, data, model, extra CLI arguments
    ("llama", "preference", "llama-gqa-rm", ["--chat_template", "tulu"]),
    ("mistral", "preference", "mistral-rm", []),
    ("qwen2", "preference", "qwen2-rm", []),
    ("dpo", "preference", "llama-policy", ["--ref_model", f"{MODELS}/llama-ref", "--chat_template", "tulu"]),
    ("llama-instruction", "instruction", "llama-gqa-rm", ["--chat_template", "tulu"]),
    ("mistral-instruction", "instruction", "mistral-rm", []),
]


def shortest_rows(name):
    with open(os.path.join(SHARED, name)) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    size = lambda r: len(r["prompt"]) + len(r["chosen"]) + len(r["rejected"])  # noqa: E731
    # stable: ties keep file order; then back to file order
    picked = sorted(sorted(range(len(rows)), key=lambda i: size(rows[i]))[:SHORT_ROWS])
    return [rows[i] for i in picked]


def write_inputs(data_dir):
    rows = shortest_rows("rewardbench-llmbar.jsonl") + shortest_rows("rewardbench-hep.jsonl")
    os.makedirs(data_dir, exist_ok=True)
    turn = lambda role, content: {"role": role, "content": content}  # noqa: E731
    with open(os.path.join(data_dir, "preference.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps({
                "prompt": r["prompt"],
                "chosen": [turn("user", r["prompt"]), turn("assistant", r["chosen"])],
                "rejected": [turn("user", r["prompt"]), turn("assistant", r["rejected"])],
                "subset": r["subset"],
                "id": r["id"],
            }) + "\n")
    with open(os.path.join(data_dir, "instruction.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps({
                "messages": [turn("user", r["prompt"]), turn("assistant", r["chosen"])],
                "id": r["id"],
            }) + "\n")


def main():
    os.chdir(ROOT)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    data_dir = os.path.join(OUT, "data")
    write_inputs(data_dir)
    manifest = {"reference": rbref.REFERENCE, "cases": []}
    for name, data, model, extra in CASES:
        dataset = os.path.relpath(os.path.join(data_dir, f"{data}.jsonl"), ROOT)
        model_path = f"{MODELS}/{model}"
        with tempfile.TemporaryDirectory() as tmp:
            output_dir = os.path.join(tmp, "results") + "/"
            argv = ["--model", model_path, "--dataset", dataset, "--load_json", "--not_quantized",
                    "--torch_dtype", "float32", "--save_all", "--output_dir", output_dir, *extra]
            if "--ref_model" in extra:
                argv.remove("--not_quantized")  # a classifier-only flag; DPO ignores it anyway
            rbref.run_cli(argv)
            shutil.copytree(os.path.join(tmp, "results"), os.path.join(OUT, name, "results"))
        argv = ["OUTPUT_DIR/" if a == output_dir else a for a in argv]
        manifest["cases"].append({"name": name, "data": data, "dataset": dataset, "model": model_path,
                                  "extra": extra, "cli_argv": argv})
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
