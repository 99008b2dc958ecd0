#!/usr/bin/env python3
"""RewardBench 2 end to end: a tiny RB2 fixture, per-completion scores and run_v2.py's result files.

Regenerate (from the repository root, after scripts/setup):

    $HOME/.cache/herd/venv-rewardbench-0.1.4/bin/python tests/golden/make_rb2_scores_golden.py

What is real and what is transcribed:

- `scripts/run_v2.py` (allenai/reward-bench HEAD 05a9005) is not in the published package, so its
  `main()` is TRANSCRIBED below (`run_v2`), line for line for the classifier path it has (no DPO
  path exists there), with these arguments: `--model <fixture>`, `--chat_template` as each case
  says, `--torch_dtype float32`, `--batch_size 64`, `--max_length` as each case says; nothing
  uploaded (`save_to_hub(..., local_only=True)`, no Beaker `/output/metrics.json`).
- Everything run_v2.py imports from `rewardbench` is CALLED FOR REAL from the rewardbench==0.1.4
  wheel (identical at HEAD for these functions): `load_bon_dataset_v2` (unrolling, chat
  templates via `prepare_dialogue_from_tokenizer` / FastChat `prepare_dialogue`),
  `REWARD_MODEL_CONFIG["default_v2"]` (AutoModelForSequenceClassification + RewardBenchPipeline,
  tokenization with `truncation=True, max_length`, the double-BOS mask), `reroll_and_score_dataset`,
  `check_tokenizer_chat_template` and `save_to_hub` (the two JSON files, byte for byte).
- The Ties scorer is HEAD's `process_single_model`, which the 0.1.4 wheel predates: it is the
  transcription `head_ties` of tests/golden/make_rb2_golden.py.

The fixture (tests/golden/fixtures/rb2/rb2-tiny.jsonl) is built here from real rows of
../shared/data/rewardbench-llmbar.jsonl (LLMBar, MIT): every prompt and completion is LLMBar
text, but the six RewardBench 2 subset names, the extra rejected completions and the Ties
grouping are ARTIFICIAL: completions are BORROWED from other LLMBar rows (each row's
`additional_metadata.note` says which), so the "correct" labels only mean what the fixture says.
One row repeats its chosen completion among the rejected ones (a tie at the top: credit 1/2).

Outputs, per case under tests/golden/fixtures/rb2/:
- `<case>.json`: the settings, the reference versions and every completion's score
  (`scores[i][j]`: row i in file order, completion j chosen-then-rejected) and the subset scores;
- `<case>/results/eval-set/<model>.json` and `<case>/results/eval-set-scores/<model>.json`:
  what save_to_hub wrote (`./results/` relative to the run's working directory, where the model
  folder is named by its bare name, as `--model <name>` run from tests/golden/fixtures/models).
"""

import json
import logging
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import rbref  # noqa: E402,F401  (runtime-only CPU patches; must come before rewardbench)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from fastchat.conversation import get_conv_template  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from make_rb2_golden import head_ties  # noqa: E402
from rewardbench import (  # noqa: E402
    REWARD_MODEL_CONFIG,
    check_tokenizer_chat_template,
    load_bon_dataset_v2,
    reroll_and_score_dataset,
    save_to_hub,
)

ROOT = os.path.dirname(os.path.dirname(HERE))
MODELS = os.path.join(HERE, "fixtures", "models")
OUT = os.path.join(HERE, "fixtures", "rb2")
SHARED = os.environ.get("HERD_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
LLMBAR = os.path.join(SHARED, "data", "rewardbench-llmbar.jsonl")

CASES = [
    # (case, model, chat_template, max_length)
    ("llama-gqa-rm", "llama-gqa-rm", "tulu", 2048),
    ("qwen2-rm", "qwen2-rm", None, 2048),
    # sequences cut at 80 tokens: right truncation (run_v2 keeps the tokenizer's side) drops
    # the ends of the completions; run_rm.py's left truncation would drop the prompt instead
    ("llama-gqa-rm-trunc80", "llama-gqa-rm", "tulu", 80),
]


def llmbar_rows():
    with open(LLMBAR, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    # rows of 300-1000 characters: fast to score, yet longer than the truncation case's limit
    size = lambda r: len(r["prompt"]) + len(r["chosen"]) + len(r["rejected"])  # noqa: E731
    return sorted((r for r in rows if 300 <= size(r) <= 1000), key=lambda r: (size(r), r["id"]))


def build_fixture():
    src = llmbar_rows()
    take = iter(src)
    rows = []

    def borrowed(*others):
        return "completions borrowed from LLMBar ids " + ", ".join(str(o["id"]) for o in others)

    def bon(subset, rid):
        own, a = next(take), next(take)
        rejected = [own["rejected"], a["chosen"], a["rejected"]]
        return {
            "id": rid,
            "prompt": own["prompt"],
            "chosen": [own["chosen"]],
            "rejected": rejected,
            "num_correct": 1,
            "num_incorrect": 3,
            "total_completions": 4,
            "models": ["llmbar"] * 4,
            "subset": subset,
            "additional_metadata": {"note": f"prompt from LLMBar id {own['id']}; " + borrowed(own, a)},
        }

    for subset, n in [("Factuality", 2), ("Precise IF", 1), ("Math", 1), ("Safety", 1), ("Focus", 2)]:
        for _ in range(n):
            rows.append(bon(subset, str(len(rows))))
    # a tie at the top: the chosen completion again among the rejected ones
    tie = bon("Focus", str(len(rows)))
    tie["rejected"][1] = tie["chosen"][0]
    tie["additional_metadata"]["note"] += "; rejected[1] repeats chosen[0]"
    rows.append(tie)

    # Ties: per prompt id, a ref row (1 correct, 2 incorrect) and a tied row (3 correct, 2 incorrect)
    for pid in range(2):
        own, a, b = next(take), next(take), next(take)
        note = f"prompt from LLMBar id {own['id']}; " + borrowed(own, a, b)
        rows.append(
            {
                "id": f"ref:{pid}",
                "prompt": own["prompt"],
                "chosen": [own["chosen"]],
                "rejected": [own["rejected"], a["rejected"]],
                "num_correct": 1,
                "num_incorrect": 2,
                "total_completions": 3,
                "models": ["llmbar"] * 3,
                "subset": "Ties",
                "additional_metadata": {"note": note},
            }
        )
        rows.append(
            {
                "id": f"tied:{pid}",
                "prompt": own["prompt"],
                "chosen": [own["chosen"], a["chosen"], b["chosen"]],
                "rejected": [own["rejected"], b["rejected"]],
                "num_correct": 3,
                "num_incorrect": 2,
                "total_completions": 5,
                "models": ["llmbar"] * 5,
                "subset": "Ties",
                "additional_metadata": {"note": note},
            }
        )
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "rb2-tiny.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def run_v2(model, dataset_path, chat_template, max_length, batch_size=64, torch_dtype="float32"):
    """scripts/run_v2.py main() at 05a9005, transcribed (classifier path; no hub, no Beaker)."""
    logger = logging.getLogger("run_v2")
    conv = get_conv_template(chat_template) if chat_template is not None else None
    config = REWARD_MODEL_CONFIG[model] if model in REWARD_MODEL_CONFIG else REWARD_MODEL_CONFIG["default_v2"]
    quantized = config["quantized"]  # False for default_v2
    assert not quantized
    custom_dialogue = config["custom_dialogue"]
    model_type = config["model_type"]
    model_builder = config["model_builder"]
    pipeline_builder = config["pipeline_builder"]

    tokenizer = AutoTokenizer.from_pretrained(model)
    dataset, subsets, total_completions, num_correct = load_bon_dataset_v2(
        dataset=dataset_path,
        conv=conv,
        custom_dialogue_formatting=custom_dialogue,
        tokenizer=tokenizer,
        logger=logger,
    )
    ids = dataset["id"]
    dataset = dataset.remove_columns("id")

    reward_pipeline_kwargs = {
        "batch_size": batch_size,
        "truncation": True,
        "padding": True,
        "max_length": max_length,
        "function_to_apply": "none",
        "return_token_type_ids": False,
    }
    model_kwargs = {"device_map": "cpu", "torch_dtype": torch_dtype}
    rm = model_builder(model, **model_kwargs, trust_remote_code=False)
    reward_pipe = pipeline_builder("text-classification", model=rm, tokenizer=tokenizer)
    if reward_pipe.tokenizer.pad_token_id is None:
        reward_pipe.model.config.pad_token_id = reward_pipe.tokenizer.eos_token_id
        reward_pipe.tokenizer.pad_token_id = reward_pipe.tokenizer.eos_token_id
    if reward_pipe.model.config.pad_token_id is None:
        reward_pipe.model.config.pad_token_id = reward_pipe.tokenizer.pad_token_id
    if not check_tokenizer_chat_template(tokenizer):
        reward_pipe.tokenizer.add_eos_token = True

    from torch.utils.data.dataloader import default_collate

    def custom_collate_fn(batch):
        if isinstance(batch[0]["text"][0], dict):
            return batch
        return default_collate(batch)

    dataloader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, collate_fn=custom_collate_fn, shuffle=False, drop_last=False
    )
    scores = []
    for batch in dataloader:
        rewards = reward_pipe(batch["text"], **reward_pipeline_kwargs)
        if isinstance(rewards[0], dict):
            scores_batch = [result["score"] for result in rewards]
        else:
            scores_batch = rewards.float().cpu().numpy().tolist()
        scores.extend(scores_batch)

    out_dataset = dataset.add_column("subset", subsets)
    out_dataset = out_dataset.add_column("id", ids)
    out_dataset = out_dataset.add_column("scores", scores)
    out_dataset = reroll_and_score_dataset(out_dataset, total_completions, cols_to_combine=["text", "scores"])
    out_dataset = out_dataset.add_column("num_correct", num_correct)

    results_grouped = {}
    model_name = model
    results_grouped["model"] = model_name
    results_grouped["model_type"] = model_type
    chat_template = chat_template if not check_tokenizer_chat_template(tokenizer) else "tokenizer"
    results_grouped["chat_template"] = chat_template

    present_subsets = np.unique(subsets)
    for subset in present_subsets:
        subset_dataset = out_dataset.filter(lambda example: example["subset"] == subset)
        if subset.lower() == "ties":
            overall_score = head_ties(list(subset_dataset))["score"]
            # run_v2.py writes the Ties results back for rows whose subset == "ties" (lower
            # case), none in the real data ("Ties"), then round-trips through pandas
            ties_indices = [i for i, s in enumerate(out_dataset["subset"]) if s == "ties"]
            assert not ties_indices
            out_dataset = Dataset.from_pandas(out_dataset.to_pandas())
            results_grouped[subset] = overall_score
        else:
            n_correct = sum(subset_dataset["results"])
            num_total = len(subset_dataset["results"])
            results_grouped[subset] = n_correct / num_total

    save_to_hub(results_grouped, model_name, "eval-set/", False, local_only=True, best_of_n=True)
    scores_dict = out_dataset.to_dict()
    scores_dict["model"] = model_name
    scores_dict["model_type"] = model_type
    scores_dict["chat_template"] = chat_template
    save_to_hub(scores_dict, model_name, "eval-set-scores/", False, local_only=True, best_of_n=True)
    return results_grouped, out_dataset


def main():
    dataset = build_fixture()
    logging.basicConfig(level=logging.WARNING)
    for case, model, chat_template, max_length in CASES:
        work = tempfile.mkdtemp(prefix="rb2-golden-")
        cwd = os.getcwd()
        try:
            # `--model <name>` from a folder holding the model: run_v2 names files by args.model
            os.symlink(os.path.join(MODELS, model), os.path.join(work, model))
            os.chdir(work)
            results, out = run_v2(model, dataset, chat_template, max_length)
            target = os.path.join(OUT, case, "results")
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(os.path.join(work, "results"), target)
        finally:
            os.chdir(cwd)
            shutil.rmtree(work)
        golden = {
            "case": case,
            "reference": rbref.REFERENCE + "; run_v2.py main() transcribed, Ties: HEAD process_single_model",
            "model": model,
            "chat_template": chat_template,
            "max_length": max_length,
            "dataset": os.path.relpath(dataset, ROOT),
            "ids": list(out["id"]),
            "scores": [[s[0] for s in row] for row in list(out["scores"])],
            "results": {k: v for k, v in results.items() if k not in ("model", "model_type", "chat_template")},
        }
        with open(os.path.join(OUT, f"{case}.json"), "w") as f:
            json.dump(golden, f, indent=1)
            f.write("\n")
        print(case, json.dumps(golden["results"]))


if __name__ == "__main__":
    main()
