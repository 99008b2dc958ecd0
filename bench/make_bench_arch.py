#!/usr/bin/env python3
"""Create the random-weight Gemma 2, Qwen3 or Mixtral benchmark reward model (not committed), beside
make_bench_model.py's Llama, the size of the Llama benchmark model so they compare.

--arch gemma2 (default): a Gemma2ForSequenceClassification (num_labels=1) with random, seeded weights:

    hidden 512, 4 layers (sliding, full, sliding, full), 8 heads, 4 kv heads, head_dim 64,
    intermediate 1376, vocab 32000, query_pre_attn_scalar 64, attn_logit_softcapping 50,
    sliding_window 256 (most LLMBar rows exceed it), pad_token_id 2 (= eos), fp32 safetensors.

--arch qwen3: a Qwen3ForSequenceClassification of the same width (hidden 512, 4 layers, 8 heads,
4 kv heads, head_dim 64, intermediate 1376, vocab 32000, per-head q/k RMSNorm), pad_token_id 2.

--arch mixtral: a MixtralForSequenceClassification of the same attention (hidden 512, 4 layers, 8 heads,
4 kv heads, head_dim 64, vocab 32000) whose MLP is Mixtral's sparse mixture of 8 experts of width 1376, each
token routed to 2 (the Mixtral-8x7B routing; 4x the Llama model's MLP parameters, 2x its MLP compute),
pad_token_id 2.

With --no-softcap (gemma2) the same weights are written with attn_logit_softcapping null, which herd then
runs through SDPA (and which transformers' sdpa computes anyway): the soft cap's cost on equal shapes.

The real Llama-2 tokenizer is copied from shared/data/tokenizers/llama2 (FastChat tulu + EOS).

Usage: make_bench_arch.py [--arch gemma2|qwen3|mixtral] [--out DIR] [--no-softcap] [--force]
(default --out: bench/out/bench-<arch>-rm)
"""

import argparse
import shutil
import sys
from pathlib import Path

import torch
from transformers import (
    Gemma2Config,
    Gemma2ForSequenceClassification,
    MixtralConfig,
    MixtralForSequenceClassification,
    Qwen3Config,
    Qwen3ForSequenceClassification,
)

REPO = Path(__file__).resolve().parent.parent
TOKENIZER = (REPO / ".." / "shared" / "data" / "tokenizers" / "llama2").resolve()
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["gemma2", "qwen3", "mixtral"], default="gemma2")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-softcap", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    args.out = args.out or REPO / "bench" / "out" / f"bench-{args.arch}-rm"
    if (args.out / "model.safetensors").exists() and not args.force:
        print(f"{args.out} exists (use --force to rebuild)", file=sys.stderr)
        return 0
    if args.arch == "qwen3":
        config = Qwen3Config(
            vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
            num_attention_heads=8, num_key_value_heads=4, head_dim=64, max_position_embeddings=4096,
            rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=2, num_labels=1,
        )
        model_class = Qwen3ForSequenceClassification
    elif args.arch == "mixtral":
        config = MixtralConfig(
            vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
            num_attention_heads=8, num_key_value_heads=4, head_dim=64, num_local_experts=8,
            num_experts_per_tok=2, sliding_window=None, max_position_embeddings=4096, rms_norm_eps=1e-5,
            bos_token_id=1, eos_token_id=2, pad_token_id=2, num_labels=1,
        )
        model_class = MixtralForSequenceClassification
    else:
        model_class = Gemma2ForSequenceClassification
        config = Gemma2Config(
            vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
            num_attention_heads=8, num_key_value_heads=4, head_dim=64, query_pre_attn_scalar=64,
            attn_logit_softcapping=None if args.no_softcap else 50.0, sliding_window=256,
            max_position_embeddings=4096, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2,
            pad_token_id=2, num_labels=1,
        )
    torch.manual_seed(args.seed)
    model = model_class(config).eval()
    # the default init leaves norms at their identity and tiny weights: spread the scores (Gemma's
    # norms scale by 1 + w, Qwen3's and Mixtral's by w)
    centre = 0.0 if args.arch == "gemma2" else 1.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(centre, 0.1)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    for f in TOKENIZER_FILES:
        shutil.copyfile(TOKENIZER / f, args.out / f)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
