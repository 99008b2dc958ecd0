#!/usr/bin/env python3
"""Golden fixtures for herd's Mixtral backbone (sparse mixture of experts): tiny random-weight models + transformers.

Reference: Hugging Face transformers 4.57.6 on torch 2.11.0 (CPU), the venv ~/.cache/herd/venv-torch-2.11.0;
every number below is computed by transformers' own modeling_mixtral.py (MixtralForCausalLM,
MixtralForSequenceClassification, MixtralSparseMoeBlock; nothing transcribed). The RewardBench steps (formatting,
RewardBenchPipeline, TRL DPO tokenization, log-prob sums) are make_fixtures.py's, imported from it. RewardBench 0.1.4
runs Mixtral DPO models (DPO_MODEL_CONFIG: NousResearch/Nous-Hermes-2-Mixtral-8x7B-DPO through MixtralForCausalLM;
mistralai/Mixtral-8x7B-Instruct-v0.1 through the default AutoModelForCausalLM, which resolves to the same class).

What it makes (under tests/golden/fixtures/mixtral/, which this script deletes and rewrites):

  models/mixtral-policy/  MixtralForCausalLM: 4 experts, top-2 routing, hidden 16, expert width 24, 2 layers,
                          4 heads / 2 kv heads, untied lm_head, no sliding window (as Mixtral-8x7B's config).
  models/mixtral-ref/     MixtralForCausalLM, the same shape with tied embeddings: the DPO reference model.
  models/mixtral-rm/      MixtralForSequenceClassification, num_labels 1, otherwise as the policy.
  mixtral-dpo.json        DPO golden (make_fixtures.dpo_rows keys), plus "bf16": the rewards transformers gives
                          with both models loaded in bfloat16 (for the report, not a bound).
  mixtral-rm.json         classifier golden (keys as make_fixtures.py's classifier goldens).

The routers are drawn 4x wider than the other projections (std 0.6) so that the top-2 choice is sharp and a wrong
routing shows; the script asserts that every expert is chosen by some token and that top-2 routing differs from
routing to all experts. No tokenizer is copied: the models use the Llama-2 tokenizer in
../shared/data/tokenizers/llama2 (Mixtral's is the same 32000-piece SentencePiece family), no chat template
(RewardBench's FastChat "tulu" path, add_eos_token for the classifier). Rows: make_fixtures.load_examples (22 real
pairs) and, for DPO, make_fixtures.synthetic_dpo_examples (prompt and answer truncation).

Weights are saved in bfloat16; goldens re-load the folders in float32, batch size 1, no padding;
"padded_batch_scores_*" are RewardBench's padded batches of 8, and "bf16"/"bf16_bound" follow make_fixtures.py's rule.

Regenerate (from the repository root):
    $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_mixtral_goldens.py
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
    MixtralConfig,
    MixtralForCausalLM,
    MixtralForSequenceClassification,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (seeds, determinism, RewardBench steps)

OUT = mf.OUT / "mixtral"
MODELS = OUT / "models"
MAX_LENGTH = 2048
EXPERTS, TOP_K = 4, 2
ROUTER_SCALE = 4.0


def mixtral_config(**extra):
    return MixtralConfig(
        vocab_size=32000, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=EXPERTS, num_experts_per_tok=TOP_K, sliding_window=None,
        max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1e6, hidden_act="silu", bos_token_id=1,
        eos_token_id=2, attention_dropout=0.0, router_jitter_noise=0.0, **extra,
    )


def save(model, name, seed, embed_std, score_std):
    """make_fixtures.randomize_ (it covers the experts' w1/w2/w3 and the router as 2-D weights), the routers
    scaled by ROUTER_SCALE, saved in bfloat16."""
    mf.randomize_(model, seed, embed_std, score_std)
    with torch.no_grad():
        for name_, p in model.named_parameters():
            if name_.endswith("block_sparse_moe.gate.weight"):
                p.mul_(ROUTER_SCALE)
    d = MODELS / name
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    return d


def llama2_tokenizer():
    tokenizer = AutoTokenizer.from_pretrained(mf.TOK_LLAMA2)
    assert tokenizer.chat_template is None and tokenizer.bos_token is not None
    return tokenizer


def routing_checks(model, tokenizer, texts):
    """Every expert of every layer is chosen by some token, and top-k routing is not all-experts routing."""
    ids = tokenizer(texts[:4], return_tensors="pt", padding=True)
    chosen = [torch.zeros(EXPERTS, dtype=torch.long) for _ in model.model.layers]
    hooks = []
    for i, layer in enumerate(model.model.layers):
        def hook(module, args, output, i=i):
            _, logits = output
            top = torch.topk(logits.softmax(-1), TOP_K, dim=-1).indices
            chosen[i] += torch.bincount(top.flatten(), minlength=EXPERTS)
        hooks.append(layer.block_sparse_moe.register_forward_hook(hook))
    with torch.no_grad():
        sparse = model(**ids).logits
    for h in hooks:
        h.remove()
    for i, counts in enumerate(chosen):
        print(f"    layer {i}: tokens per expert {counts.tolist()}")
        assert (counts > 0).all(), counts
    for layer in model.model.layers:
        layer.block_sparse_moe.top_k = EXPERTS
    with torch.no_grad():
        dense = model(**ids).logits
    for layer in model.model.layers:
        layer.block_sparse_moe.top_k = TOP_K
    moved = (dense - sparse).abs().max().item()
    print(f"    all-experts routing moves the logits by up to {moved:.3g}")
    assert moved > 1e-2, moved


def dpo_case(examples):
    pdir, rdir = MODELS / "mixtral-policy", MODELS / "mixtral-ref"
    tokenizer = llama2_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    rows = list(examples) + mf.synthetic_dpo_examples(examples, tokenizer)

    def load(d, dtype):
        model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype).eval()
        assert type(model) is MixtralForCausalLM
        return model

    policy, ref = load(pdir, torch.float32), load(rdir, torch.float32)
    routing_checks(policy, tokenizer, [e["prompt"] + e["chosen"] for e in examples])
    out = mf.dpo_rows(tokenizer, policy, ref, rows)
    bf16_rows = mf.dpo_rows(tokenizer, load(pdir, torch.bfloat16), load(rdir, torch.bfloat16), rows)
    bf16 = {f"reward_{side}": [e[f"reward_{side}"] for e in bf16_rows] for side in ("chosen", "rejected")}
    golden = {
        "case": "mixtral-dpo",
        "reference": mf.REFERENCE,
        "kind": "dpo",
        "policy": "mixtral-policy",
        "ref": "mixtral-ref",
        "tokenizer": "tokenizers/llama2",
        "chat_template": "tulu",
        "max_length": mf.DPOTok.max_length,
        "max_prompt_length": mf.DPOTok.max_prompt_length,
        "examples": out,
        "bf16": bf16,
    }
    mf.dump_json(OUT / "mixtral-dpo.json", golden)
    rw = [x for e in out for x in (e["reward_chosen"], e["reward_rejected"])]
    wins = sum(1 for e in out if e["reward_chosen"] > e["reward_rejected"])
    flips = sum(1 for e, c, r in zip(out, bf16["reward_chosen"], bf16["reward_rejected"])
                if (e["reward_chosen"] > e["reward_rejected"]) != (c > r))
    worst = max(abs(a - b) for e, c, r in zip(out, bf16["reward_chosen"], bf16["reward_rejected"])
                for a, b in ((e["reward_chosen"], c), (e["reward_rejected"], r)))
    print(f"  mixtral-dpo n={len(out)} rewards [{min(rw):+.3f}, {max(rw):+.3f}] wins {wins}/{len(out)}; "
          f"transformers bf16 vs fp32: max |diff| {worst:.4g}, {flips} win flips")
    assert len(set(round(x, 4) for x in rw)) > len(rw) // 2


def load_rm(d, dtype):
    """make_fixtures.load_rm with the shared Llama-2 tokenizer (no template: add_eos_token)."""
    tokenizer = llama2_tokenizer()
    tokenizer.truncation_side = "left"
    model = AutoModelForSequenceClassification.from_pretrained(d, dtype=dtype).eval()
    assert type(model) is MixtralForSequenceClassification
    if tokenizer.pad_token_id is None:
        model.config.pad_token_id = tokenizer.eos_token_id
        tokenizer.pad_token_id = tokenizer.eos_token_id
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.add_eos_token = True
    return tokenizer, model


def classifier_case(examples):
    d = MODELS / "mixtral-rm"
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
    tok16, model16 = load_rm(d, torch.bfloat16)
    bf16 = {"scores_chosen": [], "scores_rejected": []}
    for e in out:
        for side in ("chosen", "rejected"):
            s, inputs = mf.rb_pipeline(tok16, model16, [e[f"text_{side}"]], MAX_LENGTH)
            assert inputs["input_ids"][0].tolist() == e[f"input_ids_{side}"]
            bf16[f"scores_{side}"].append(s[0])
    bf16_padded = mf.padded_batch_scores(tok16, model16, out, MAX_LENGTH)
    golden = {
        "case": "mixtral-rm",
        "reference": mf.REFERENCE,
        "model": "mixtral-rm",
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
        "bf16": bf16,
        "bf16_padded_batch": bf16_padded,
        "bf16_bound": mf.bf16_bound(out, {"batch_size_1": bf16, "padded_batch": bf16_padded}),
    }
    mf.dump_json(OUT / "mixtral-rm.json", golden)
    sc = [x for e in out for x in e["scores_chosen"] + e["scores_rejected"]]
    wins = sum(1 for e in out if mf.win(e["scores_chosen"], e["scores_rejected"]))
    spread = mf.spread_from_golden(out, padded)
    b = golden["bf16_bound"]
    print(f"  mixtral-rm n={len(out)} scores [{min(sc):+.3f}, {max(sc):+.3f}] wins {wins}/{len(out)} "
          f"|padded-b1| max {spread['max_abs_diff']:.3g}; bf16 bound {b['max_abs_diff']:.4g}, "
          f"{b['max_win_flips']} flips")
    assert spread["win_flips"] == 0 and spread["max_abs_diff"] < 1e-4, spread
    assert len(set(round(x, 6) for x in sc)) > len(sc) // 2, "scores look degenerate"


def main():
    print(f"reference: {mf.REFERENCE}")
    if (transformers.__version__, torch.__version__.split("+")[0]) != (mf.TRANSFORMERS_VERSION, mf.TORCH_VERSION):
        sys.exit(f"make_mixtral_goldens.py: needs transformers {mf.TRANSFORMERS_VERSION} on torch {mf.TORCH_VERSION}; "
                 f"this python has transformers {transformers.__version__}, torch {torch.__version__}")
    if OUT.exists():
        shutil.rmtree(OUT)
    MODELS.mkdir(parents=True)
    torch.manual_seed(0)
    save(MixtralForCausalLM(mixtral_config(tie_word_embeddings=False)), "mixtral-policy", seed=11011,
         embed_std=0.5, score_std=0.0)
    torch.manual_seed(0)
    save(MixtralForCausalLM(mixtral_config(tie_word_embeddings=True)), "mixtral-ref", seed=11012,
         embed_std=0.5, score_std=0.0)
    torch.manual_seed(0)
    save(MixtralForSequenceClassification(mixtral_config(num_labels=1, pad_token_id=2)), "mixtral-rm",
         seed=11013, embed_std=1.0, score_std=1.0)

    examples = mf.load_examples()
    print("DPO golden")
    dpo_case(examples)
    print("classifier golden")
    classifier_case(examples)
    total = 0
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"  {p.stat().st_size:>10}  {p.relative_to(OUT)}")
    print(f"  {total:>10}  total bytes")


if __name__ == "__main__":
    sys.exit(main())
