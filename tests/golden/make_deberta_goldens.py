#!/usr/bin/env python3
"""Golden fixtures for herd's DeBERTa-v2/v3 encoder (OpenAssistant's deberta-v3 reward models).

Reference: Hugging Face transformers 4.57.6 on torch 2.11.0 (CPU): DebertaV2ForSequenceClassification
and DebertaV2TokenizerFast run as they are, fed exactly as RewardBench's scripts/run_rm.py +
RewardBenchPipeline feed a default ("Seq. Classifier") model. The formatting, pipeline and bf16 bound
helpers are make_fixtures.py's (imported, not re-run; its own fixtures are left alone):
  * no chat template on a DeBERTa tokenizer, so the FastChat "tulu" template formats the pair (the
    `tulu` helper there is cross-checked against fastchat);
  * tokenizer(text, truncation=True, max_length, padding=True): the post-processor adds
    "[CLS] ... [SEP]"; left truncation (run_rm.py sets truncation_side = "left");
  * the score is the raw logit of ContextPooler(hidden[:, 0]) -> classifier: the first token.

Transcribed, not run from a reference: nothing. The tokenizer is built here, since no DeBERTa tokenizer is
stored under ../shared/data: a small SentencePiece unigram model is trained (sentencepiece 0.2.3, from
~/.cache/herd/pylib-spm) on the prompts of the shared data rows, with DeBERTa-v3's special-token layout
([PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3), and converted by transformers' own DebertaV2Converter
(DebertaV2TokenizerFast(vocab_file=..., from_slow=True)), which adds [MASK] after the pieces as the
real deberta-v3 tokenizers do. Only tokenizer.json, tokenizer_config.json and special_tokens_map.json
are kept in the model folders.

What it writes (tests/golden/fixtures/deberta/, which this script deletes and rewrites):

  models/deberta-v3-rm/  DebertaV2ForSequenceClassification, num_labels 1, v3 layout as in
                         OpenAssistant/reward-model-deberta-v3-large-v2: relative_attention, no absolute
                         positions (position_biased_input false), position_buckets (8 here, 256 there) with log
                         buckets (max_relative_positions 64 here so long rows reach the clamp), pos_att_type
                         p2c|c2p, share_att_key, norm_rel_ebd layer_norm, type_vocab_size 0, gelu pooler.
  models/deberta-v2-rm/  v2 / v1-style variant: absolute position embeddings (position_biased_input true),
                         token type embeddings (type_vocab_size 2), embedding_size 24 != hidden_size (embed_proj),
                         no buckets (max_relative_positions 32: plain clamped distances), separate pos_key_proj /
                         pos_query_proj (share_att_key false), no rel LayerNorm, a conv layer (conv_kernel_size
                         3, conv_act gelu) as in deberta-v2-xlarge, num_labels 2, tanh pooler.
  deberta-v3-rm.json, deberta-v3-rm-trunc.json (max_length 96), deberta-v2-rm.json: per example the texts,
                         input ids, fp32 scores at batch size 1; RewardBench run_rm.py's padded batches of 8
                         (tokenizer's padding side: right for DeBERTa); bf16 draws and the bf16 bound (the rule
                         of make_fixtures.py). For information only, "cli_left_padded": the `rewardbench` CLI's
                         batches, which pad on the LEFT (rewardbench.py sets padding_side = "left"), where
                         ContextPooler reads column 0, a [PAD] for every row shorter than its batch's longest.

Weights are saved in bfloat16; every golden number is computed by re-loading the saved folder in float32
(the weights the Rust side loads). Deterministic (fixed seeds, one thread).

Regenerate (from the repository root):
    PYTHONPATH=$HOME/.cache/herd/pylib-spm $HOME/.cache/herd/venv-torch-2.11.0/bin/python \\
        tests/golden/make_deberta_goldens.py
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import sentencepiece as spm
import torch
import transformers
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2TokenizerFast

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_fixtures as mf  # noqa: E402  (helpers only; its main() is not run)

OUT = HERE / "fixtures" / "deberta"
MODELS = OUT / "models"
VOCAB = 1200
TOKENIZER_FILES = mf.TOKENIZER_FILES


def build_tokenizer(dst: Path) -> None:
    """A small deberta-v3-style SentencePiece unigram tokenizer, converted by transformers."""
    texts = []
    for fname in ("rewardbench-llmbar.jsonl", "rewardbench-hep.jsonl"):
        with open(mf.DATA / fname, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                texts.append(r["prompt"])
                texts.append(r["chosen"])
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(t.replace("\n", " ") for t in texts), encoding="utf-8")
        prefix = str(Path(tmp) / "spm")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=prefix, vocab_size=VOCAB, model_type="unigram",
            pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]",
            unk_id=3, unk_piece="[UNK]", character_coverage=0.9995, seed_sentencepiece_size=20000,
            num_threads=1, input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2,
        )
        tok = DebertaV2TokenizerFast(vocab_file=prefix + ".model", from_slow=True)
        tmp_out = Path(tmp) / "tok"
        tok.save_pretrained(tmp_out)
        dst.mkdir(parents=True, exist_ok=True)
        for f in TOKENIZER_FILES:
            shutil.copyfile(tmp_out / f, dst / f)
    assert tok.convert_tokens_to_ids(["[PAD]", "[CLS]", "[SEP]", "[UNK]"]) == [0, 1, 2, 3]
    assert tok.convert_tokens_to_ids("[MASK]") == VOCAB, tok.convert_tokens_to_ids("[MASK]")


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Every parameter seeded random (fp32), so that layout or masking mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("LayerNorm.weight"):
                v = 1.0 + 0.1 * n
            elif name.endswith(".bias"):
                v = 0.1 * n
            elif name.endswith(("word_embeddings.weight", "rel_embeddings.weight", "position_embeddings.weight",
                                "token_type_embeddings.weight")):
                v = 1.0 * n
            elif name.endswith(("query_proj.weight", "key_proj.weight", "pos_key_proj.weight",
                                "pos_query_proj.weight")):
                v = 0.3 * n  # sharp attention, so that mask and relative-position errors show
            elif name == "classifier.weight":
                v = 0.3 * n
            elif name.endswith(".weight") and p.dim() in (2, 3):  # value, dense, conv
                v = 0.15 * n
            else:
                raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(v)


def common_dims():
    return dict(
        vocab_size=VOCAB + 8,  # the embedding table is wider than the tokenizer, as in deberta-v3
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        hidden_act="gelu", layer_norm_eps=1e-7, pad_token_id=0, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, pooler_dropout=0,
    )


def build_models():
    tok_dir = OUT / "tokenizer-build"
    build_tokenizer(tok_dir)
    v3 = DebertaV2Config(
        **common_dims(), max_position_embeddings=512, relative_attention=True, position_buckets=8,
        max_relative_positions=64, pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm",
        position_biased_input=False, type_vocab_size=0, pooler_hidden_act="gelu", num_labels=1,
    )
    v2 = DebertaV2Config(
        **common_dims(), max_position_embeddings=2048, embedding_size=24, relative_attention=True,
        max_relative_positions=32, pos_att_type=["p2c", "c2p"], share_att_key=False, norm_rel_ebd="none",
        position_biased_input=True, type_vocab_size=2, conv_kernel_size=3, conv_act="gelu",
        pooler_hidden_act="tanh", num_labels=2,
    )
    for name, cfg, seed in (("deberta-v3-rm", v3, 7007), ("deberta-v2-rm", v2, 8008)):
        torch.manual_seed(0)
        model = DebertaV2ForSequenceClassification(cfg)
        randomize_(model, seed)
        d = MODELS / name
        model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
        for f in TOKENIZER_FILES:
            shutil.copyfile(tok_dir / f, d / f)
    shutil.rmtree(tok_dir)


def left_padded_scores(tok, model, out, max_length):
    """The `rewardbench` CLI's batches: the same, padded on the left (rewardbench.py L410)."""
    tok.padding_side = "left"
    try:
        return mf.padded_batch_scores(tok, model, out, max_length)
    finally:
        tok.padding_side = "right"


def case(name, model_name, max_length, examples):
    d = MODELS / model_name
    tok, model = mf.load_rm(d, torch.float32)
    assert tok.chat_template is None and tok.padding_side == "right", (tok.chat_template, tok.padding_side)
    out = []
    for ex in examples:
        _, tc, tr, tmpl = mf.format_example(ex, tok)
        e = dict(ex)
        e["text_chosen"], e["text_rejected"] = tc, tr
        for side, text in (("chosen", tc), ("rejected", tr)):
            scores, inputs = mf.rb_pipeline(tok, model, [text], max_length)
            ids = inputs["input_ids"][0].tolist()
            assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id, (e["id"], ids[:3], ids[-3:])
            assert all(inputs["attention_mask"][0].tolist()), e["id"]
            e[f"input_ids_{side}"] = ids
            e[f"attention_mask_{side}"] = inputs["attention_mask"][0].tolist()
            e[f"scores_{side}"] = scores[0]
        out.append(e)
    lengths = [len(e[f"input_ids_{s}"]) for e in out for s in ("chosen", "rejected")]
    padded = mf.padded_batch_scores(tok, model, out, max_length)
    # right padding (run_rm.py with a DeBERTa tokenizer) leaves [CLS] at column 0: batch invariant
    batch_effect = mf.spread_from_golden(out, padded)
    assert batch_effect["max_abs_diff"] < 1e-5 and batch_effect["win_flips"] == 0, batch_effect
    cli = left_padded_scores(tok, model, out, max_length)
    tok16, model16 = mf.load_rm(d, torch.bfloat16)
    bf16 = {"scores_chosen": [], "scores_rejected": []}
    for e in out:
        for side in ("chosen", "rejected"):
            s, inputs = mf.rb_pipeline(tok16, model16, [e[f"text_{side}"]], max_length)
            assert inputs["input_ids"][0].tolist() == e[f"input_ids_{side}"]
            bf16[f"scores_{side}"].append(s[0])
    bf16_padded = mf.padded_batch_scores(tok16, model16, out, max_length)
    golden = {
        "case": name,
        "reference": mf.REFERENCE,
        "model": model_name,
        "kind": "classifier",
        "chat_template": tmpl,
        "max_length": max_length,
        "padding_side": tok.padding_side,
        "pad_token_id": model.config.pad_token_id,
        "token_lengths": {"min": min(lengths), "max": max(lengths)},
        "examples": out,
        "padded_batch_size": mf.PADDED_BATCH_SIZE,
        "padded_batch_scores_chosen": padded["scores_chosen"],
        "padded_batch_scores_rejected": padded["scores_rejected"],
        "bf16": bf16,
        "bf16_padded_batch": bf16_padded,
        "bf16_bound": mf.bf16_bound(out, {"batch_size_1": bf16, "padded_batch": bf16_padded}),
        "cli_left_padded": {
            "note": "rewardbench CLI batches padded on the left: ContextPooler reads column 0, a [PAD] for "
                    "every row shorter than its batch's longest; herd does not reproduce this",
            "vs_batch_size_1": mf.spread_from_golden(out, cli),
            **cli,
        },
    }
    mf.dump_json(OUT / f"{name}.json", golden)
    print(f"{name}: tokens {min(lengths)}..{max(lengths)}, bf16 bound {golden['bf16_bound']['max_abs_diff']:.4f}, "
          f"CLI left padding vs batch size 1: {golden['cli_left_padded']['vs_batch_size_1']['win_flips']} flips, "
          f"max |diff| {golden['cli_left_padded']['vs_batch_size_1']['max_abs_diff']:.3f}")
    return golden


def main():
    assert transformers.__version__ == mf.TRANSFORMERS_VERSION, transformers.__version__
    assert torch.__version__.split("+")[0] == mf.TORCH_VERSION, torch.__version__
    assert spm.__version__ == "0.2.3", spm.__version__
    if OUT.exists():
        shutil.rmtree(OUT)
    build_models()
    examples = mf.load_examples()
    case("deberta-v3-rm", "deberta-v3-rm", 2048, examples)
    case("deberta-v3-rm-trunc", "deberta-v3-rm", 96, examples)
    case("deberta-v2-rm", "deberta-v2-rm", 2048, examples)


if __name__ == "__main__":
    main()
