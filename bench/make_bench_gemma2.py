#!/usr/bin/env python3
"""Create the random-weight Gemma 2 benchmark reward model (not committed), beside make_bench_model.py's Llama.

A Gemma2ForSequenceClassification (num_labels=1) with random, seeded weights, the size of the Llama
benchmark model so the two compare:

    hidden 512, 4 layers (sliding, full, sliding, full), 8 heads, 4 kv heads, head_dim 64,
    intermediate 1376, vocab 32000, query_pre_attn_scalar 64, attn_logit_softcapping 50,
    sliding_window 256 (most LLMBar rows exceed it), pad_token_id 2 (= eos), fp32 safetensors.

With --no-softcap the same weights are written with attn_logit_softcapping null, which herd then
runs through SDPA (and which transformers' sdpa computes anyway): the soft cap's cost on equal shapes.

The real Llama-2 tokenizer is copied from shared/data/tokenizers/llama2 (FastChat tulu + EOS).

Usage: make_bench_gemma2.py [--out bench/out/bench-gemma2-rm] [--no-softcap] [--force]
"""

import argparse
import shutil
import sys
from pathlib import Path

import torch
from transformers import Gemma2Config, Gemma2ForSequenceClassification

REPO = Path(__file__).resolve().parent.parent
TOKENIZER = (REPO / ".." / "shared" / "data" / "tokenizers" / "llama2").resolve()
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "bench-gemma2-rm")
    ap.add_argument("--no-softcap", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    if (args.out / "model.safetensors").exists() and not args.force:
        print(f"{args.out} exists (use --force to rebuild)", file=sys.stderr)
        return 0
    config = Gemma2Config(
        vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, head_dim=64, query_pre_attn_scalar=64,
        attn_logit_softcapping=None if args.no_softcap else 50.0, sliding_window=256,
        max_position_embeddings=4096, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        num_labels=1,
    )
    torch.manual_seed(args.seed)
    model = Gemma2ForSequenceClassification(config).eval()
    with torch.no_grad():  # the default init leaves norms at 0 and tiny weights: spread the scores
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(0.0, 0.1)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    for f in TOKENIZER_FILES:
        shutil.copyfile(TOKENIZER / f, args.out / f)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
