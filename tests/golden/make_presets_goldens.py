#!/usr/bin/env python3
"""Goldens for the presets that reproduce hybrid-preferences' 2024 counts runs.

Reference: Hugging Face transformers 4.43.1 (the version of the counts runs' conversion image,
evals/convert.Dockerfile, and of RewardBench's pooling then) on torch 2.11.0 (CPU, fp32), in
~/.cache/herd/venv-transformers-4.43.1 (scripts/setup builds it). The script refuses another
transformers version. What is the reference's own code and what is transcribed:

  real code   transformers 4.43.1: AutoTokenizer (LlamaTokenizerFast converted from the slow
              SentencePiece tokenizer, as the counts runs loaded the converter's folder),
              AutoModelForSequenceClassification / LlamaForSequenceClassification.forward (the
              pooling `argmax(input_ids == pad_token_id) - 1 % L`);
              FastChat 0.2.36 `get_conv_template("tulu")` (the template);
              rewardbench 0.1.4 `RewardBenchPipeline.__call__` (rewardbench/models/pipeline.py,
              loaded from the reference environment ~/.cache/herd/venv-rewardbench-0.1.4; it only
              imports torch), with its `.to("cuda")` sent to the CPU for the call.
  transcribed run_rm.py's set-up around the pipeline (pad = EOS on tokenizer and model.config
              when the tokenizer has none, `add_eos_token = True` without a chat template,
              left truncation, batches of 8 in dataset order with chosen and rejected texts in
              separate calls) and rewardbench/utils.py `prepare_dialogue`'s single-turn path
              (three lines around the FastChat template); `legacy_index` (where 4.43 read each
              row, recomputed from the pipeline's inputs with the expression of
              modeling_llama.py, so the Rust unit of the rule can be checked without a model).

Outputs (tests/golden/presets/):

  counts-provenance.json  the token ids the counts runs scored for 22 real rows (the first 2 of
                          each LLMBar and HEP subset in ../shared/data): the tokenizer folder
                          EasyLM's converter writes (the Llama-2 tokenizer.model with
                          convert_easylm_to_hf.py's tokenizer_config.json: no chat template, no
                          pad token), FastChat tulu, EOS appended, pad = EOS (id 2).
  legacy-pooling.json     the fixture reward model tests/golden/fixtures/models/llama-gqa-rm
                          (fp32) scored as RewardBench did on transformers 4.43.1: the same rows,
                          batches of 8, max length 2048 and 64 (truncated rows).

Regenerate (from the repository root):
    PYTHONPATH=$HOME/.cache/herd/pylib-spm \\
        $HOME/.cache/herd/venv-transformers-4.43.1/bin/python tests/golden/make_presets_goldens.py
"""

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

EXPECTED_TRANSFORMERS = "4.43.1"
BATCH = 8  # run_rm.py --batch_size 8 (the counts runs' Beaker command)

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("HERD_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
LLAMA2 = DATA / "tokenizers" / "llama2"
MODEL = ROOT / "tests/golden/fixtures/models/llama-gqa-rm"
OUT = ROOT / "tests/golden/presets"
REF_PIPELINE = (
    Path.home()
    / ".cache/herd/venv-rewardbench-0.1.4/lib/python3.11/site-packages/rewardbench/models/pipeline.py"
)

# convert_easylm_to_hf.py write_tokenizer (hamishivi/EasyLM bc241782): what sat beside
# tokenizer.model in the folder RewardBench was given
EASYLM_TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "model_max_length": 2048,
    "pad_token": None,
    "sp_model_kwargs": {},
    "tokenizer_class": "LlamaTokenizer",
    "clean_up_tokenization_spaces": False,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
}
EASYLM_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def dump_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def load_examples():
    """The first 2 rows of each subset of the LLMBar and HEP files, in file order."""
    rows = []
    for fname in ("rewardbench-llmbar.jsonl", "rewardbench-hep.jsonl"):
        per_subset = {}
        with open(DATA / fname, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                per_subset.setdefault(r["subset"], []).append(r)
        for rs in per_subset.values():
            for r in rs[:2]:
                rows.append({k: r[k] for k in ("id", "subset", "prompt", "chosen", "rejected")})
    assert len(rows) == 22, len(rows)
    return rows


def tulu_texts(example):
    """prepare_dialogue's single-turn path with FastChat's tulu template."""
    from fastchat.conversation import get_conv_template

    conv = get_conv_template("tulu")
    out = {}
    for side in ("chosen", "rejected"):
        conv.messages = [[conv.roles[0], example["prompt"]], [conv.roles[1], example[side]]]
        out[side] = conv.get_prompt()
    return out


def reference_pipeline_class():
    spec = importlib.util.spec_from_file_location("rb_pipeline", REF_PIPELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RewardBenchPipeline


def on_cpu(pipe, samples, **kwargs):
    """RewardBenchPipeline.__call__ with its `.to("cuda")` sent to the model's device."""
    original = transformers.BatchEncoding.to

    def to(encoding, target, *args, **kw):
        return original(encoding, pipe.model.device if target == "cuda" else target, *args, **kw)

    transformers.BatchEncoding.to = to
    try:
        return pipe(samples, return_inputs=True, **kwargs)
    finally:
        transformers.BatchEncoding.to = original


def setup_tokenizer(tokenizer):
    """run_rm.py around the pipeline: left truncation, pad = EOS when none, EOS appended."""
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = tokenizer.eos_token_id
    if tokenizer.chat_template is None:
        tokenizer.add_eos_token = True
    return tokenizer


def counts_provenance(examples):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copyfile(LLAMA2 / "tokenizer.model", folder / "tokenizer.model")
        dump_json(folder / "tokenizer_config.json", EASYLM_TOKENIZER_CONFIG)
        dump_json(folder / "special_tokens_map.json", EASYLM_SPECIAL_TOKENS)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(tokenizer).__name__ == "LlamaTokenizerFast", type(tokenizer)
    assert tokenizer.chat_template is None and tokenizer.pad_token is None
    setup_tokenizer(tokenizer)
    assert tokenizer.padding_side == "left"
    rows = []
    for ex in examples:
        texts = tulu_texts(ex)
        row = dict(ex)
        for side in ("chosen", "rejected"):
            row[f"text_{side}"] = texts[side]
            row[f"ids_{side}"] = tokenizer(texts[side], truncation=True, max_length=2048)["input_ids"]
            assert row[f"ids_{side}"][-1] == tokenizer.eos_token_id
        rows.append(row)
    return {
        "reference": f"transformers {transformers.__version__}, fastchat tulu; the tokenizer folder "
        "convert_easylm_to_hf.py writes (Llama-2 tokenizer.model, no chat template, no pad token)",
        "tokenizer": "llama2",
        "chat_template": "tulu",
        "max_length": 2048,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "examples": rows,
    }


def legacy_case(pipe, examples, max_length):
    """RewardBench's loop: consecutive batches of 8, chosen then rejected, each padded left."""
    tokenizer = pipe.tokenizer
    pad = pipe.model.config.pad_token_id
    scores = {"chosen": [], "rejected": []}
    index = {"chosen": [], "rejected": []}
    for start in range(0, len(examples), BATCH):
        batch = examples[start:start + BATCH]
        for side in ("chosen", "rejected"):
            texts = [tulu_texts(ex)[side] for ex in batch]
            logits, inputs = on_cpu(pipe, texts, max_length=max_length, truncation=True, padding=True)
            scores[side].extend(logits.float().cpu().numpy().tolist())
            ids = inputs["input_ids"]
            # modeling_llama.py 4.43.1, LlamaForSequenceClassification.forward
            pooled = (torch.eq(ids, pad).int().argmax(-1) - 1) % ids.shape[-1]
            left_pads = (inputs["attention_mask"] == 0).int().argmin(-1)
            for row, (p, lp) in enumerate(zip(pooled.tolist(), left_pads.tolist())):
                # no masked BOS with this tokenizer: the left padding is the only offset
                assert inputs["attention_mask"][row].sum().item() == ids.shape[-1] - lp
                index[side].append(p - lp)
    return {
        "max_length": max_length,
        "scores_chosen": scores["chosen"],
        "scores_rejected": scores["rejected"],
        "legacy_index_chosen": index["chosen"],
        "legacy_index_rejected": index["rejected"],
    }


def legacy_pooling(examples):
    torch.manual_seed(0)
    tokenizer = setup_tokenizer(AutoTokenizer.from_pretrained(MODEL))
    model = AutoModelForSequenceClassification.from_pretrained(MODEL, torch_dtype=torch.float32)
    # run_rm.py: model.config.pad_token_id follows the tokenizer's (EOS) when unset
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    assert model.config.pad_token_id == tokenizer.eos_token_id == 2
    pipe = reference_pipeline_class()("text-classification", model, tokenizer)
    rows = [dict(ex) for ex in examples]
    return {
        "reference": f"transformers {transformers.__version__} LlamaForSequenceClassification, "
        f"torch {torch.__version__} (CPU, fp32), rewardbench 0.1.4 RewardBenchPipeline, "
        "batches of 8 in dataset order, chosen and rejected apart",
        "model": MODEL.name,
        "chat_template": "tulu",
        "batch_size": BATCH,
        "pad_token_id": model.config.pad_token_id,
        "examples": rows,
        "cases": [legacy_case(pipe, examples, n) for n in (2048, 64)],
    }


def main():
    if transformers.__version__ != EXPECTED_TRANSFORMERS:
        sys.exit(
            f"transformers {transformers.__version__}: run this with transformers "
            f"{EXPECTED_TRANSFORMERS} (~/.cache/herd/venv-transformers-4.43.1, scripts/setup)"
        )
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    examples = load_examples()
    dump_json(OUT / "counts-provenance.json", counts_provenance(examples))
    print(f"wrote {OUT / 'counts-provenance.json'}")
    dump_json(OUT / "legacy-pooling.json", legacy_pooling(examples))
    print(f"wrote {OUT / 'legacy-pooling.json'}")


if __name__ == "__main__":
    main()
