#!/usr/bin/env python3
"""Score a RewardBench-style dataset with Hugging Face transformers, for the herd benchmark.

Two modes, same model, same texts, same thread count:

* default ("reference"): RewardBench's scripts/run_rm.py classifier path, reproduced faithfully
  (shared/reference/rewardbench.md sections 2.3-2.4):
    - text = FastChat "tulu" template (the tokenizer has no chat template):
      "<|user|>\\n{prompt}\\n<|assistant|>\\n{response}\\n"
    - tokenizer.add_eos_token = True, truncation_side = "left", max_length 2048,
      pad token = eos when the tokenizer has none (model.config.pad_token_id likewise),
      padding side = the tokenizer's default (left for LlamaTokenizerFast)
    - rows in dataset order, batches of --batch-size (8), one pipeline call on the chosen texts and
      one on the rejected texts per batch, padding=True (to the longest in the batch)
    - RewardBenchPipeline.__call__: tokenizer(..., truncation, max_length, padding, return_tensors="pt"),
      mask a duplicated leading BOS, model(**inputs).logits under torch.no_grad(), no sigmoid
    - model: AutoModelForSequenceClassification.from_pretrained(torch_dtype=float32), default
      attention implementation (sdpa), .eval()
    - win = chosen > rejected (strict)
* --optimized: what a careful transformers user would do on the same model and texts: all 2N
  sequences tokenized in one call, sorted by length, packed into token-budget batches
  (rows x padded length <= --batch-tokens, at most --max-batch-rows rows), right padding,
  torch.inference_mode(), results restored to dataset order.

Both modes time (a) model + tokenizer load and (b) format + tokenize + score separately (with a
split of (b) into tokenization and forward time), print one JSON object on stdout (also written to
--json) and write per-example scores as JSONL rows
{"id", "subset", "results", "scores_chosen": [x], "scores_rejected": [y]} (same layout as
`worker score -o`).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402


def tulu(prompt: str, response: str) -> str:
    """FastChat 0.2.36 "tulu" (ADD_NEW_LINE_SINGLE, empty system, sep "\\n")."""
    return "<|user|>\n" + prompt + "\n<|assistant|>\n" + response + "\n"


def check_fastchat() -> str:
    """Use fschat's own template when it is installed, to prove the literal above matches it."""
    try:
        from fastchat.conversation import get_conv_template
    except Exception:  # fschat not installed: the literal is the documented template
        return "literal"
    conv = get_conv_template("tulu")
    conv.messages = [[conv.roles[0], "P\nq"], [conv.roles[1], " R "]]
    assert conv.get_prompt() == tulu("P\nq", " R "), repr(conv.get_prompt())
    return "fschat"


def load_rows(path: Path, limit: int | None):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
                if limit is not None and len(rows) >= limit:
                    break
    return rows


class RewardBenchPipeline:
    """rewardbench/models/pipeline.py::RewardBenchPipeline (PR #138 + the duplicated-BOS fix, PR #166)."""

    def __init__(self, task, model, tokenizer):
        self.task = task
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenize_s = 0.0
        self.forward_s = 0.0
        self.tokens = 0
        self.padded_tokens = 0

    def __call__(self, samples, **kwargs):
        truncation = kwargs.get("truncation", True)
        padding = kwargs.get("padding", True)
        max_length = kwargs.get("max_length", 2048)
        t0 = time.perf_counter()
        inputs = self.tokenizer(
            samples,
            truncation=truncation,
            max_length=max_length,
            padding=padding,
            return_tensors="pt",
        ).to(self.model.device)
        # if tokenizer.bos_token exists, check for a double BOS at the start of each row and mask the
        # first one (upstream code, vectorised as in rewardbench/models/pipeline.py)
        if self.tokenizer.bos_token:
            bos_token_id = self.tokenizer.bos_token_id
            input_ids = inputs["input_ids"]
            attention_mask = inputs["attention_mask"]
            seq_starts = attention_mask.argmax(dim=1)
            seq_second = torch.clamp(seq_starts + 1, max=input_ids.size(1) - 1)
            rows = torch.arange(input_ids.size(0))
            double_bos_mask = (input_ids[rows, seq_starts] == bos_token_id) & (
                input_ids[rows, seq_second] == bos_token_id
            )
            if double_bos_mask.any():
                attention_mask[rows[double_bos_mask], seq_starts[double_bos_mask]] = 0
        t1 = time.perf_counter()
        with torch.no_grad():
            outputs = self.model(**inputs)
        logits = outputs.logits
        t2 = time.perf_counter()
        self.tokenize_s += t1 - t0
        self.forward_s += t2 - t1
        self.tokens += int(inputs["attention_mask"].sum())
        self.padded_tokens += inputs["input_ids"].numel()
        return logits


def load(model_path: Path, tokenizer_path: Path, args):
    """run_rm.py's setup (classifier, default REWARD_MODEL_CONFIG entry, not quantized, fp32)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    # run_rm.py: tokenizer.truncation_side = "left" unless custom_dialogue
    tokenizer.truncation_side = "left"
    # load_eval_dataset: tokenizer chat template wins over --chat_template
    if tokenizer.chat_template is not None:
        raise SystemExit("the benchmark model is meant to have no chat template (FastChat tulu path)")
    # run_rm.py (PR #94): FastChat path appends EOS
    tokenizer.add_eos_token = True
    # run_rm.py: torch_dtype=float32 (renamed dtype= in transformers 4.56); --dtype bfloat16 for the
    # GPU comparisons of bench/gpu/run
    model_kwargs = {"dtype": getattr(torch, args.dtype)}
    if args.attn_implementation:
        model_kwargs["attn_implementation"] = args.attn_implementation
    # run_rm.py passes device_map="cpu" without CUDA (needs accelerate); the default load is on the CPU too
    model = AutoModelForSequenceClassification.from_pretrained(model_path, **model_kwargs)
    # run_rm.py: device_map={"": current_device} on a GPU (--device cuda), the CPU otherwise
    model = model.to(args.device)
    pipe = RewardBenchPipeline("text-classification", model=model, tokenizer=tokenizer)
    # run_rm.py: padding
    if pipe.tokenizer.pad_token_id is None:
        pipe.model.config.pad_token_id = pipe.tokenizer.eos_token_id
        pipe.tokenizer.pad_token_id = pipe.tokenizer.eos_token_id
    if pipe.model.config.pad_token_id is None:
        pipe.model.config.pad_token_id = pipe.tokenizer.pad_token_id
    # run_rm.py/dpo: dropout off (Llama attention_dropout is 0 already)
    for module in pipe.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return pipe


def run_reference(pipe: RewardBenchPipeline, rows, args):
    texts_chosen = [tulu(r["prompt"], r["chosen"]) for r in rows]
    texts_rejected = [tulu(r["prompt"], r["rejected"]) for r in rows]
    kwargs = {
        "batch_size": args.batch_size,
        "truncation": True,
        "padding": True,
        "max_length": args.max_length,
        "function_to_apply": "none",
        "return_token_type_ids": False,
    }
    scores_chosen, scores_rejected = [], []
    for start in range(0, len(rows), args.batch_size):  # DataLoader(shuffle=False, drop_last=False)
        rewards_chosen = pipe(texts_chosen[start:start + args.batch_size], **kwargs)
        rewards_rejected = pipe(texts_rejected[start:start + args.batch_size], **kwargs)
        scores_chosen.extend(rewards_chosen.float().cpu().numpy().tolist())
        scores_rejected.extend(rewards_rejected.float().cpu().numpy().tolist())
    return scores_chosen, scores_rejected, {
        "batches": 2 * ((len(rows) + args.batch_size - 1) // args.batch_size),
        "tokenize_s": pipe.tokenize_s,
        "forward_s": pipe.forward_s,
        "tokens": pipe.tokens,
        "padded_tokens": pipe.padded_tokens,
        "padding_side": pipe.tokenizer.padding_side,
    }


def run_optimized(pipe: RewardBenchPipeline, rows, args):
    tokenizer, model = pipe.tokenizer, pipe.model
    n = len(rows)
    t0 = time.perf_counter()
    texts = [tulu(r["prompt"], r["chosen"]) for r in rows] + [tulu(r["prompt"], r["rejected"]) for r in rows]
    ids = tokenizer(texts, truncation=True, max_length=args.max_length, padding=False)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    batches = []
    current = []
    for i in order:  # longest first: the first sequence of a batch sets its padded length
        if current and (
            (len(current) + 1) * len(ids[current[0]]) > args.batch_tokens or len(current) >= args.max_batch_rows
        ):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    pad_id = tokenizer.pad_token_id
    bos_id = tokenizer.bos_token_id if tokenizer.bos_token else None
    tokenize_s = time.perf_counter() - t0
    forward_s = 0.0
    tokens = padded = 0
    scores = [None] * len(ids)
    for batch in batches:
        t1 = time.perf_counter()
        length = len(ids[batch[0]])
        input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, i in enumerate(batch):  # right padding
            seq = ids[i]
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, : len(seq)] = 1
        if bos_id is not None and length > 1:  # duplicated leading BOS, as in RewardBenchPipeline
            dup = (input_ids[:, 0] == bos_id) & (input_ids[:, 1] == bos_id)
            attention_mask[dup, 0] = 0
        t2 = time.perf_counter()
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device)).logits
        out = logits.float().cpu().numpy().tolist()
        t3 = time.perf_counter()
        for row, i in enumerate(batch):
            scores[i] = out[row]
        tokenize_s += t2 - t1
        forward_s += t3 - t2
        tokens += int(attention_mask.sum())
        padded += input_ids.numel()
    return scores[:n], scores[n:], {
        "batches": len(batches),
        "batch_tokens": args.batch_tokens,
        "max_batch_rows": args.max_batch_rows,
        "tokenize_s": tokenize_s,
        "forward_s": forward_s,
        "tokens": tokens,
        "padded_tokens": padded,
        "padding_side": "right",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, default=None, help="default: the model folder")
    ap.add_argument("--dataset", type=Path, required=True, help="JSONL: prompt, chosen, rejected, subset, id")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=None, help="only the first N rows")
    ap.add_argument("--optimized", action="store_true")
    ap.add_argument("--batch-size", type=int, default=8, help="reference mode: pairs per batch")
    ap.add_argument("--batch-tokens", type=int, default=16384, help="optimized mode: rows x padded length")
    ap.add_argument("--max-batch-rows", type=int, default=256, help="optimized mode: rows per batch")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--attn-implementation", default=None, help="default: transformers' choice (sdpa)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the model and every batch go there)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights and compute")
    ap.add_argument("--scores", type=Path, default=None, help="per-example scores (JSONL)")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary JSON here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    template_check = check_fastchat()
    rows = load_rows(args.dataset, args.rows)

    t0 = time.perf_counter()
    pipe = load(args.model, args.tokenizer or args.model, args)
    load_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    if args.optimized:
        chosen, rejected, info = run_optimized(pipe, rows, args)
    else:
        chosen, rejected, info = run_reference(pipe, rows, args)
    score_s = time.perf_counter() - t1

    results = [1 if c > r else 0 for c, r in zip(chosen, rejected)]  # list comparison, as run_rm.py
    if args.scores:
        args.scores.parent.mkdir(parents=True, exist_ok=True)
        with open(args.scores, "w", encoding="utf-8") as f:
            for row, win, c, r in zip(rows, results, chosen, rejected):
                f.write(json.dumps({"id": row.get("id"), "subset": row.get("subset"), "results": win,
                                    "scores_chosen": c, "scores_rejected": r}) + "\n")

    n = len(rows)
    summary = {
        "mode": "optimized" if args.optimized else "reference",
        "model": str(args.model),
        "dataset": str(args.dataset),
        "pairs": n,
        "sequences": 2 * n,
        "threads": torch.get_num_threads(),
        "batch_size": None if args.optimized else args.batch_size,
        "attn_implementation": pipe.model.config._attn_implementation,
        "dtype": str(pipe.model.dtype).replace("torch.", ""),
        "device": str(pipe.model.device),
        "template_check": template_check,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "import_s": round(t0 - T_START, 3),
        "load_s": round(load_s, 3),
        "score_s": round(score_s, 3),
        "load_plus_score_s": round(load_s + score_s, 3),
        "pairs_per_s": round(n / score_s, 3),
        "sequences_per_s": round(2 * n / score_s, 3),
        "tokens_per_s": round(info["tokens"] / score_s, 1),
        "padding_efficiency": round(info["tokens"] / max(info["padded_tokens"], 1), 4),
        "accuracy": round(sum(results) / max(n, 1), 6),
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in info.items()},
    }
    text = json.dumps(summary)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
