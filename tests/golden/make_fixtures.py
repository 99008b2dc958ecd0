#!/usr/bin/env python3
"""Golden fixtures for herd's libtorch scoring: tiny random-weight HF models + transformers outputs.

Reference: Hugging Face transformers 4.57.6 on torch 2.11.0 (CPU), following RewardBench's
scripts/run_rm.py and scripts/run_dpo.py. The script refuses other transformers/torch versions
(the goldens would silently change reference); every golden JSON records the versions in "reference".

What it makes (everything under tests/golden/fixtures/, which this script deletes and rewrites):

  models/llama-gqa-rm/   LlamaForSequenceClassification, num_labels 1, GQA (4 heads / 2 kv heads),
                         llama3 rope scaling, llama2 tokenizer WITHOUT chat template (RewardBench FastChat
                         "tulu" path, add_eos_token=True). Saved SHARDED (model.safetensors.index.json).
  models/mistral-rm/     MistralForSequenceClassification, num_labels 2, sliding_window 4096, llama2 tokenizer
                         WITH a zephyr-style Jinja chat template that starts with {{ bos_token }} (=> two leading
                         BOS ids; RewardBench masks the first one). config.pad_token_id is left unset (None), so
                         RewardBench's "pad = eos" fallback (tokenizer and model.config) is exercised.
  models/qwen2-rm/       Qwen2ForSequenceClassification, num_labels 1, random q/k/v biases, GQA, GPT-2 tokenizer
                         with a ChatML Jinja chat template, pad = eos = 50256.
  models/llama-policy/   LlamaForCausalLM (tied embeddings) - DPO policy.
  models/llama-ref/      LlamaForCausalLM (tied embeddings, other seed) - DPO reference.
                         No tokenizer files: RewardBench's run_dpo.py only loads the policy's tokenizer.

  llama-gqa-rm.json, llama-gqa-rm-trunc.json (max_length 64), mistral-rm.json, qwen2-rm.json
                         classifier goldens, following rewardbench scripts/run_rm.py + RewardBenchPipeline.
  llama-dpo.json         DPO golden, following rewardbench scripts/run_dpo.py + rewardbench/dpo.py (TRL tokenize_row).

Weights are saved in bfloat16 (small files); every golden number is computed by RE-LOADING the saved
folder with dtype float32 (exactly the weights the Rust side loads), batch size 1, no padding, on CPU,
single thread, default attention implementation (sdpa). Each classifier golden also has
"padded_batch_scores_*" (RewardBench's own padded batches of 8, fp32), the same two runs with the
folder loaded in bfloat16 ("bf16": batch size 1, "bf16_padded_batch"), and "bf16_bound": what
transformers' own bf16 runs measured against its fp32 golden and the bound herd's bf16 must keep,
derived from it (rule at BF16_SCORE_FACTOR below; worker/tests/golden_parity.rs asserts it).

Examples: the first 2 rows of each llmbar subset (5 subsets) and of each hep-* subset (6 subsets) from
../shared/data beside the repository (or $HERD_SHARED/data, as the Rust tests), i.e. 22 pairs; each golden file embeds
prompt/chosen/rejected/subset/id so Rust tests are self-contained. The DPO golden adds two synthetic
rows (ids 100000, 100001) that exercise the 128-token keep_end prompt truncation (and, for 100001,
the response truncation to max_length - max_prompt_length).

Deterministic: fixed seeds, torch single-threaded, deterministic algorithms; re-running gives
byte-identical JSON and safetensors files (with the same torch/transformers versions).

Regenerate (from the repository root):
    $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_fixtures.py
Also needs tokenizers 0.22.2, safetensors, numpy, jinja2 (the herd venv has them).
"""

import copy
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    MistralConfig,
    MistralForSequenceClassification,
    Qwen2Config,
    Qwen2ForSequenceClassification,
)

TRANSFORMERS_VERSION = "4.57.6"
TORCH_VERSION = "2.11.0"
REFERENCE = f"transformers {TRANSFORMERS_VERSION}, torch {TORCH_VERSION} (CPU, fp32 unless stated)"

HERE = Path(__file__).resolve().parent
OUT = HERE / "fixtures"
MODELS = OUT / "models"
# the shared folder beside the repository, as tests/testkit resolves it
DATA = Path(os.environ.get("HERD_SHARED") or HERE.parent.parent.parent / "shared") / "data"
TOK_LLAMA2 = DATA / "tokenizers" / "llama2"
TOK_GPT2 = DATA / "tokenizers" / "gpt2"

# Only the files a fast tokenizer needs (tokenizer.model, the 500 KB SentencePiece file, is left out:
# transformers loads LlamaTokenizerFast from tokenizer.json alone, and so does the Rust `tokenizers` crate).
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]

# RewardBench's default batch size; the padded-batch goldens use it
PADDED_BATCH_SIZE = 8

# The bf16 bound. transformers itself, run in bf16 on the same inputs (two draws: batch size 1 and
# padded batches), moves each score by up to S from its fp32 value and flips up to F wins (random
# tiny models have many near ties, and bf16 quantizes scores near 2 to steps of 1/64, so near ties
# become exact ties, which count as losses). herd's bf16 is another draw of the same rounding in a
# different order of operations, so it may move a score by up to BF16_SCORE_FACTOR x S and flip up
# to F + BF16_FLIP_MARGIN wins. Measured with transformers 4.57.6: S is 0.021-0.046 and F 0-3 over
# the four cases, and the two transformers draws differ from each other by up to 1 flip; the margin
# is twice that. A layout, dtype or pooling error moves scores by O(1), far outside the bound.
BF16_SCORE_FACTOR = 2.0
BF16_FLIP_MARGIN = 2
BF16_RULE = (f"max_abs_diff = {BF16_SCORE_FACTOR:g} x the largest |bf16 - fp32| score difference of transformers' "
             f"bf16 draws; max_win_flips = the most win flips of those draws + {BF16_FLIP_MARGIN}")

ZEPHYR_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
)
CHATML_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"

# ---------------------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------------------
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
transformers.logging.set_verbosity_error()


def dump_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


# ---------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------
def randomize_(model: torch.nn.Module, seed: int, embed_std: float, score_std: float) -> None:
    """Overwrite every parameter with seeded random values (fp32), so that mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied params are yielded once
            n = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):  # RMSNorm weights (input/post-attention/final)
                v = 1.0 + 0.1 * n
            elif name.endswith(".bias"):
                v = 0.1 * n
            elif "embed_tokens" in name or name == "lm_head.weight":
                v = embed_std * n
            elif name == "score.weight":
                v = score_std * n
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                v = 0.3 * n  # sharper attention than N(0,0.1) would give, so masking/rope errors show
            elif name.endswith(".weight") and p.dim() == 2:  # v/o/gate/up/down
                v = 0.15 * n
            else:
                raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(v)


def save_model(model, name: str, seed: int, embed_std: float, score_std: float, shard: bool = False):
    randomize_(model, seed, embed_std, score_std)
    model = model.to(torch.bfloat16)
    d = MODELS / name
    kwargs = {"safe_serialization": True}
    if shard:
        kwargs["max_shard_size"] = "1MB"
    model.save_pretrained(d, **kwargs)
    return d


def copy_tokenizer(src: Path, dst: Path, chat_template=None) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in TOKENIZER_FILES:
        shutil.copyfile(src / f, dst / f)
    if chat_template is not None:
        p = dst / "tokenizer_config.json"
        cfg = json.loads(p.read_text(encoding="utf-8"))
        cfg["chat_template"] = chat_template
        p.write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def base_dims():
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=4096,
        hidden_act="silu",
        attention_dropout=0.0,
    )


def llama3_rope_check(theta, head_dim, rs):
    """Classify each rope frequency as in transformers' _compute_llama3_parameters; print and return."""
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    wl = 2 * math.pi / inv
    lo = rs["original_max_position_embeddings"] / rs["low_freq_factor"]
    hi = rs["original_max_position_embeddings"] / rs["high_freq_factor"]
    kinds = ["scaled" if w > lo else ("unchanged" if w < hi else "smooth") for w in wl]
    print(f"  llama3 rope: theta={theta} head_dim={head_dim} original_max={rs['original_max_position_embeddings']}"
          f" high_freq_wavelen={hi} low_freq_wavelen={lo}")
    for i, (w, k) in enumerate(zip(wl, kinds)):
        print(f"    freq {i}: wavelength {w:.1f} -> {k}")
    assert "scaled" in kinds and "smooth" in kinds, kinds
    return kinds


def build_models():
    print("building models")
    # 1. llama-gqa-rm
    rope_scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        # head_dim 8, theta 5e5 -> wavelengths 6.3, 167, 4443, 118140. With 512: high_freq_wavelen 128,
        # low_freq_wavelen 512 => freq0 unchanged, freq1 smooth band, freq2/3 divided by the factor.
        "original_max_position_embeddings": 512,
    }
    llama3_rope_check(500000.0, 8, rope_scaling)
    cfg = LlamaConfig(
        vocab_size=32000, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=rope_scaling, bos_token_id=1, eos_token_id=2, pad_token_id=2, num_labels=1,
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False, **base_dims(),
    )
    torch.manual_seed(0)
    d = save_model(LlamaForSequenceClassification(cfg), "llama-gqa-rm", seed=1001, embed_std=1.0,
                   score_std=0.3, shard=True)
    copy_tokenizer(TOK_LLAMA2, d)

    # 2. mistral-rm (config.pad_token_id deliberately None: RewardBench sets it to eos at load time)
    cfg = MistralConfig(
        vocab_size=32000, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0, sliding_window=4096,
        bos_token_id=1, eos_token_id=2, pad_token_id=None, num_labels=2, tie_word_embeddings=False,
        **base_dims(),
    )
    torch.manual_seed(0)
    d = save_model(MistralForSequenceClassification(cfg), "mistral-rm", seed=2002, embed_std=1.0, score_std=0.3)
    copy_tokenizer(TOK_LLAMA2, d, chat_template=ZEPHYR_TEMPLATE)

    # 3. qwen2-rm
    cfg = Qwen2Config(
        vocab_size=50257, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0,
        use_sliding_window=False, bos_token_id=50256, eos_token_id=50256, pad_token_id=50256, num_labels=1,
        tie_word_embeddings=False, **base_dims(),
    )
    torch.manual_seed(0)
    m = Qwen2ForSequenceClassification(cfg)
    assert m.model.layers[0].self_attn.q_proj.bias is not None
    d = save_model(m, "qwen2-rm", seed=3003, embed_std=1.0, score_std=0.3)
    copy_tokenizer(TOK_GPT2, d, chat_template=CHATML_TEMPLATE)

    # 4. llama-policy / llama-ref (CausalLM, tied embeddings; embed std 0.5 keeps logits ~N(0, 2.8))
    for name, seed in (("llama-policy", 4004), ("llama-ref", 5005)):
        cfg = LlamaConfig(
            vocab_size=32000, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
            bos_token_id=1, eos_token_id=2, tie_word_embeddings=True, **base_dims(),
        )
        torch.manual_seed(0)
        d = save_model(LlamaForCausalLM(cfg), name, seed=seed, embed_std=0.5, score_std=0.0)
        if name == "llama-policy":
            copy_tokenizer(TOK_LLAMA2, d)


# ---------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------
def load_examples():
    rows = []
    for fname in ("rewardbench-llmbar.jsonl", "rewardbench-hep.jsonl"):
        per_subset = {}
        with open(DATA / fname, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                per_subset.setdefault(r["subset"], []).append(r)
        for subset, rs in per_subset.items():  # file order
            for r in rs[:2]:
                rows.append({k: r[k] for k in ("id", "subset", "prompt", "chosen", "rejected")})
    assert len(rows) == 22, len(rows)
    return rows


# ---------------------------------------------------------------------------------------------------------
# RewardBench formatting (rewardbench/utils.py prepare_dialogue / prepare_dialogue_from_tokenizer)
# ---------------------------------------------------------------------------------------------------------
def tulu(messages):
    """FastChat 0.2.36 'tulu' template: ADD_NEW_LINE_SINGLE, roles <|user|>/<|assistant|>, sep '\\n', no system."""
    roles = {"user": "<|user|>", "assistant": "<|assistant|>"}
    return "".join(roles[m["role"]] + "\n" + m["content"] + "\n" for m in messages)


def _check_tulu_against_fastchat():
    try:
        from fastchat.conversation import get_conv_template
    except Exception:  # fschat is optional; the string rule is from the reference notes
        print("  (fastchat not importable; tulu template not cross-checked)")
        return
    for msgs in ([("P q\n", None)], [("P q", "R\nx ")]):
        conv = get_conv_template("tulu")
        conv.messages = [[conv.roles[0], msgs[0][0]]]
        ours = [{"role": "user", "content": msgs[0][0]}]
        if msgs[0][1] is not None:
            conv.messages.append([conv.roles[1], msgs[0][1]])
            ours.append({"role": "assistant", "content": msgs[0][1]})
        assert conv.get_prompt() == tulu(ours), (conv.get_prompt(), tulu(ours))
    print("  tulu template matches fastchat.conversation.get_conv_template('tulu')")


def format_example(ex, tokenizer):
    """Returns (prompt_text, text_chosen, text_rejected, chat_template_name_or_None)."""
    user = {"role": "user", "content": ex["prompt"]}
    if tokenizer.chat_template is not None:
        f = lambda msgs: tokenizer.apply_chat_template(msgs, tokenize=False)  # noqa: E731
        tmpl = None
    else:
        f = tulu
        tmpl = "tulu"
    return (
        f([user]),
        f([user, {"role": "assistant", "content": ex["chosen"]}]),
        f([user, {"role": "assistant", "content": ex["rejected"]}]),
        tmpl,
    )


# ---------------------------------------------------------------------------------------------------------
# RewardBench classifier pipeline (scripts/run_rm.py + rewardbench/models/pipeline.py), CPU
# ---------------------------------------------------------------------------------------------------------
def load_rm(model_dir: Path, dtype):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.truncation_side = "left"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=dtype)
    for module in model.modules():  # disable_dropout_in_model
        if isinstance(module, torch.nn.Dropout):
            module.p = 0
    model.eval()
    if tokenizer.pad_token_id is None:
        model.config.pad_token_id = tokenizer.eos_token_id
        tokenizer.pad_token_id = tokenizer.eos_token_id
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    has_template = tokenizer.chat_template is not None
    if not has_template:
        tokenizer.add_eos_token = True
    return tokenizer, model


def rb_pipeline(tokenizer, model, samples, max_length):
    """RewardBenchPipeline.__call__: tokenize (truncation, padding), mask a duplicated leading BOS, forward."""
    inputs = tokenizer(samples, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    if tokenizer.bos_token:
        bos = tokenizer.bos_token_id
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        starts = mask.argmax(dim=1)
        second = torch.clamp(starts + 1, max=ids.size(1) - 1)
        ar = torch.arange(ids.size(0))
        double = (ids[ar, starts] == bos) & (ids[ar, second] == bos)
        if double.any():
            mask[ar[double], starts[double]] = 0
    with torch.no_grad():
        logits = model(**inputs).logits
    return logits.float().cpu().numpy().tolist(), inputs


def padded_batch_scores(tokenizer, model, out, max_length):
    """RewardBench's batching: consecutive rows, PADDED_BATCH_SIZE at a time, padded to the longest."""
    scores = {"scores_chosen": [], "scores_rejected": []}
    for i in range(0, len(out), PADDED_BATCH_SIZE):
        batch = out[i:i + PADDED_BATCH_SIZE]
        for side in ("chosen", "rejected"):
            s, _ = rb_pipeline(tokenizer, model, [e[f"text_{side}"] for e in batch], max_length)
            scores[f"scores_{side}"].extend(s)
    assert all(len(v) == len(out) for v in scores.values())
    return scores


def win(chosen, rejected):
    """RewardBench's rule: Python's list comparison, i.e. lexicographic over the labels."""
    return chosen > rejected


def spread_from_golden(out, draw):
    """How far other scores of the same rows (a bf16 draw, padded batches) are from the fp32 batch-size-1
    golden: max |score diff| and the ids whose win flips."""
    assert len(draw["scores_chosen"]) == len(draw["scores_rejected"]) == len(out)
    worst, flipped = 0.0, []
    for i, e in enumerate(out):
        c16, r16 = draw["scores_chosen"][i], draw["scores_rejected"][i]
        assert len(c16) == len(e["scores_chosen"]) and len(r16) == len(e["scores_rejected"]), e["id"]
        for a, b in zip(e["scores_chosen"] + e["scores_rejected"], c16 + r16):
            worst = max(worst, abs(a - b))
        if win(e["scores_chosen"], e["scores_rejected"]) != win(c16, r16):
            flipped.append(e["id"])
    return {"max_abs_diff": worst, "win_flips": len(flipped), "flipped_ids": flipped}


def bf16_bound(out, draws):
    """The bound herd's bf16 scores must keep against the fp32 golden (see BF16_SCORE_FACTOR)."""
    measured = {name: spread_from_golden(out, draw) for name, draw in draws.items()}
    max_abs_diff = BF16_SCORE_FACTOR * max(m["max_abs_diff"] for m in measured.values())
    # pairs a perturbation of max_abs_diff per score could flip: for information only
    near_ties = sum(1 for e in out if abs(e["scores_chosen"][0] - e["scores_rejected"][0]) <= 2 * max_abs_diff)
    return {
        "rule": BF16_RULE,
        "transformers": measured,
        "score_factor": BF16_SCORE_FACTOR,
        "flip_margin": BF16_FLIP_MARGIN,
        "max_abs_diff": max_abs_diff,
        "max_win_flips": max(m["win_flips"] for m in measured.values()) + BF16_FLIP_MARGIN,
        "near_ties": near_ties,
    }


def classifier_case(case, model_name, max_length, examples):
    d = MODELS / model_name
    tok, model = load_rm(d, torch.float32)
    out = []
    for ex in examples:
        _, tc, tr, tmpl = format_example(ex, tok)
        e = dict(ex)
        e["text_chosen"], e["text_rejected"] = tc, tr
        for side, text in (("chosen", tc), ("rejected", tr)):
            scores, inputs = rb_pipeline(tok, model, [text], max_length)
            e[f"input_ids_{side}"] = inputs["input_ids"][0].tolist()
            e[f"attention_mask_{side}"] = inputs["attention_mask"][0].tolist()
            e[f"scores_{side}"] = scores[0]
        out.append(e)

    # cross-check: eager attention gives the same numbers (sdpa is transformers' default and the golden)
    eager = AutoModelForSequenceClassification.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    eager.config.pad_token_id = model.config.pad_token_id
    eager.eval()
    worst = 0.0
    for e in out:
        for side in ("chosen", "rejected"):
            with torch.no_grad():
                lg = eager(input_ids=torch.tensor([e[f"input_ids_{side}"]]),
                           attention_mask=torch.tensor([e[f"attention_mask_{side}"]])).logits[0].tolist()
            assert len(lg) == len(e[f"scores_{side}"]), (case, e["id"], side)
            worst = max(worst, max(abs(a - b) for a, b in zip(lg, e[f"scores_{side}"])))
    assert worst < 1e-5, worst

    # RewardBench's own padded batches (batch_size 8, padding=True, tokenizer's padding side), fp32
    padded = padded_batch_scores(tok, model, out, max_length)

    # bf16: the same inputs with the folder loaded in bfloat16, batch size 1 and padded batches:
    # two draws of transformers' own bf16 rounding, from which the bf16 bound is derived
    tok16, model16 = load_rm(d, torch.bfloat16)
    bf16 = {"scores_chosen": [], "scores_rejected": []}
    for e in out:
        for side in ("chosen", "rejected"):
            s, inputs = rb_pipeline(tok16, model16, [e[f"text_{side}"]], max_length)
            assert inputs["input_ids"][0].tolist() == e[f"input_ids_{side}"]
            bf16[f"scores_{side}"].append(s[0])
    bf16_padded = padded_batch_scores(tok16, model16, out, max_length)

    golden = {
        "case": case,
        "reference": REFERENCE,
        "model": model_name,
        "kind": "classifier",
        "chat_template": tmpl,
        "max_length": max_length,
        "padding_side": tok.padding_side,
        "pad_token_id": model.config.pad_token_id,
        "examples": out,
        "padded_batch_size": PADDED_BATCH_SIZE,
        "padded_batch_scores_chosen": padded["scores_chosen"],
        "padded_batch_scores_rejected": padded["scores_rejected"],
        "bf16": bf16,
        "bf16_padded_batch": bf16_padded,
        "bf16_bound": bf16_bound(out, {"batch_size_1": bf16, "padded_batch": bf16_padded}),
    }
    dump_json(OUT / f"{case}.json", golden)
    return golden, worst


# ---------------------------------------------------------------------------------------------------------
# RewardBench DPO (scripts/run_dpo.py + rewardbench/dpo.py, TRL-derived tokenize_row), CPU
# ---------------------------------------------------------------------------------------------------------
class DPOTok:
    label_pad_token_id = -100
    truncation_mode = "keep_end"
    max_prompt_length = 128
    max_length = 2048

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.merges = 0

    def build_tokenized_answer(self, prompt, answer):
        full_tokenized = self.tokenizer(prompt + answer, add_special_tokens=False)
        prompt_input_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_input_ids = full_tokenized["input_ids"][len(prompt_input_ids):]
        full_concat_input_ids = np.concatenate([prompt_input_ids, answer_input_ids])
        full_input_ids = np.array(full_tokenized["input_ids"])
        if len(full_input_ids) != len(full_concat_input_ids):
            raise ValueError("Prompt input ids and answer input ids should have the same length.")
        response_token_ids_start_idx = len(prompt_input_ids)
        if prompt_input_ids != full_tokenized["input_ids"][:response_token_ids_start_idx]:
            response_token_ids_start_idx -= 1
            self.merges += 1
        return dict(
            prompt_input_ids=full_tokenized["input_ids"][:response_token_ids_start_idx],
            prompt_attention_mask=full_tokenized["attention_mask"][:response_token_ids_start_idx],
            input_ids=full_tokenized["input_ids"][response_token_ids_start_idx:],
            attention_mask=full_tokenized["attention_mask"][response_token_ids_start_idx:],
        )

    def tokenize_row(self, feature):
        prompt = feature["prompt"]
        chosen = feature["text_chosen"].replace(prompt, "")
        rejected = feature["text_rejected"].replace(prompt, "")
        tok = self.tokenizer
        prompt_tokens = tok(prompt, add_special_tokens=False)
        prompt_tokens = {f"prompt_{k}": v for k, v in prompt_tokens.items()}
        chosen_tokens = self.build_tokenized_answer(prompt, chosen)
        rejected_tokens = self.build_tokenized_answer(prompt, rejected)
        for t in (prompt_tokens, chosen_tokens, rejected_tokens):
            t["prompt_input_ids"] = [tok.bos_token_id] + t["prompt_input_ids"]
            t["prompt_attention_mask"] = [1] + t["prompt_attention_mask"]
        for t in (chosen_tokens, rejected_tokens):
            t["input_ids"].append(tok.eos_token_id)
            t["attention_mask"].append(1)
        longer_response_length = max(len(chosen_tokens["input_ids"]), len(rejected_tokens["input_ids"]))
        for t in (chosen_tokens, rejected_tokens, prompt_tokens):
            if len(t["prompt_input_ids"]) + longer_response_length > self.max_length:
                assert self.truncation_mode == "keep_end"
                for k in ("prompt_input_ids", "prompt_attention_mask"):
                    t[k] = t[k][-self.max_prompt_length:]
        for t in (chosen_tokens, rejected_tokens):
            if len(t["prompt_input_ids"]) + longer_response_length > self.max_length:
                for k in ("input_ids", "attention_mask"):
                    t[k] = t[k][: self.max_length - self.max_prompt_length]
        batch = {}
        for side, t in (("chosen", chosen_tokens), ("rejected", rejected_tokens)):
            ids = t["prompt_input_ids"] + t["input_ids"]
            labels = ids[:]
            labels[: len(t["prompt_input_ids"])] = [self.label_pad_token_id] * len(t["prompt_input_ids"])
            batch[f"{side}_prompt_ids"] = t["prompt_input_ids"]
            batch[f"{side}_answer_ids"] = t["input_ids"]
            batch[f"{side}_input_ids"] = ids
            batch[f"{side}_attention_mask"] = t["prompt_attention_mask"] + t["attention_mask"]
            batch[f"{side}_labels"] = labels
        return batch


def get_batch_logps(logits, labels, mode, label_pad_token_id=-100):
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != label_pad_token_id
    labels[labels == label_pad_token_id] = 0
    per_token_logps = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
    if mode == "avg":
        return (per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)
    if mode == "norm":
        return -torch.norm((per_token_logps * loss_mask), p=2, dim=-1)
    return (per_token_logps * loss_mask).sum(-1)


def synthetic_dpo_examples(examples, tokenizer):
    """Two rows whose prompt is > 2048 tokens: 100000 has short answers (prompt keep_end truncation to 128);
    100001 also has a > 1920-token chosen answer (response truncation to max_length - max_prompt_length)."""
    pool = [e["prompt"] for e in examples] + [e["chosen"] for e in examples]
    parts, n = [], 0
    i = 0
    while n < 2300:
        parts.append(pool[i % len(pool)])
        n = len(tokenizer(tulu([{"role": "user", "content": "\n\n".join(parts)}]), add_special_tokens=False)
                ["input_ids"])
        i += 1
    long_prompt = "\n\n".join(parts) + "\n\nIn one sentence: which of the texts above is about code?"
    long_answer, i = [], 0
    while len(tokenizer("\n".join(long_answer), add_special_tokens=False)["input_ids"]) < 2100:
        long_answer.append(examples[10 + i % 12]["chosen"])
        i += 1
    return [
        {"id": 100000, "subset": "synthetic-long-prompt", "prompt": long_prompt,
         "chosen": "The C++, Go, Java, JavaScript, Python and Rust tasks are about code.",
         "rejected": "None of them."},
        {"id": 100001, "subset": "synthetic-long-prompt-long-response", "prompt": long_prompt,
         "chosen": "\n".join(long_answer), "rejected": "Only the first one."},
    ]


def dpo_rows(tokenizer, policy, ref, rows, check_logits=None):
    """Each row of `rows` with its TRL-tokenized ids and the policy's and reference's summed, avg and
    norm log-probs per side (fp32 subtraction for the reward, as in DPOInference.inference_step);
    `check_logits(policy_logits)` asserts what a family guarantees about them. The other make_*
    generators' DPO goldens; this file's own llama-dpo.json keeps its older key order below."""
    dt = DPOTok(tokenizer)
    out = []
    for ex in rows:
        prompt_text, tc, tr, _ = format_example(ex, tokenizer)
        b = dt.tokenize_row({"prompt": prompt_text, "text_chosen": tc, "text_rejected": tr})
        e = dict(ex)
        e.update(text_prompt=prompt_text, text_chosen=tc, text_rejected=tr)
        for side in ("chosen", "rejected"):
            e[f"{side}_prompt_ids"] = b[f"{side}_prompt_ids"]
            e[f"{side}_answer_ids"] = b[f"{side}_answer_ids"]
            ids = torch.tensor([b[f"{side}_input_ids"]])
            mask = torch.tensor([b[f"{side}_attention_mask"]])
            labels = torch.tensor([b[f"{side}_labels"]])
            with torch.no_grad():
                pl = policy(ids, attention_mask=mask).logits
                rl = ref(ids, attention_mask=mask).logits
            if check_logits is not None:
                check_logits(pl)
            ps = get_batch_logps(pl, labels, "sum")
            rs = get_batch_logps(rl, labels, "sum")
            e[f"policy_sum_{side}"] = ps.item()
            e[f"ref_sum_{side}"] = rs.item()
            e[f"reward_{side}"] = (ps - rs).item()
            e[f"policy_avg_{side}"] = get_batch_logps(pl, labels, "avg").item()
            e[f"policy_norm_{side}"] = get_batch_logps(pl, labels, "norm").item()
        out.append(e)
    return out


def dpo_case(examples):
    pdir, rdir = MODELS / "llama-policy", MODELS / "llama-ref"
    tokenizer = AutoTokenizer.from_pretrained(pdir)
    tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token_id = tokenizer.eos_token_id
        tokenizer.pad_token_id = tokenizer.eos_token_id
    assert tokenizer.chat_template is None  # -> FastChat tulu path
    policy = AutoModelForCausalLM.from_pretrained(pdir, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(rdir, dtype=torch.float32).eval()
    dt = DPOTok(tokenizer)
    rows = list(examples) + synthetic_dpo_examples(examples, tokenizer)
    out = []
    for ex in rows:
        prompt_text, tc, tr, _ = format_example(ex, tokenizer)
        b = dt.tokenize_row({"prompt": prompt_text, "text_chosen": tc, "text_rejected": tr})
        e = dict(ex)
        e.update(text_prompt=prompt_text, text_chosen=tc, text_rejected=tr)
        for side in ("chosen", "rejected"):
            e[f"{side}_prompt_ids"] = b[f"{side}_prompt_ids"]
            e[f"{side}_answer_ids"] = b[f"{side}_answer_ids"]
        for side in ("chosen", "rejected"):
            ids = torch.tensor([b[f"{side}_input_ids"]])
            mask = torch.tensor([b[f"{side}_attention_mask"]])
            labels = torch.tensor([b[f"{side}_labels"]])
            with torch.no_grad():
                pl = policy(ids, attention_mask=mask).logits
                rl = ref(ids, attention_mask=mask).logits
            ps = get_batch_logps(pl, labels, "sum")
            rs = get_batch_logps(rl, labels, "sum")
            e[f"policy_sum_{side}"] = ps.item()
            e[f"ref_sum_{side}"] = rs.item()
            e[f"reward_{side}"] = (ps - rs).item()  # fp32 subtraction, as in DPOInference.inference_step
            e[f"policy_avg_{side}"] = get_batch_logps(pl, labels, "avg").item()
            e[f"policy_norm_{side}"] = get_batch_logps(pl, labels, "norm").item()
        out.append(e)
    golden = {
        "case": "llama-dpo",
        "reference": REFERENCE,
        "kind": "dpo",
        "policy": "llama-policy",
        "ref": "llama-ref",
        "tokenizer": "llama-policy",
        "chat_template": "tulu",
        "max_length": DPOTok.max_length,
        "max_prompt_length": DPOTok.max_prompt_length,
        "examples": out,
    }
    dump_json(OUT / "llama-dpo.json", golden)
    return golden, dt.merges


# ---------------------------------------------------------------------------------------------------------
# checks + summary
# ---------------------------------------------------------------------------------------------------------
def check_classifier(g, worst_eager):
    ex = g["examples"]
    sc = [x for e in ex for x in e["scores_chosen"] + e["scores_rejected"]]
    wins = sum(1 for e in ex if win(e["scores_chosen"], e["scores_rejected"]))
    n = len(ex)
    for key in ("padded_batch_scores_chosen", "padded_batch_scores_rejected"):
        assert len(g[key]) == n, (g["case"], key, len(g[key]), n)
    padded = spread_from_golden(ex, {"scores_chosen": g["padded_batch_scores_chosen"],
                              "scores_rejected": g["padded_batch_scores_rejected"]})
    assert padded["win_flips"] == 0, (g["case"], padded)
    lens = [len(e[f"input_ids_{s}"]) for e in ex for s in ("chosen", "rejected")]
    b = g["bf16_bound"]
    print(f"  {g['case']:<20} n={n} scores [{min(sc):+.3f}, {max(sc):+.3f}] wins {wins}/{n} "
          f"tokens [{min(lens)}, {max(lens)}] |padded-b1|max={padded['max_abs_diff']:.3g} "
          f"|eager-sdpa|max={worst_eager:.3g}")
    for name, m in b["transformers"].items():
        print(f"    transformers bf16 {name:<13} vs fp32: max |diff| {m['max_abs_diff']:.4g}, "
              f"{m['win_flips']} win flips {m['flipped_ids']}")
    print(f"    bf16 bound: max |diff| {b['max_abs_diff']:.4g}, at most {b['max_win_flips']} win flips "
          f"({b['near_ties']} pairs within 2 x {b['max_abs_diff']:.3g} of a tie)")
    assert len(set(round(x, 6) for x in sc)) > len(sc) // 2, "scores look degenerate"
    assert max(abs(x) for x in sc) < 20
    for e in ex:
        for s in ("chosen", "rejected"):
            ids, m = e[f"input_ids_{s}"], e[f"attention_mask_{s}"]
            assert len(ids) == len(m) <= g["max_length"]
            if g["model"] == "mistral-rm":
                assert ids[:2] == [1, 1] and m[:2] == [0, 1] and all(m[1:]), (ids[:3], m[:3])
            else:
                assert all(m)
            if g["model"] == "llama-gqa-rm":
                assert ids[0] == 1 and ids[-1] == 2 and ids[1] != 1
    if g["case"] == "llama-gqa-rm-trunc":
        at = [(e["id"], s) for e in ex for s in ("chosen", "rejected") if len(e[f"input_ids_{s}"]) == 64]
        assert len(at) >= 5, at
        print(f"    {len(at)} of {2 * len(ex)} sequences truncated to exactly 64 tokens (all start with BOS 1, end with EOS 2)")


def main():
    print(f"reference: {REFERENCE}")
    if (transformers.__version__, torch.__version__.split("+")[0]) != (TRANSFORMERS_VERSION, TORCH_VERSION):
        sys.exit(f"make_fixtures.py: the goldens' reference is transformers {TRANSFORMERS_VERSION} on torch "
                 f"{TORCH_VERSION}; this python has transformers {transformers.__version__}, torch {torch.__version__}")
    if OUT.exists():
        shutil.rmtree(OUT)
    MODELS.mkdir(parents=True)
    _check_tulu_against_fastchat()
    build_models()
    idx = MODELS / "llama-gqa-rm" / "model.safetensors.index.json"
    shards = sorted(set(json.loads(idx.read_text())["weight_map"].values()))
    assert len(shards) >= 2, shards
    print(f"  llama-gqa-rm shards: {shards}")

    examples = load_examples()
    print("classifier goldens")
    for case, model_name, max_len in (
        ("llama-gqa-rm", "llama-gqa-rm", 2048),
        ("llama-gqa-rm-trunc", "llama-gqa-rm", 64),
        ("mistral-rm", "mistral-rm", 2048),
        ("qwen2-rm", "qwen2-rm", 2048),
    ):
        g, worst = classifier_case(case, model_name, max_len, examples)
        check_classifier(g, worst)

    print("DPO golden")
    g, merges = dpo_case(examples)
    ex = g["examples"]
    rw = [x for e in ex for x in (e["reward_chosen"], e["reward_rejected"])]
    wins = sum(1 for e in ex if e["reward_chosen"] > e["reward_rejected"])
    print(f"  llama-dpo            n={len(ex)} rewards [{min(rw):+.3f}, {max(rw):+.3f}] wins {wins}/{len(ex)} "
          f"merged-last-prompt-token fired {merges}x")
    for e in ex[-2:]:
        print(f"    synthetic {e['id']}: prompt ids {len(e['chosen_prompt_ids'])} (first {e['chosen_prompt_ids'][0]}), "
              f"chosen answer {len(e['chosen_answer_ids'])}, rejected answer {len(e['rejected_answer_ids'])}")
    assert len(ex[-2]["chosen_prompt_ids"]) == 128 and len(ex[-1]["chosen_answer_ids"]) == 1920

    total = 0
    print("files")
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"  {p.stat().st_size:>10}  {p.relative_to(OUT)}")
    print(f"  {total:>10}  total bytes")


if __name__ == "__main__":
    sys.exit(main())
