#!/usr/bin/env python3
"""Golden fixtures for herd's Gemma 2 backbone: tiny random-weight Gemma2 models + transformers outputs.

Reference: Hugging Face transformers 4.57.6 on torch 2.11.0 (CPU), the venv
~/.cache/herd/venv-torch-2.11.0; every number below is computed by transformers' own
modeling_gemma2.py (nothing transcribed). The RewardBench steps (formatting, tokenization,
pipeline, DPO tokenization and log-prob sums) are make_fixtures.py's, imported from it.

Attention implementation: "eager". In transformers 4.57.6 only eager (and flash_attention_2, not
on CPU) apply Gemma 2's attention logit soft-capping; the default "sdpa" silently drops it. The
golden is eager, the semantics of the model; the "sdpa" scores of the same rows are recorded for
information only ("sdpa_without_softcap": how far transformers' default drifts on these models).

What it makes (under tests/golden/fixtures/gemma2/, which this script deletes and rewrites):

  models/gemma2-rm/      Gemma2ForSequenceClassification, num_labels 1, hidden 24 (sqrt(24) rounds in
                         bf16: the normalizer's rounding shows), 3 layers (sliding, full, sliding: the
                         Gemma2Config default), 4 heads / 2 kv heads, head_dim 8, query_pre_attn_scalar
                         12, attn_logit_softcapping 4 (small enough that the cap bites on random
                         weights), sliding_window 24 (real rows are hundreds of tokens long).
  models/gemma2-policy/  Gemma2ForCausalLM, tied embeddings, final_logit_softcapping 5, hidden 20, otherwise
                         as above: a DPO policy (the reference model is make_fixtures.py's llama-ref).
  gemma2-rm.json         classifier golden (keys as make_fixtures.py's classifier goldens).
  gemma2-dpo.json        DPO golden (keys as make_fixtures.py's llama-dpo.json).

No tokenizer is copied: both use the Llama-2 tokenizer in ../shared/data/tokenizers/llama2 (no chat
template: RewardBench's FastChat "tulu" path with add_eos_token), and the Rust test passes it as
the request's tokenizer. Rows: make_fixtures.load_examples (22 real pairs of ../shared/data).

Weights are saved in bfloat16; goldens re-load the folder in float32, batch size 1, no padding,
single thread, deterministic; "padded_batch_scores_*" are RewardBench's padded batches of 8, and
"bf16"/"bf16_bound" follow make_fixtures.py's rule.

Regenerate (from the repository root):
    $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_gemma2_goldens.py
"""

import shutil
import sys
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma2ForSequenceClassification,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (seeds, determinism, RewardBench steps)

OUT = mf.OUT / "gemma2"
MODELS = OUT / "models"
ATTN = "eager"
MAX_LENGTH = 2048


def gemma2_config(hidden, **extra):
    return Gemma2Config(
        vocab_size=32000, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=12,
        attn_logit_softcapping=4.0, sliding_window=24, max_position_embeddings=4096, rms_norm_eps=1e-6,
        rope_theta=10000.0, hidden_activation="gelu_pytorch_tanh", bos_token_id=1, eos_token_id=2,
        pad_token_id=2, attention_dropout=0.0, **extra,
    )


def randomize_(model, seed):
    """Seeded random parameters (fp32). Gemma's norms scale by 1 + w, so w is drawn around 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                v = 0.1 * n
            elif "embed_tokens" in name:
                v = 0.5 * n
            elif name == "score.weight":
                v = 0.3 * n
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                v = 0.3 * n
            elif name.endswith(".weight") and p.dim() == 2:
                v = 0.15 * n
            else:
                raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(v)


def save(model, name, seed):
    randomize_(model, seed)
    d = MODELS / name
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    return d


def load_rm(model_dir, dtype, attn=ATTN):
    """make_fixtures.load_rm with the shared tokenizer and an explicit attention implementation."""
    tokenizer = AutoTokenizer.from_pretrained(mf.TOK_LLAMA2)
    tokenizer.truncation_side = "left"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn)
    assert model.config._attn_implementation == attn
    model.eval()
    if tokenizer.pad_token_id is None:
        model.config.pad_token_id = tokenizer.eos_token_id
        tokenizer.pad_token_id = tokenizer.eos_token_id
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    assert tokenizer.chat_template is None
    tokenizer.add_eos_token = True
    return tokenizer, model


def classifier_case(examples):
    d = MODELS / "gemma2-rm"
    tok, model = load_rm(d, torch.float32)
    out = []
    for ex in examples:
        _, tc, tr, tmpl = mf.format_example(ex, tok)
        assert tmpl == "tulu"
        e = dict(ex)
        e["text_chosen"], e["text_rejected"] = tc, tr
        for side, text in (("chosen", tc), ("rejected", tr)):
            scores, inputs = mf.rb_pipeline(tok, model, [text], MAX_LENGTH)
            e[f"input_ids_{side}"] = inputs["input_ids"][0].tolist()
            e[f"attention_mask_{side}"] = inputs["attention_mask"][0].tolist()
            e[f"scores_{side}"] = scores[0]
        out.append(e)
    padded = mf.padded_batch_scores(tok, model, out, MAX_LENGTH)

    # transformers' default (sdpa) drops the attention soft cap: for information
    _, sdpa = load_rm(d, torch.float32, attn="sdpa")
    sdpa_scores = {"scores_chosen": [], "scores_rejected": []}
    for e in out:
        for side in ("chosen", "rejected"):
            s, _ = mf.rb_pipeline(tok, sdpa, [e[f"text_{side}"]], MAX_LENGTH)
            sdpa_scores[f"scores_{side}"].append(s[0])

    tok16, model16 = load_rm(d, torch.bfloat16)
    bf16 = {"scores_chosen": [], "scores_rejected": []}
    for e in out:
        for side in ("chosen", "rejected"):
            s, inputs = mf.rb_pipeline(tok16, model16, [e[f"text_{side}"]], MAX_LENGTH)
            assert inputs["input_ids"][0].tolist() == e[f"input_ids_{side}"]
            bf16[f"scores_{side}"].append(s[0])
    bf16_padded = mf.padded_batch_scores(tok16, model16, out, MAX_LENGTH)

    golden = {
        "case": "gemma2-rm",
        "reference": mf.REFERENCE + f", attn_implementation {ATTN}",
        "model": "gemma2-rm",
        "tokenizer": "tokenizers/llama2",
        "kind": "classifier",
        "chat_template": "tulu",
        "max_length": MAX_LENGTH,
        "padding_side": tok.padding_side,
        "pad_token_id": model.config.pad_token_id,
        "examples": out,
        "padded_batch_size": mf.PADDED_BATCH_SIZE,
        "padded_batch_scores_chosen": padded["scores_chosen"],
        "padded_batch_scores_rejected": padded["scores_rejected"],
        "sdpa_without_softcap": mf.spread_from_golden(out, sdpa_scores),
        "bf16": bf16,
        "bf16_padded_batch": bf16_padded,
        "bf16_bound": mf.bf16_bound(out, {"batch_size_1": bf16, "padded_batch": bf16_padded}),
    }
    mf.dump_json(OUT / "gemma2-rm.json", golden)
    return golden


def dpo_case(examples):
    pdir, rdir = MODELS / "gemma2-policy", mf.MODELS / "llama-ref"
    tokenizer = AutoTokenizer.from_pretrained(mf.TOK_LLAMA2)
    tokenizer.pad_token = tokenizer.eos_token
    assert tokenizer.chat_template is None and tokenizer.bos_token is not None
    policy = AutoModelForCausalLM.from_pretrained(pdir, dtype=torch.float32, attn_implementation=ATTN).eval()
    assert policy.config.final_logit_softcapping == 5.0
    ref = AutoModelForCausalLM.from_pretrained(rdir, dtype=torch.float32).eval()

    def capped(logits):
        assert logits.abs().max().item() <= 5.0

    out = mf.dpo_rows(tokenizer, policy, ref, examples, capped)
    golden = {
        "case": "gemma2-dpo",
        "reference": mf.REFERENCE + f", attn_implementation {ATTN}",
        "kind": "dpo",
        "policy": "gemma2-policy",
        "ref": "../../models/llama-ref",
        "tokenizer": "tokenizers/llama2",
        "chat_template": "tulu",
        "max_length": mf.DPOTok.max_length,
        "max_prompt_length": mf.DPOTok.max_prompt_length,
        "examples": out,
    }
    mf.dump_json(OUT / "gemma2-dpo.json", golden)
    return golden


def main():
    print(f"reference: {mf.REFERENCE}, attn_implementation {ATTN}")
    if (transformers.__version__, torch.__version__.split("+")[0]) != (mf.TRANSFORMERS_VERSION, mf.TORCH_VERSION):
        sys.exit(f"make_gemma2_goldens.py: needs transformers {mf.TRANSFORMERS_VERSION} on torch {mf.TORCH_VERSION}; "
                 f"this python has transformers {transformers.__version__}, torch {torch.__version__}")
    if OUT.exists():
        shutil.rmtree(OUT)
    MODELS.mkdir(parents=True)
    torch.manual_seed(0)
    cfg = gemma2_config(24, num_labels=1)
    assert cfg.layer_types == ["sliding_attention", "full_attention", "sliding_attention"], cfg.layer_types
    save(Gemma2ForSequenceClassification(cfg), "gemma2-rm", seed=6006)
    torch.manual_seed(0)
    cfg = gemma2_config(20, final_logit_softcapping=5.0, tie_word_embeddings=True)
    save(Gemma2ForCausalLM(cfg), "gemma2-policy", seed=7007)

    examples = mf.load_examples()
    g = classifier_case(examples)
    ex = g["examples"]
    sc = [x for e in ex for x in e["scores_chosen"] + e["scores_rejected"]]
    lens = [len(e[f"input_ids_{s}"]) for e in ex for s in ("chosen", "rejected")]
    wins = sum(1 for e in ex if mf.win(e["scores_chosen"], e["scores_rejected"]))
    padded = mf.spread_from_golden(ex, {"scores_chosen": g["padded_batch_scores_chosen"],
                                        "scores_rejected": g["padded_batch_scores_rejected"]})
    print(f"  gemma2-rm n={len(ex)} scores [{min(sc):+.3f}, {max(sc):+.3f}] wins {wins}/{len(ex)} "
          f"tokens [{min(lens)}, {max(lens)}] |padded-b1| max {padded['max_abs_diff']:.3g}")
    print(f"    sdpa (no soft cap) vs eager: {g['sdpa_without_softcap']}")
    print(f"    bf16 bound: {g['bf16_bound']['max_abs_diff']:.4g}, flips {g['bf16_bound']['max_win_flips']}")
    assert padded["win_flips"] == 0 and padded["max_abs_diff"] < 1e-4, padded
    assert min(lens) > 24, "every row must exceed the sliding window"
    assert g["sdpa_without_softcap"]["max_abs_diff"] > 1e-2, "the soft cap must bite"
    assert len(set(round(x, 6) for x in sc)) > len(sc) // 2, "scores look degenerate"

    g = dpo_case(examples)
    rw = [x for e in g["examples"] for x in (e["reward_chosen"], e["reward_rejected"])]
    print(f"  gemma2-dpo n={len(g['examples'])} rewards [{min(rw):+.3f}, {max(rw):+.3f}]")
    total = 0
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"  {p.stat().st_size:>10}  {p.relative_to(OUT)}")
    print(f"  {total:>10}  total bytes")


if __name__ == "__main__":
    sys.exit(main())
