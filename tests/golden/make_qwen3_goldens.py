#!/usr/bin/env python3
"""Golden fixtures for herd's Qwen3, OLMo2 and InternLM2 backbones: tiny random-weight models + reference outputs.

Where each reference comes from:

  Qwen3, OLMo2  Hugging Face transformers 4.57.6 on torch 2.11.0 (CPU): Qwen3ForSequenceClassification,
                Qwen3ForCausalLM, Olmo2ForCausalLM, and Olmo2ForSequenceClassification, which 4.57.6 lacks and this
                script declares the way transformers declares the others (GenericForSequenceClassification over
                Olmo2PreTrainedModel, registered with AutoModelForSequenceClassification), run exactly as RewardBench's
                scripts/run_rm.py (+ RewardBenchPipeline) and scripts/run_dpo.py do (the pipeline and DPO helpers
                are make_fixtures.py's, imported, not copied).
  InternLM2     NOT in transformers: `InternLM2ForRewardModel` is remote code on the hub
                (internlm/internlm2-*-reward, modeling_internlm2.py), which cannot be fetched here. The model below
                (`InternLM2Transcribed`) is a TRANSCRIPTION of that file's eager forward: `wqkv` rearranged as
                "b q (h gs d) -> b q h gs d" with gs = 2 + num_key_value_groups (queries, then one key, then one
                value per kv head), rotary on rotate_half, softmax in float32 cast back to the query dtype,
                attention_norm / ffn_norm RMSNorms as Llama's, w2(silu(w1 x) * w3 x), the final `norm`, and
                `v_head` (hidden -> 1, no bias) read at the last attended token. The pipeline is rewardbench
                0.1.4's rewardbench/models/internlm.py (InternLMPipeline): encode without special tokens (the chat
                template writes BOS), append `reward_token_id` unless the text already ends with it, pad right,
                no truncation. As a cross-check the transcription is compared with transformers' Llama carrying the
                same weights split per kv head (it must agree within 1e-5 in fp32).
                Tokenizer: no tokenizer here covers InternLM2's real reward token 92527 ([UNUSED_TOKEN_130]) and
                a 92544-row embedding would not be tiny, so the tiny model uses the Llama-2 tokenizer (32000 ids)
                and configures `reward_token_id` 31999 in config.json (herd reads it from there, default 92527).

What it makes (everything under tests/golden/fixtures/qwen3/, which this script deletes and rewrites):

  models/qwen3-rm/       Qwen3ForSequenceClassification, num_labels 1, GQA (4 heads / 2 kv heads), head_dim 8 from
                         the config (not hidden/heads = 4), per-head q/k RMSNorm, GPT-2 tokenizer + ChatML template.
  models/olmo2-rm/       Olmo2ForSequenceClassification, num_labels 2, GQA (2 heads / 1 kv head), norms after attention and MLP, q/k RMSNorm
                         over the full projection width, Llama-2 tokenizer without template (FastChat tulu, add EOS).
  models/internlm2-rm/   InternLM2ForRewardModel (see above), GQA, fused wqkv, Llama-2 tokenizer + InternLM2 template.
  models/{qwen3,olmo2}-{policy,ref}/   *ForCausalLM DPO policy / reference (qwen3 tied embeddings, olmo2 untied),
                         without tokenizer files: the DPO goldens tokenize with olmo2-rm's (FastChat tulu).
  qwen3-rm.json, olmo2-rm.json, internlm2-rm.json   classifier goldens (make_fixtures.py's format)
  qwen3-dpo.json, olmo2-dpo.json                     DPO goldens (make_fixtures.py's llama-dpo format)

Weights are saved in bfloat16; golden numbers come from re-loading them in float32 (batch size 1, no padding), plus
RewardBench's padded batches of 8 and two bf16 draws from which the bf16 bound is derived (make_fixtures.py's rule).

Regenerate (from the repository root):
    $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_qwen3_goldens.py
"""

import json
import math
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_fixtures as mf  # noqa: E402  (its pipeline helpers; its main() is not run)

from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    Olmo2Config,
    AutoModelForSequenceClassification,
    Olmo2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3ForSequenceClassification,
)

from transformers.modeling_layers import GenericForSequenceClassification  # noqa: E402
from transformers.models.olmo2.modeling_olmo2 import Olmo2PreTrainedModel  # noqa: E402


class Olmo2ForSequenceClassification(GenericForSequenceClassification, Olmo2PreTrainedModel):
    """transformers 4.57.6 has no Olmo2ForSequenceClassification; this is the class exactly as transformers
    declares its others (Qwen3ForSequenceClassification is this same two-line mixin over Qwen3PreTrainedModel):
    the backbone plus a bias-free `score` head read at the rightmost non-pad token."""


AutoModelForSequenceClassification.register(Olmo2Config, Olmo2ForSequenceClassification)

OUT = HERE / "fixtures" / "qwen3"
MODELS = OUT / "models"
# make_fixtures.py's classifier_case/save_model write under these module globals
mf.OUT, mf.MODELS = OUT, MODELS

INTERNLM2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
INTERNLM2_REWARD_TOKEN = 31999
# the model folder whose tokenizer the DPO goldens use (the policies carry none)
DPO_TOKENIZER = "olmo2-rm"


def dims(**extra):
    d = dict(hidden_size=16, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, hidden_act="silu", attention_dropout=0.0)
    d.update(extra)
    return d


# ---------------------------------------------------------------------------------------------------------
# Qwen3 / OLMo2 models (transformers)
# ---------------------------------------------------------------------------------------------------------
def build_hf_models():
    cfg = Qwen3Config(vocab_size=50257, head_dim=8, rms_norm_eps=1e-6, rope_theta=1000000.0,
                      max_position_embeddings=32768, use_sliding_window=False, bos_token_id=50256,
                      eos_token_id=50256, pad_token_id=50256, num_labels=1, tie_word_embeddings=False,
                      attention_bias=False, **dims())
    torch.manual_seed(0)
    m = Qwen3ForSequenceClassification(cfg)
    assert tuple(m.model.layers[0].self_attn.q_norm.weight.shape) == (8,)
    d = mf.save_model(m, "qwen3-rm", seed=6006, embed_std=1.0, score_std=1.0)
    mf.copy_tokenizer(mf.TOK_GPT2, d, chat_template=mf.CHATML_TEMPLATE)

    cfg = Olmo2Config(vocab_size=32000, rms_norm_eps=1e-6, rope_theta=500000.0, max_position_embeddings=4096,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, num_labels=2, tie_word_embeddings=False,
                      attention_bias=False, **dims(num_attention_heads=2, num_key_value_heads=1))
    torch.manual_seed(0)
    m = Olmo2ForSequenceClassification(cfg)
    assert tuple(m.model.layers[0].self_attn.k_norm.weight.shape) == (1 * 8,)
    d = mf.save_model(m, "olmo2-rm", seed=7007, embed_std=1.0, score_std=0.3)
    mf.copy_tokenizer(mf.TOK_LLAMA2, d)

    # DPO policy / reference. Neither carries a tokenizer (run_dpo.py loads the policy's): both use olmo2-rm's
    # Llama-2 tokenizer without template (herd's --tokenizer), which keeps the fixtures smaller
    for family, seed in (("qwen3", 8008), ("olmo2", 9009)):
        for role, offset in (("policy", 0), ("ref", 1)):
            if family == "qwen3":
                cfg = Qwen3Config(vocab_size=32000, head_dim=8, rms_norm_eps=1e-6, rope_theta=1000000.0,
                                  max_position_embeddings=32768, bos_token_id=1, eos_token_id=2,
                                  tie_word_embeddings=True, **dims())
                model = Qwen3ForCausalLM(cfg)
            else:
                cfg = Olmo2Config(vocab_size=32000, rms_norm_eps=1e-6, rope_theta=500000.0,
                                  max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                                  tie_word_embeddings=False, **dims(num_attention_heads=2, num_key_value_heads=1))
                model = Olmo2ForCausalLM(cfg)
            torch.manual_seed(0)
            mf.save_model(model, f"{family}-{role}", seed=seed + offset, embed_std=0.5, score_std=0.0)


def dpo_case(family, examples):
    """make_fixtures.py's dpo_case for another policy/reference pair (same TRL tokenize_row, same sums)."""
    pdir, rdir = MODELS / f"{family}-policy", MODELS / f"{family}-ref"
    tokenizer = AutoTokenizer.from_pretrained(MODELS / DPO_TOKENIZER)
    tokenizer.pad_token = tokenizer.eos_token
    assert tokenizer.chat_template is None  # -> FastChat tulu path
    policy = AutoModelForCausalLM.from_pretrained(pdir, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(rdir, dtype=torch.float32).eval()
    rows = list(examples) + mf.synthetic_dpo_examples(examples, tokenizer)
    out = mf.dpo_rows(tokenizer, policy, ref, rows)
    golden = {
        "case": f"{family}-dpo",
        "reference": mf.REFERENCE,
        "kind": "dpo",
        "policy": f"{family}-policy",
        "ref": f"{family}-ref",
        "tokenizer": DPO_TOKENIZER,
        "chat_template": "tulu",
        "max_length": mf.DPOTok.max_length,
        "max_prompt_length": mf.DPOTok.max_prompt_length,
        "examples": out,
    }
    mf.dump_json(OUT / f"{family}-dpo.json", golden)
    rw = [x for e in out for x in (e["reward_chosen"], e["reward_rejected"])]
    wins = sum(1 for e in out if e["reward_chosen"] > e["reward_rejected"])
    print(f"  {family}-dpo n={len(out)} rewards [{min(rw):+.3f}, {max(rw):+.3f}] wins {wins}/{len(out)}")
    assert len(set(round(x, 4) for x in rw)) > len(rw) // 2


# ---------------------------------------------------------------------------------------------------------
# InternLM2 (transcription of the hub's remote code, see the docstring)
# ---------------------------------------------------------------------------------------------------------
INTERNLM2_CONFIG = dict(
    architectures=["InternLM2ForRewardModel"],
    model_type="internlm2",
    vocab_size=32000,
    hidden_size=16,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    hidden_act="silu",
    max_position_embeddings=32768,
    rms_norm_eps=1e-5,
    rope_theta=1000000.0,
    # dynamic NTK only changes frequencies past max_position_embeddings (InternLM2DynamicNTKScalingRotaryEmbedding)
    rope_scaling={"type": "dynamic", "factor": 2.0},
    bias=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=False,
    reward_token_id=INTERNLM2_REWARD_TOKEN,
    torch_dtype="bfloat16",
)


def internlm2_weights(seed):
    """Random weights under InternLM2's own names, in fp32 (distributed like make_fixtures.randomize_)."""
    c = INTERNLM2_CONFIG
    h, inter, d = c["hidden_size"], c["intermediate_size"], c["hidden_size"] // c["num_attention_heads"]
    qkv = (c["num_attention_heads"] + 2 * c["num_key_value_heads"]) * d
    g = torch.Generator().manual_seed(seed)
    n = lambda *shape: torch.randn(shape, generator=g, dtype=torch.float32)  # noqa: E731
    w = {"model.tok_embeddings.weight": 1.0 * n(c["vocab_size"], h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "attention_norm.weight"] = 1.0 + 0.1 * n(h)
        w[p + "attention.wqkv.weight"] = 0.3 * n(qkv, h)
        w[p + "attention.wo.weight"] = 0.15 * n(h, c["num_attention_heads"] * d)
        w[p + "ffn_norm.weight"] = 1.0 + 0.1 * n(h)
        w[p + "feed_forward.w1.weight"] = 0.15 * n(inter, h)
        w[p + "feed_forward.w3.weight"] = 0.15 * n(inter, h)
        w[p + "feed_forward.w2.weight"] = 0.15 * n(h, inter)
    w["model.norm.weight"] = 1.0 + 0.1 * n(h)
    w["v_head.weight"] = 1.0 * n(1, h)
    return w


class InternLM2Transcribed(torch.nn.Module):
    """The eager forward of modeling_internlm2.py's InternLM2ForRewardModel (see the module docstring)."""

    def __init__(self, weights, dtype):
        super().__init__()
        self.w = {k: v.to(dtype) for k, v in weights.items()}
        c = INTERNLM2_CONFIG
        self.heads, self.kv = c["num_attention_heads"], c["num_key_value_heads"]
        self.d = c["hidden_size"] // self.heads
        self.groups = self.heads // self.kv
        self.eps = c["rms_norm_eps"]
        self.layers = c["num_hidden_layers"]
        # InternLM2RotaryEmbedding: inv_freq in float32 on arange(0, dim, 2), cos/sin cached in float32,
        # cast to the activations' dtype when read
        self.inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, self.d, 2).float() / self.d))
        self.reward_token_id = c["reward_token_id"]

    def rms(self, x, weight):  # InternLM2RMSNorm
        dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x32.to(dtype)

    @staticmethod
    def rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def attention(self, p, x, cos, sin, mask):
        b, q, _ = x.shape
        qkv = x @ self.w[p + "attention.wqkv.weight"].T
        # rearrange(qkv, "b q (h gs d) -> b q h gs d", gs=2 + groups, d=head_dim)
        qkv = qkv.reshape(b, q, self.kv, 2 + self.groups, self.d)
        query = qkv[..., : self.groups, :].reshape(b, q, self.heads, self.d)  # "b q h gs d -> b q (h gs) d"
        key = qkv[..., -2, :]
        value = qkv[..., -1, :]
        query, key, value = (t.transpose(1, 2) for t in (query, key, value))
        query = query * cos + self.rotate_half(query) * sin
        key = key * cos + self.rotate_half(key) * sin
        key = key.repeat_interleave(self.groups, dim=1)  # repeat_kv
        value = value.repeat_interleave(self.groups, dim=1)
        scores = query @ key.transpose(2, 3) / math.sqrt(self.d) + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        out = (probs @ value).transpose(1, 2).reshape(b, q, self.heads * self.d)
        return out @ self.w[p + "attention.wo.weight"].T

    def hidden(self, input_ids, attention_mask):
        """The transcribed InternLM2Model forward: final-normed hidden states [batch, len, hidden]."""
        x = self.w["model.tok_embeddings.weight"][input_ids]
        b, n = input_ids.shape
        dtype = x.dtype
        pos = torch.arange(n, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(dtype)[None, None], emb.sin().to(dtype)[None, None]
        # _prepare_4d_causal_attention_mask: causal plus the padding mask, dtype min where hidden
        allowed = torch.ones(n, n, dtype=torch.bool).tril()[None, None] & attention_mask.bool()[:, None, None, :]
        mask = torch.zeros(b, 1, n, n, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        for i in range(self.layers):
            p = f"model.layers.{i}."
            x = x + self.attention(p, self.rms(x, self.w[p + "attention_norm.weight"]), cos, sin, mask)
            hmid = self.rms(x, self.w[p + "ffn_norm.weight"])
            ff = torch.nn.functional.silu(hmid @ self.w[p + "feed_forward.w1.weight"].T) * (
                hmid @ self.w[p + "feed_forward.w3.weight"].T)
            x = x + ff @ self.w[p + "feed_forward.w2.weight"].T
        return self.rms(x, self.w["model.norm.weight"])

    def forward(self, input_ids, attention_mask):
        x = self.hidden(input_ids, attention_mask)
        values = (x @ self.w["v_head.weight"].T).squeeze(-1)
        # InternLM2ForRewardModel.forward: the last attended token, which must be the reward token
        eos = attention_mask.size(1) - 1 - attention_mask.long().fliplr().argmax(dim=1, keepdim=True)
        assert torch.all(input_ids.gather(1, eos).squeeze(1) == self.reward_token_id)
        return values.gather(1, eos).squeeze(1)


def internlm_pipeline(tokenizer, model, samples):
    """rewardbench/models/internlm.py InternLMPipeline.__call__ (rewardbench 0.1.4)."""
    ids, masks = [], []
    for text in samples:
        input_ids = tokenizer.encode(text, return_tensors="pt", add_special_tokens=False)
        if input_ids[0, -1] != model.reward_token_id:
            input_ids = torch.cat([input_ids, torch.tensor([[model.reward_token_id]], dtype=torch.long)], dim=1)
        input_ids = input_ids.squeeze(0)
        ids.append(input_ids)
        masks.append(torch.ones(input_ids.shape, dtype=torch.bool))
    ids_p = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=tokenizer.pad_token_id)
    masks_p = torch.nn.utils.rnn.pad_sequence(masks, batch_first=True, padding_value=False)
    with torch.no_grad():
        scores = model(ids_p, masks_p)
    # rewardbench.py: scores.float().cpu().numpy().tolist() per side; one reward per text
    return [[s] for s in scores.float().tolist()], ids, masks


def internlm2_as_llama(weights, dtype):
    """Cross-check: the same weights as a transformers Llama (wqkv split per kv head), scored at the last token."""
    c = INTERNLM2_CONFIG
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    d, groups, h = c["hidden_size"] // heads, heads // kv, c["hidden_size"]
    cfg = LlamaConfig(vocab_size=c["vocab_size"], hidden_size=h, intermediate_size=c["intermediate_size"],
                      num_hidden_layers=c["num_hidden_layers"], num_attention_heads=heads, num_key_value_heads=kv,
                      rms_norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"],
                      max_position_embeddings=c["max_position_embeddings"], tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    sd = {"model.embed_tokens.weight": weights["model.tok_embeddings.weight"],
          "model.norm.weight": weights["model.norm.weight"], "lm_head.weight": torch.zeros(c["vocab_size"], h)}
    for i in range(c["num_hidden_layers"]):
        p, q = f"model.layers.{i}.", f"model.layers.{i}."
        wqkv = weights[p + "attention.wqkv.weight"].reshape(kv, groups + 2, d, h)
        sd[q + "self_attn.q_proj.weight"] = wqkv[:, :groups].reshape(heads * d, h)
        sd[q + "self_attn.k_proj.weight"] = wqkv[:, groups].reshape(kv * d, h)
        sd[q + "self_attn.v_proj.weight"] = wqkv[:, groups + 1].reshape(kv * d, h)
        sd[q + "self_attn.o_proj.weight"] = weights[p + "attention.wo.weight"]
        sd[q + "input_layernorm.weight"] = weights[p + "attention_norm.weight"]
        sd[q + "post_attention_layernorm.weight"] = weights[p + "ffn_norm.weight"]
        sd[q + "mlp.gate_proj.weight"] = weights[p + "feed_forward.w1.weight"]
        sd[q + "mlp.up_proj.weight"] = weights[p + "feed_forward.w3.weight"]
        sd[q + "mlp.down_proj.weight"] = weights[p + "feed_forward.w2.weight"]
    model.load_state_dict(sd)
    model = model.to(dtype).eval()
    v_head = weights["v_head.weight"].to(dtype)

    def score(ids):
        with torch.no_grad():
            hidden = model.model(torch.tensor([ids])).last_hidden_state
        return (hidden[0, -1] @ v_head.T).item()
    return score


def internlm2_case(examples):
    d = MODELS / "internlm2-rm"
    d.mkdir(parents=True, exist_ok=True)
    weights = internlm2_weights(seed=10010)
    # saved in bf16: the golden re-loads exactly these values
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()}, d / "model.safetensors",
              metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps(INTERNLM2_CONFIG, indent=2) + "\n", encoding="utf-8")
    mf.copy_tokenizer(mf.TOK_LLAMA2, d, chat_template=INTERNLM2_TEMPLATE)
    stored = {k: v.to(torch.float32) for k, v in load_file(d / "model.safetensors").items()}
    tok = AutoTokenizer.from_pretrained(d)
    tok.truncation_side = "left"
    if tok.pad_token_id is None:  # rewardbench.py: pad = eos when the tokenizer has none
        tok.pad_token_id = tok.eos_token_id
    model = InternLM2Transcribed(stored, torch.float32)
    llama_score = internlm2_as_llama(stored, torch.float32)
    out, worst_llama = [], 0.0
    for ex in examples:
        _, tc, tr, tmpl = mf.format_example(ex, tok)
        assert tmpl is None
        e = dict(ex)
        e["text_chosen"], e["text_rejected"] = tc, tr
        for side, text in (("chosen", tc), ("rejected", tr)):
            scores, ids, masks = internlm_pipeline(tok, model, [text])
            e[f"input_ids_{side}"] = ids[0].tolist()
            e[f"attention_mask_{side}"] = masks[0].long().tolist()
            e[f"scores_{side}"] = scores[0]
            worst_llama = max(worst_llama, abs(llama_score(ids[0].tolist()) - scores[0][0]))
        out.append(e)
    assert worst_llama < 1e-5, worst_llama
    print(f"  internlm2 transcription vs transformers Llama with wqkv split: max |diff| {worst_llama:.2e}")

    def padded(m):
        s = {"scores_chosen": [], "scores_rejected": []}
        for i in range(0, len(out), mf.PADDED_BATCH_SIZE):
            batch = out[i:i + mf.PADDED_BATCH_SIZE]
            for side in ("chosen", "rejected"):
                sc, _, _ = internlm_pipeline(tok, m, [e[f"text_{side}"] for e in batch])
                s[f"scores_{side}"].extend(sc)
        return s

    pad32 = padded(model)
    model16 = InternLM2Transcribed(stored, torch.bfloat16)
    bf16 = {"scores_chosen": [], "scores_rejected": []}
    for e in out:
        for side in ("chosen", "rejected"):
            sc, _, _ = internlm_pipeline(tok, model16, [e[f"text_{side}"]])
            bf16[f"scores_{side}"].append(sc[0])
    bf16_padded = padded(model16)
    golden = {
        "case": "internlm2-rm",
        "reference": "transcription of the hub's modeling_internlm2.py InternLM2ForRewardModel (eager) + "
                     "rewardbench 0.1.4 InternLMPipeline, torch " + mf.TORCH_VERSION + " (CPU, fp32 unless stated)",
        "model": "internlm2-rm",
        "kind": "classifier",
        "chat_template": None,
        "max_length": 2048,
        "padding_side": "right",
        "pad_token_id": tok.pad_token_id,
        "reward_token_id": INTERNLM2_REWARD_TOKEN,
        "examples": out,
        "padded_batch_size": mf.PADDED_BATCH_SIZE,
        "padded_batch_scores_chosen": pad32["scores_chosen"],
        "padded_batch_scores_rejected": pad32["scores_rejected"],
        "bf16": bf16,
        "bf16_padded_batch": bf16_padded,
        "bf16_bound": mf.bf16_bound(out, {"batch_size_1": bf16, "padded_batch": bf16_padded}),
    }
    mf.dump_json(OUT / "internlm2-rm.json", golden)
    return golden


def check_internlm2(g):
    ex = g["examples"]
    for e in ex:
        for s in ("chosen", "rejected"):
            ids = e[f"input_ids_{s}"]
            assert ids[0] == 1 and ids[1] != 1 and ids[-1] == INTERNLM2_REWARD_TOKEN, ids[:3]
            assert INTERNLM2_REWARD_TOKEN not in ids[:-1]
            assert len(ids) < g["max_length"], len(ids)  # the pipeline does not truncate: stay below
    padded = mf.spread_from_golden(ex, {"scores_chosen": g["padded_batch_scores_chosen"],
                                        "scores_rejected": g["padded_batch_scores_rejected"]})
    assert padded["win_flips"] == 0 and padded["max_abs_diff"] < 1e-5, padded
    sc = [x for e in ex for x in e["scores_chosen"] + e["scores_rejected"]]
    wins = sum(1 for e in ex if mf.win(e["scores_chosen"], e["scores_rejected"]))
    b = g["bf16_bound"]
    print(f"  internlm2-rm n={len(ex)} scores [{min(sc):+.3f}, {max(sc):+.3f}] wins {wins}/{len(ex)} "
          f"|padded-b1|max={padded['max_abs_diff']:.3g}; bf16 bound {b['max_abs_diff']:.4g}, "
          f"{b['max_win_flips']} flips")
    assert len(set(round(x, 6) for x in sc)) > len(sc) // 2, "scores look degenerate"


def main():
    print(f"reference: {mf.REFERENCE}")
    if (mf.transformers.__version__, torch.__version__.split("+")[0]) != (mf.TRANSFORMERS_VERSION,
                                                                           mf.TORCH_VERSION):
        sys.exit(f"make_qwen3_goldens.py: needs transformers {mf.TRANSFORMERS_VERSION} on torch {mf.TORCH_VERSION}")
    if OUT.exists():
        shutil.rmtree(OUT)
    MODELS.mkdir(parents=True)
    build_hf_models()
    examples = mf.load_examples()
    print("classifier goldens")
    for case in ("qwen3-rm", "olmo2-rm"):
        g, worst = mf.classifier_case(case, case, 2048, examples)
        mf.check_classifier(g, worst)
    check_internlm2(internlm2_case(examples))
    print("DPO goldens")
    for family in ("qwen3", "olmo2"):
        dpo_case(family, examples)
    total = 0
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
    print(f"  {total} bytes under {OUT.relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    sys.exit(main())
