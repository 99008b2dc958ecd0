#!/usr/bin/env python3
"""Create the random-weight benchmark reward model (not committed).

A LlamaForSequenceClassification (num_labels=1) with random, seeded weights, big enough that the
transformer forward dominates Python overhead on a small CPU, small enough that scoring a few hundred
RewardBench pairs takes minutes on 2 cores:

    hidden 512, 4 layers, 8 heads, 4 kv heads (GQA), intermediate 1376, vocab 32000,
    RoPE theta 10000, max positions 4096, pad_token_id 2 (= eos), fp32 safetensors.

The real Llama-2 tokenizer is copied from shared/data/tokenizers/llama2. It has no chat template,
so RewardBench (and `worker score`) format with the FastChat "tulu" template and append EOS.

Usage: make_bench_model.py [--out bench/out/bench-llama-rm] [--tokenizer DIR] [--seed 0] [--force]

bench/gpu/run makes its GPU-sized models with the same script: --shape 8b (Llama-3-8B: hidden 4096,
32 layers, 32/8 heads, intermediate 14336, vocab 128256, rope theta 500000) or --shape 13b
(Llama-2-13B: hidden 5120, 40 layers, 40 heads, intermediate 13824, vocab 32000), --dtype bfloat16,
--device cuda (weights initialised on the GPU, seconds instead of minutes). The Llama-2 tokenizer
only produces ids below 32000, which every vocabulary here holds.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "out" / "bench-llama-rm"
DEFAULT_TOKENIZER = (REPO / ".." / "shared" / "data" / "tokenizers" / "llama2").resolve()
# real models' shapes (the size flags they set)
SHAPES = {
    "8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128256,
               rope_theta=500000.0),
    "13b": dict(hidden=5120, layers=40, heads=40, kv_heads=40, intermediate=13824, vocab=32000,
                rope_theta=10000.0),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=1376)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None,
                    help="a real model's shape (overrides the size flags)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--device", default="cpu", help="where the random weights are drawn (cpu, cuda)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing model folder")
    args = ap.parse_args()
    for key, value in SHAPES.get(args.shape, {}).items():
        setattr(args, key, value)

    out: Path = args.out
    if (out / "model.safetensors").exists() and not args.force:
        print(f"{out} exists (use --force to rebuild)", file=sys.stderr)
        return 0

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        hidden_act="silu",
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_theta=args.rope_theta,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        num_labels=1,
        torch_dtype=args.dtype,
        architectures=["LlamaForSequenceClassification"],
    )
    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    # drawn directly in the target dtype on the target device (a 13B model in fp32 on the host
    # would take 52 GB and minutes)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(args.device):
        model = LlamaForSequenceClassification(config).eval()
    torch.set_default_dtype(default_dtype)

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        src = args.tokenizer / name
        if src.exists():
            shutil.copyfile(src, out / name)
        elif name != "tokenizer.model":
            raise SystemExit(f"missing tokenizer file {src}")

    n_params = sum(p.numel() for p in model.parameters())
    info = {
        "path": str(out),
        "params": n_params,
        "non_embedding_params": n_params - model.model.embed_tokens.weight.numel(),
        "seed": args.seed,
        "config": {k: getattr(config, k) for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size", "pad_token_id")},
    }
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
