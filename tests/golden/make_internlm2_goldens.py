#!/usr/bin/env python3
"""Golden fixtures for herd's InternLM2ForCausalLM (DPO) and InternLM2ForSequenceClassification classes.

Where each reference comes from:

  Backbone     NOT in transformers: InternLM2's modeling_internlm2.py is remote code on the hub. The backbone is
               make_qwen3_goldens.py's TRANSCRIPTION of its eager forward (`InternLM2Transcribed`: fused `wqkv` split
               "b q (h gs d)", rotary on rotate_half with positions arange(len) whatever the padding, softmax in float32,
               RMSNorms, w2(silu(w1 x) * w3 x), final `norm`), imported from that script (its main() is not run; that
               script also checks the transcription against transformers' Llama with wqkv split, within 1e-5).
  Heads        TRANSCRIBED from the same file (read from public copies of the hub's modeling_internlm2.py):
               InternLM2ForCausalLM.forward: `logits = self.output(hidden_states); logits = logits.float()`;
               InternLM2ForSequenceClassification.forward ("Copied from transformers ... LlamaForSequenceClassification"
               of the transformers 4.3x era): `logits = self.score(hidden_states)` (no bias), read at
               `sequence_lengths = torch.eq(input_ids, pad_token_id).int().argmax(-1) - 1`, `% input_ids.shape[-1]`
               (the first pad minus one, over the batch as padded).
  Pipelines    make_fixtures.py's, imported: DPO is make_fixtures.dpo_rows (TRL tokenize_row and RewardBench's
               log-prob sums, policy vs a reference model); the classifier is RewardBench's `rewardbench` CLI run
               (rewardbench/rewardbench.py: RewardBenchPipeline, `padding_side = "left"`, batches of 8 examples in
               dataset order, chosen and rejected texts in separate calls, pad = EOS): make_fixtures.rb_pipeline over
               make_fixtures.padded_batch_scores with a left-padding tokenizer. With the first-pad rule a row shorter
               than its batch's longest is read at its last column (its appended EOS), the longest at the token before
               its EOS: the scores depend on the batches, which is what herd's legacy pooling replays.

Tokenizer: the Llama-2 tokenizer of ../shared/data/tokenizers/llama2 (no chat template: FastChat tulu; the
classifier appends EOS), not copied. Rows: make_fixtures.load_examples (22 real pairs), plus
make_fixtures.synthetic_dpo_examples for DPO.

What it makes (under tests/golden/fixtures/internlm2/, which this script deletes and rewrites):

  models/internlm2-policy/, models/internlm2-ref/   InternLM2ForCausalLM (untied `output`), InternLM2's own weight
                                                    names, bf16, the shape of make_qwen3_goldens.INTERNLM2_CONFIG
  models/internlm2-cls/                             InternLM2ForSequenceClassification, num_labels 1, pad_token_id 2
  internlm2-dpo.json   DPO golden (make_fixtures.dpo_rows keys) and "bf16": the rewards with both models in bf16
  internlm2-cls.json   classifier golden: per example the CLI's scores (fp32), "bf16" and "bf16_bound"
                       (make_fixtures.py's rule), and "batch_size_1" scores for information (a different pooling)

Regenerate (from the repository root):
    $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_internlm2_goldens.py
"""

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_fixtures as mf  # noqa: E402  (pipelines)
import make_qwen3_goldens as q3  # noqa: E402  (the InternLM2 transcription; importing runs nothing)

OUT = HERE / "fixtures" / "internlm2"
MODELS = OUT / "models"
mf.OUT, mf.MODELS = OUT, MODELS  # make_qwen3_goldens set them to its own folder at import
MAX_LENGTH = 2048
PAD = 2  # the Llama-2 tokenizer has no pad token: RewardBench uses EOS, also as model.config.pad_token_id


def config(architecture, **extra):
    c = {k: v for k, v in q3.INTERNLM2_CONFIG.items() if k != "reward_token_id"}
    c.update(architectures=[architecture], pad_token_id=PAD, **extra)
    return c


def weights(seed, head, head_shape, head_std):
    """make_qwen3_goldens.internlm2_weights (the backbone under InternLM2's names) with `head` in place of v_head."""
    w = q3.internlm2_weights(seed)
    del w["v_head.weight"]
    g = torch.Generator().manual_seed(seed + 1)
    w[head] = head_std * torch.randn(head_shape, generator=g, dtype=torch.float32)
    return w


def save(name, cfg, w):
    d = MODELS / name
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in w.items()}, d / "model.safetensors",
              metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    # the golden re-loads exactly the stored (bf16) values
    return {k: v.to(torch.float32) for k, v in load_file(d / "model.safetensors").items()}


class CausalLM(q3.InternLM2Transcribed):
    """InternLM2ForCausalLM.forward: `output` on the hidden states, then `.float()`."""

    def forward(self, input_ids, attention_mask=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with torch.no_grad():
            logits = self.hidden(input_ids, attention_mask) @ self.w["output.weight"].T
        return SimpleNamespace(logits=logits.float())


class SequenceClassification(q3.InternLM2Transcribed):
    """InternLM2ForSequenceClassification.forward: `score` read at the first pad minus one (mod len)."""

    def forward(self, input_ids, attention_mask=None):
        with torch.no_grad():
            logits = self.hidden(input_ids, attention_mask) @ self.w["score.weight"].T
        at = (torch.eq(input_ids, PAD).int().argmax(-1) - 1) % input_ids.shape[-1]
        return SimpleNamespace(logits=logits[torch.arange(input_ids.shape[0]), at])


def tokenizer_llama2():
    tokenizer = AutoTokenizer.from_pretrained(mf.TOK_LLAMA2)
    assert tokenizer.chat_template is None and tokenizer.pad_token_id is None
    return tokenizer


def dpo_case(examples):
    cfg = config("InternLM2ForCausalLM")
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    policy_w = save("internlm2-policy", cfg, weights(12012, "output.weight", (v, h), 0.5))
    ref_w = save("internlm2-ref", cfg, weights(12014, "output.weight", (v, h), 0.5))
    tokenizer = tokenizer_llama2()
    tokenizer.pad_token = tokenizer.eos_token
    rows = list(examples) + mf.synthetic_dpo_examples(examples, tokenizer)
    out = mf.dpo_rows(tokenizer, CausalLM(policy_w, torch.float32), CausalLM(ref_w, torch.float32), rows)
    bf16_rows = mf.dpo_rows(tokenizer, CausalLM(policy_w, torch.bfloat16), CausalLM(ref_w, torch.bfloat16), rows)
    bf16 = {f"reward_{side}": [e[f"reward_{side}"] for e in bf16_rows] for side in ("chosen", "rejected")}
    golden = {
        "case": "internlm2-dpo",
        "reference": "transcription of the hub's modeling_internlm2.py InternLM2ForCausalLM (eager) + make_fixtures "
                     "DPO steps, torch " + mf.TORCH_VERSION + " (CPU, fp32 unless stated)",
        "kind": "dpo",
        "policy": "internlm2-policy",
        "ref": "internlm2-ref",
        "tokenizer": "tokenizers/llama2",
        "chat_template": "tulu",
        "max_length": mf.DPOTok.max_length,
        "max_prompt_length": mf.DPOTok.max_prompt_length,
        "examples": out,
        "bf16": bf16,
    }
    mf.dump_json(OUT / "internlm2-dpo.json", golden)
    rw = [x for e in out for x in (e["reward_chosen"], e["reward_rejected"])]
    wins = sum(1 for e in out if e["reward_chosen"] > e["reward_rejected"])
    worst = max(abs(e[f"reward_{s}"] - bf16[f"reward_{s}"][i]) for i, e in enumerate(out) for s in ("chosen", "rejected"))
    print(f"  internlm2-dpo n={len(out)} rewards [{min(rw):+.3f}, {max(rw):+.3f}] wins {wins}/{len(out)}; "
          f"bf16 vs fp32 max |diff| {worst:.4g}")
    assert len(set(round(x, 4) for x in rw)) > len(rw) // 2


def classifier_case(examples):
    cfg = config("InternLM2ForSequenceClassification", num_labels=1)
    w = save("internlm2-cls", cfg, weights(12016, "score.weight", (1, cfg["hidden_size"]), 1.0))
    tok = tokenizer_llama2()
    # rewardbench.py: pad = EOS, left padding, EOS appended (no chat template)
    tok.pad_token_id = tok.eos_token_id
    tok.padding_side = "left"
    tok.truncation_side = "left"
    tok.add_eos_token = True
    model = SequenceClassification(w, torch.float32)
    out, alone = [], {"scores_chosen": [], "scores_rejected": []}
    for ex in examples:
        _, tc, tr, tmpl = mf.format_example(ex, tok)
        assert tmpl == "tulu"
        e = dict(ex)
        e["text_chosen"], e["text_rejected"] = tc, tr
        for side, text in (("chosen", tc), ("rejected", tr)):
            scores, inputs = mf.rb_pipeline(tok, model, [text], MAX_LENGTH)
            ids = inputs["input_ids"][0].tolist()
            assert ids[-1] == PAD and PAD not in ids[:-1], "one EOS, at the end"
            e[f"input_ids_{side}"] = ids
            e[f"attention_mask_{side}"] = inputs["attention_mask"][0].tolist()
            alone[f"scores_{side}"].append(scores[0])
        out.append(e)
    batched = mf.padded_batch_scores(tok, model, out, MAX_LENGTH)
    for i, e in enumerate(out):
        e["scores_chosen"], e["scores_rejected"] = batched["scores_chosen"][i], batched["scores_rejected"][i]
    bf16 = mf.padded_batch_scores(tok, SequenceClassification(w, torch.bfloat16), out, MAX_LENGTH)
    golden = {
        "case": "internlm2-cls",
        "reference": "transcription of the hub's modeling_internlm2.py InternLM2ForSequenceClassification (eager) + "
                     "the rewardbench CLI's RewardBenchPipeline run (left padding, batches of 8), torch "
                     + mf.TORCH_VERSION + " (CPU, fp32 unless stated)",
        "model": "internlm2-cls",
        "tokenizer": "tokenizers/llama2",
        "kind": "classifier",
        "chat_template": "tulu",
        "max_length": MAX_LENGTH,
        "padding_side": "left",
        "pad_token_id": PAD,
        "batch_size": mf.PADDED_BATCH_SIZE,
        "examples": out,
        "batch_size_1": alone,
        "bf16": bf16,
        "bf16_bound": mf.bf16_bound(out, {"batches": bf16}),
    }
    mf.dump_json(OUT / "internlm2-cls.json", golden)
    sc = [x for e in out for x in e["scores_chosen"] + e["scores_rejected"]]
    wins = sum(1 for e in out if mf.win(e["scores_chosen"], e["scores_rejected"]))
    moved = mf.spread_from_golden(out, alone)
    b = golden["bf16_bound"]
    print(f"  internlm2-cls n={len(out)} scores [{min(sc):+.3f}, {max(sc):+.3f}] wins {wins}/{len(out)}; "
          f"batch size 1 (another pooled token) moves scores by {moved['max_abs_diff']:.3g}, "
          f"{moved['win_flips']} flips; bf16 bound {b['max_abs_diff']:.4g}, {b['max_win_flips']} flips")
    assert moved["max_abs_diff"] > 1e-2, "the first-pad rule must matter on these batches"
    assert len(set(round(x, 6) for x in sc)) > len(sc) // 2, "scores look degenerate"


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    MODELS.mkdir(parents=True)
    examples = mf.load_examples()
    print("DPO golden")
    dpo_case(examples)
    print("classifier golden")
    classifier_case(examples)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"  {total} bytes under {OUT.relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    sys.exit(main())
