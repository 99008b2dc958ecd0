#!/usr/bin/env python3
"""Golden fixtures for herd's GPT-NeoX and GPT-2 backbones: tiny random-weight HF models + transformers outputs.

Reference: Hugging Face transformers 4.57.6 on torch 2.11.0 (CPU): the model code is transformers' own
(GPTNeoXForSequenceClassification, GPTNeoXForCausalLM, GPT2ForSequenceClassification); the RewardBench
pipeline around it (formatting, tokenization, padded batches, bf16 draws, the DPO tokenize_row and log-prob
sums) is make_fixtures.py's, imported from it (its docstring says which parts transcribe rewardbench 0.1.4's
scripts/run_rm.py, run_dpo.py and dpo.py). Nothing here is hand-computed.

What it makes (everything under tests/golden/fixtures/neox/, which this script deletes and rewrites):

  models/neox-rm/      GPTNeoXForSequenceClassification, num_labels 1: parallel residual, partial rotary
                       (rotary_pct 0.5: 4 of each head's 8 dims rotate, the other 4 pass through), fused
                       query_key_value with biases, LayerNorm with bias, exact gelu. GPT-2 tokenizer without chat
                       template (RewardBench's FastChat "tulu" path), pad = eos = 50256.
  models/gpt2-rm/      GPT2ForSequenceClassification, num_labels 2: learned positions (wpe), Conv1D weights,
                       fused c_attn, gelu_new; GPT-2 tokenizer, pad 50256. (transformers 4.57.6
                       applies scale_attn_by_inverse_layer_idx only in eager attention, not in its default sdpa:
                       herd refuses that flag rather than pick one.)
  models/oasst-rm/     GPTNeoXRewardModel from rewardbench 0.1.4's rewardbench/models/openassistant.py (the
                       published file, loaded by path from ~/.cache/herd/venv-rewardbench-0.1.4 and run on
                       transformers 4.57.6): GPTNeoXModel (rotary_pct 0.25: 2 of 8 dims rotate), `out_proj` with a
                       bias, pooling "last" (the last attended token). GPT-2 tokenizer, pad 50256, texts in
                       FastChat's "oasst_pythia" template (each turn ends with <|endoftext|>, the pad id).
  models/gpt2-policy/  GPT2LMHeadModel, lm_head tied to wte (as GPT-2 checkpoints are): a DPO policy.
  models/neox-policy/  GPTNeoXForCausalLM, parallel residual, rotary_pct 0.5, untied embed_out (DPO policy).
  models/neox-ref/     GPTNeoXForCausalLM, SEQUENTIAL residual (use_parallel_residual false), full rotary
                       (rotary_pct 1.0), no attention biases (attention_bias false): the DPO reference.

  neox-rm.json, gpt2-rm.json, oasst-rm.json
                               classifier goldens (make_fixtures.classifier_case: fp32 batch size 1, fp32 padded
                               batches of 8, bf16 draws and the bf16 bound derived from them)
  neox-dpo.json                DPO golden (make_fixtures.DPOTok + get_batch_logps): policy/ref log-prob sums,
                               rewards, ref-free avg/sum/norm, on the 22 rows and the two synthetic long rows.
  gpt2-dpo.json                the same for the GPT-2 policy against the NeoX reference (they share the tokenizer)

Weights are saved in bfloat16; every golden number comes from re-loading the saved folder (fp32 or bf16).
Examples: make_fixtures.load_examples() (the first 2 rows of each llmbar and hep-* subset of ../shared/data).
Deterministic: fixed seeds, single thread, deterministic algorithms.

Regenerate (from the repository root):
    $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_neox_goldens.py
"""

import importlib.util
import shutil
import sys
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    GPTNeoXForSequenceClassification,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (the shared RewardBench pipeline; importing it runs nothing)

OUT = mf.HERE / "fixtures" / "neox"
MODELS = OUT / "models"
# make_fixtures' classifier_case writes under its OUT/MODELS globals: point them at this folder
mf.OUT, mf.MODELS = OUT, MODELS

# rewardbench 0.1.4's GPTNeoXRewardModel (OpenAssistant's pythia reward models), the published file
# itself: it needs only torch and transformers, and importing it registers its Auto classes
RB_SITE = Path.home() / ".cache/herd/venv-rewardbench-0.1.4/lib/python3.11/site-packages"
OPENASSISTANT = RB_SITE / "rewardbench/models/openassistant.py"


def openassistant():
    spec = importlib.util.spec_from_file_location("rewardbench_openassistant", OPENASSISTANT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NEOX_DIMS = dict(
    vocab_size=50257, hidden_size=16, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
    max_position_embeddings=4096, layer_norm_eps=1e-5, hidden_act="gelu", bos_token_id=50256,
    eos_token_id=50256, attention_dropout=0.0, hidden_dropout=0.0,
)


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with seeded random values (fp32), so that layout mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied params are yielded once
            n = torch.randn(p.shape, generator=g, dtype=torch.float32)
            leaf = name.rsplit(".", 2)[-2] if "." in name else name
            if name.endswith(".weight") and p.dim() == 1:  # LayerNorm weights
                v = 1.0 + 0.1 * n
            elif name.endswith(".bias"):  # LayerNorm, projection and head biases
                v = 0.1 * n
            elif leaf in ("embed_in", "wte"):
                v = 1.0 * n
            elif leaf == "wpe":
                v = 0.5 * n  # large enough that a position off by one moves the scores
            elif leaf == "embed_out":
                v = 0.5 * n
            elif leaf in ("score", "out_proj"):
                v = 0.3 * n
            elif leaf in ("query_key_value", "c_attn"):
                v = 0.3 * n  # sharp attention, so masking and rotary errors show
            elif p.dim() == 2:  # dense, MLP, c_proj, c_fc
                v = 0.15 * n
            else:
                raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(v)


def save(model, name: str, seed: int, tokenizer: bool) -> Path:
    randomize_(model, seed)
    d = MODELS / name
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    if tokenizer:
        mf.copy_tokenizer(mf.TOK_GPT2, d)
    return d


def build_models():
    print("building models")
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(rotary_pct=0.5, use_parallel_residual=True, pad_token_id=50256, num_labels=1,
                        tie_word_embeddings=False, **NEOX_DIMS)
    m = GPTNeoXForSequenceClassification(cfg)
    assert m.gpt_neox.layers[0].attention.rotary_ndims == 4
    save(m, "neox-rm", seed=6006, tokenizer=True)

    # OpenAssistant's reward model: GPTNeoXModel + out_proj (with bias), pooled at the last attended token
    oa = openassistant()
    torch.manual_seed(0)
    cfg = oa.GPTNeoXRewardModelConfig(pooling="last", rotary_pct=0.25, use_parallel_residual=True,
                                      pad_token_id=50256, tie_word_embeddings=False, **NEOX_DIMS)
    m = oa.GPTNeoXRewardModel(cfg)
    assert m.gpt_neox.layers[0].attention.rotary_ndims == 2
    save(m, "oasst-rm", seed=1010, tokenizer=True)

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50257, n_positions=2048, n_embd=16, n_layer=2, n_head=2, n_inner=None,
                     activation_function="gelu_new", layer_norm_epsilon=1e-5,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=50256, eos_token_id=50256,
                     pad_token_id=50256, num_labels=2)
    save(GPT2ForSequenceClassification(cfg), "gpt2-rm", seed=7007, tokenizer=True)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50257, n_positions=2048, n_embd=16, n_layer=2, n_head=2,
                     activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=50256, eos_token_id=50256)
    m = GPT2LMHeadModel(cfg)
    assert m.lm_head.weight is m.transformer.wte.weight  # tied, as GPT-2 checkpoints are
    save(m, "gpt2-policy", seed=1111, tokenizer=True)

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(rotary_pct=0.5, use_parallel_residual=True, tie_word_embeddings=False, **NEOX_DIMS)
    save(GPTNeoXForCausalLM(cfg), "neox-policy", seed=8008, tokenizer=True)
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(rotary_pct=1.0, use_parallel_residual=False, attention_bias=False,
                        tie_word_embeddings=False, **NEOX_DIMS)
    save(GPTNeoXForCausalLM(cfg), "neox-ref", seed=9009, tokenizer=False)


def oasst_pythia_format(ex, tokenizer):
    """rewardbench's prepare_dialogue (single turn) with FastChat's "oasst_pythia" template, as RewardBench
    runs OpenAssistant's models (`--chat_template oasst_pythia`): every turn ends with <|endoftext|>, which is
    also the pad id here, so the texts end with a pad token."""
    from fastchat.conversation import get_conv_template

    def render(messages):
        conv = get_conv_template("oasst_pythia")
        conv.messages = [[conv.roles[0 if m["role"] == "user" else 1], m["content"]] for m in messages]
        return conv.get_prompt()

    user = {"role": "user", "content": ex["prompt"]}
    return (
        render([user]),
        render([user, {"role": "assistant", "content": ex["chosen"]}]),
        render([user, {"role": "assistant", "content": ex["rejected"]}]),
        "oasst_pythia",
    )


def oasst_case(examples):
    """make_fixtures.classifier_case with the oasst_pythia texts instead of tulu."""
    tulu_format = mf.format_example
    mf.format_example = oasst_pythia_format
    try:
        g, worst = mf.classifier_case("oasst-rm", "oasst-rm", 2048, examples)
    finally:
        mf.format_example = tulu_format
    # the point of this case: every text ends with the pad id, and GPTNeoXRewardModel still reads that last
    # token (its attention mask covers it), where the *ForSequenceClassification rule would skip it
    for e in g["examples"]:
        for side in ("chosen", "rejected"):
            assert e[f"input_ids_{side}"][-1] == g["pad_token_id"] == 50256, (e["id"], side)
    return g, worst


def dpo_case(examples, case, policy_name, ref_name):
    """make_fixtures.dpo_case for another policy and reference (same tokenize_row, same log-prob sums)."""
    pdir, rdir = MODELS / policy_name, MODELS / ref_name
    tokenizer = AutoTokenizer.from_pretrained(pdir)
    tokenizer.pad_token = tokenizer.eos_token  # run_dpo.py
    assert tokenizer.chat_template is None and tokenizer.bos_token_id == 50256
    policy = AutoModelForCausalLM.from_pretrained(pdir, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(rdir, dtype=torch.float32).eval()
    assert not ref.config.use_parallel_residual
    rows = list(examples) + mf.synthetic_dpo_examples(examples, tokenizer)
    out = mf.dpo_rows(tokenizer, policy, ref, rows)
    golden = {
        "case": case,
        "reference": mf.REFERENCE,
        "kind": "dpo",
        "policy": policy_name,
        "ref": ref_name,
        "tokenizer": policy_name,
        "chat_template": "tulu",
        "max_length": mf.DPOTok.max_length,
        "max_prompt_length": mf.DPOTok.max_prompt_length,
        "examples": out,
    }
    mf.dump_json(OUT / f"{case}.json", golden)
    return golden


def main():
    print(f"reference: {mf.REFERENCE}")
    if (transformers.__version__, torch.__version__.split("+")[0]) != (mf.TRANSFORMERS_VERSION, mf.TORCH_VERSION):
        sys.exit(f"make_neox_goldens.py: the goldens' reference is transformers {mf.TRANSFORMERS_VERSION} on torch "
                 f"{mf.TORCH_VERSION}; this python has transformers {transformers.__version__}, torch {torch.__version__}")
    if OUT.exists():
        shutil.rmtree(OUT)
    MODELS.mkdir(parents=True)
    build_models()
    examples = mf.load_examples()
    print("classifier goldens")
    for case in ("neox-rm", "gpt2-rm", "oasst-rm"):
        if case == "oasst-rm":
            g, worst = oasst_case(examples)
        else:
            g, worst = mf.classifier_case(case, case, 2048, examples)
        assert g["padding_side"] == "right", g["padding_side"]
        mf.check_classifier(g, worst)

    print("DPO goldens")
    for case, policy, ref in (("neox-dpo", "neox-policy", "neox-ref"), ("gpt2-dpo", "gpt2-policy", "neox-ref")):
        g = dpo_case(examples, case, policy, ref)
        ex = g["examples"]
        rw = [x for e in ex for x in (e["reward_chosen"], e["reward_rejected"])]
        wins = sum(1 for e in ex if e["reward_chosen"] > e["reward_rejected"])
        print(f"  {case:<20} n={len(ex)} rewards [{min(rw):+.3f}, {max(rw):+.3f}] wins {wins}/{len(ex)}")
        assert len(ex[-2]["chosen_prompt_ids"]) == 128 and len(ex[-1]["chosen_answer_ids"]) == 1920
        assert len(set(round(x, 4) for x in rw)) > len(rw) // 2, "rewards look degenerate"

    total = 0
    print("files")
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"  {p.stat().st_size:>10}  {p.relative_to(OUT)}")
    print(f"  {total:>10}  total bytes")


if __name__ == "__main__":
    sys.exit(main())
