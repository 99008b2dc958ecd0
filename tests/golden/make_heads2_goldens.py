#!/usr/bin/env python3
"""Goldens for herd's second set of custom reward heads (worker/engine/src/models/reward_heads/):
GRM's value head on a Gemma 2 body, Eurus-RM's regression head on a Mistral body, and LDL-Reward's
label-distribution head on a Gemma 2 body with its side files.

Reference: the published rewardbench 0.1.4 package (its models/ code and REWARD_MODEL_CONFIG) with
its pinned transformers 4.51.0, on CPU, imported through tests/golden/rbref.py (runtime-only CPU
patches). The run around the pipelines is make_heads_goldens.py's (imported from it, not re-run):
FastChat "tulu" formatting (the Llama-2 tokenizer of ../shared/data has no chat template, so the
tokenizer appends EOS), `padding_side = "left"`, `truncation_side = "left"`, max_length 2048,
pad = EOS written to `model.config.pad_token_id`, the pipelines' "cuda" moves sent to the CPU.

Which code is the package's and which is transcribed:
  * Ray2333/GRM-Gemma2-2B-sftreg: `GRewardModel` + `GRMPipeline` (rewardbench/models/grm.py), as
    REWARD_MODEL_CONFIG names them; `GRewardModel` builds its body with
    `AutoModelForCausalLM.from_config`, so a gemma2 config.json gives a Gemma2Model body.
    (Ray2333/GRM-gemma2-2B-rewardmodel-ft, the other Gemma 2 GRM, is a plain
    `Gemma2ForSequenceClassification` on the hub and runs through REWARD_MODEL_CONFIG "default":
    herd's Gemma2ForSequenceClassification entry, tested by make_gemma2_goldens.py.)
  * openbmb/Eurus-RM-7b: REWARD_MODEL_CONFIG runs it as `AutoModel.from_pretrained` (hub-only remote
    code, `EurusRewardModel`) through the package's `OpenBMBPipeline`. The class is TRANSCRIBED
    below (marked): MistralModel + `regression_head = Linear(hidden, 1, bias=False)`, read at
    `attention_mask.cumsum(1).argmax(1)`, returning the [batch, 1] gather -- UltraRM's
    `LlamaRewardModel` (rewardbench/models/openbmb.py) on a Mistral body.
  * ShikaiChen/LDL-Reward-Gemma-2-27B-v0.1: `LDLRewardModel27B` + `LDLPipeline`
    (rewardbench/models/ldlreward.py), the package's classes. Two runtime patches, no arithmetic:
    (1) `MultiOutputNN` and `GatingNN` are built with hard-coded widths (4096, 4096) that
    `LDLRewardModel27B.__init__` does not take from the config; their default widths are set to 12
    here so the fixture stays tiny (herd reads the widths from the tensors). (2) Its
    `from_pretrained` forces `attn_implementation="flash_attention_2"` (CUDA only); here the base
    class loads the folder with "eager" attention (the one transformers 4.51 implementation that,
    like flash-attention-2, applies Gemma 2's attention soft cap) and the side files are then
    loaded as that `from_pretrained` does (`.float()` the head, `torch.load` + `load_state_dict`).
    Its `save_pretrained` writes the body (Gemma2Model, so tensor names carry no `model.` prefix),
    config.json, and the heads as `regression_layer.pt` / `gating_layer.pt` (torch.save archives of
    the layers' state dicts), which herd reads as they are.
    The head runs under `torch.autocast(dtype=torch.float32)`, which torch disables on CPU; a
    bf16 body would then feed bf16 rows to the float32 head and fail, so for the bf16 draw the
    pooled hidden states are cast to float32 first (`regression_layer`/`gating_layer` forward
    pre-hooks), as herd does.
    LDLPipeline drops the first COLUMN of the whole padded batch when any row starts with two BOS
    ids; the tulu texts never do (no BOS in the text), so `ldl_double_bos` scores the same model
    once more through a tokenizer whose chat template writes BOS (heads2/ldl-double-bos.json). LDL pools by `argmax(ids == pad) - 1 (mod L)` over the left-padded batch, with pad = the
    EOS the tokenizer appends: a row shorter than its batch's longest is read at its EOS, a longest
    row at the token before it. The result depends on the batches, so the golden scores are the
    CLI's: batches of 8 examples in dataset order, chosen and rejected texts in separate calls
    (herd's Pooled::FirstPadMinusOne replays them); "single_row_scores_*" (each text alone) are
    recorded for information.

Models (tests/golden/fixtures/heads2/<org>/<name>/, folder paths ending with the RewardBench model
name): tiny random bodies (Gemma 2: hidden 24, 3 layers, 4 heads / 2 kv heads, head_dim 8,
attention soft cap 4, sliding window 24, as make_gemma2_goldens.py; Mistral: hidden 8, 2 layers,
2 heads / 1 kv head), vocabulary 32000 of the Llama-2 tokenizer, saved in bfloat16 (LDL's side files
in float32, as the package saves them); the goldens RE-LOAD the folders in float32.

Output: tests/golden/fixtures/heads2/heads2.json, keyed as make_heads_goldens.py's heads.json (fp32
scores as `rewards.float().cpu().numpy().tolist()` gives them, wins, bf16 bound = 2x the largest
|bf16 - fp32| of the package's own bf16 runs, in the CLI's batches and each text alone, and their
most win flips + 2).

Regenerate (from the repository root):
    ~/.cache/herd/venv-rewardbench-0.1.4/bin/python tests/golden/make_heads2_goldens.py
"""

import json
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rbref  # noqa: E402  (patches first)
import make_heads_goldens as mh  # noqa: E402  (helpers only: its main() is not run)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer, Gemma2Config, Gemma2PreTrainedModel, MistralConfig, MistralModel, PreTrainedModel,
)

from rewardbench.models import REWARD_MODEL_CONFIG, ldlreward  # noqa: E402
from rewardbench.models.grm import GRewardModel  # noqa: E402
from rewardbench.models.ldlreward import LDLRewardModel27B  # noqa: E402
from rewardbench.models.openbmb import OpenBMBPipeline  # noqa: E402
from rewardbench.utils import (  # noqa: E402
    check_tokenizer_chat_template, prepare_dialogue_from_tokenizer,
)

OUT = HERE / "fixtures" / "heads2"
TOK_LLAMA2 = mh.TOK_LLAMA2
BATCH_SIZE = mh.BATCH_SIZE
MAX_LENGTH = mh.MAX_LENGTH
ATTN = "eager"
# a chat template that writes BOS, as Gemma's does (the tokenizer adds a second one)
BOS_TEMPLATE = ("{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
                "{{ message['content'] }}\n{% endfor %}")

GRM = "Ray2333/GRM-Gemma2-2B-sftreg"
EURUS = "openbmb/Eurus-RM-7b"
LDL = "ShikaiChen/LDL-Reward-Gemma-2-27B-v0.1"
LDL_SIDE_FILES = ("regression_layer", "gating_layer")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
transformers.logging.set_verbosity_error()
assert transformers.__version__ == rbref.EXPECTED_TRANSFORMERS, transformers.__version__

# patch (1) of the docstring: tiny widths for LDL's head networks
ldlreward.MultiOutputNN.__init__.__defaults__ = ([12, 12],)
ldlreward.GatingNN.__init__.__defaults__ = (12, 2, 1.0, 0.0, False)


# -----------------------------------------------------------------------------------------------
# TRANSCRIPTION (not the package's code): openbmb/Eurus-RM-7b's hub-only `EurusRewardModel`
# -----------------------------------------------------------------------------------------------
class EurusRewardModel(PreTrainedModel):
    config_class = MistralConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = MistralModel(config)
        self.regression_head = nn.Linear(self.config.hidden_size, 1, bias=False)

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden_states = self.model(input_ids, attention_mask=attention_mask)[0]
        rewards = self.regression_head(hidden_states).squeeze(-1)
        ends = attention_mask.cumsum(dim=1).argmax(dim=1).view(-1, 1)
        return torch.gather(rewards, 1, ends)
# ----------------------------------------------------------------------------- end of transcription


def gemma2_config(**extra):
    return Gemma2Config(
        vocab_size=32000, hidden_size=24, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=12,
        attn_logit_softcapping=4.0, final_logit_softcapping=30.0, sliding_window=24,
        max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=10000.0,
        hidden_activation="gelu_pytorch_tanh", bos_token_id=1, eos_token_id=2, pad_token_id=None,
        attention_dropout=0.0, **extra,
    )


def mistral_config():
    return MistralConfig(
        vocab_size=32000, hidden_size=8, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
        rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=None, bos_token_id=1, eos_token_id=2,
        pad_token_id=None, tie_word_embeddings=False,
    )


def randomize_(model, seed, gemma):
    """Seeded random parameters (fp32); Gemma's norms scale by 1 + w, so w is drawn around 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                v = 0.1 * n if gemma else 1.0 + 0.1 * n
            elif name.endswith(".bias"):
                v = 0.3 * n
            elif "embed_tokens" in name:
                v = 0.5 * n if gemma else n
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                v = 2.0 * n / p.shape[1] ** 0.5
            elif p.dim() == 2:
                v = n / p.shape[1] ** 0.5
            else:
                raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(v)


def fresh(name) -> Path:
    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    return d


def build_grm(seed):
    config = gemma2_config(vhead_layer_type="mlp", vhead_num_neurons=10, vhead_num_layers=2)
    config._attn_implementation = ATTN
    model = GRewardModel(config)
    randomize_(model, seed, gemma=True)
    d = fresh(GRM)
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    return d


def build_eurus(seed):
    model = EurusRewardModel(mistral_config())
    randomize_(model, seed, gemma=False)
    d = fresh(EURUS)
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    return d


def build_ldl(seed):
    model = LDLRewardModel27B(gemma2_config(num_objectives=30))
    randomize_(model, seed, gemma=True)
    # the package keeps the head in float32 (`from_pretrained`: `.float()`), the body in bf16
    model.model.to(torch.bfloat16)
    d = fresh(LDL)
    d.mkdir(parents=True)
    model.save_pretrained(str(d))  # the package's own: body, config.json, the two .pt files
    return d


def load(name, d: Path, dtype):
    if name == GRM:
        model = REWARD_MODEL_CONFIG[name]["model_builder"](str(d), torch_dtype=dtype, device_map="cpu",
                                                            attn_implementation=ATTN)
        assert model.model.config._attn_implementation == ATTN, model.model.config._attn_implementation
    elif name == EURUS:
        model = EurusRewardModel.from_pretrained(d, torch_dtype=dtype)
    else:
        # patch (2) of the docstring: LDLRewardModel27B.from_pretrained minus flash-attention
        model = Gemma2PreTrainedModel.from_pretrained.__func__(LDLRewardModel27B, d, torch_dtype=dtype,
                                                              attn_implementation=ATTN)
        assert model.config._attn_implementation == ATTN
        for side in LDL_SIDE_FILES:
            layer = getattr(model, side).float()
            setattr(model, side, layer)
            layer.load_state_dict(torch.load(d / f"{side}.pt", map_location="cpu"))
            layer.register_forward_pre_hook(lambda _m, args: tuple(a.float() for a in args))
    return model.eval()


def pipeline_of(name, model, tokenizer):
    if name == EURUS:
        return OpenBMBPipeline("text-classification", model=model, tokenizer=tokenizer)
    return REWARD_MODEL_CONFIG[name]["pipeline_builder"]("text-classification", model=model, tokenizer=tokenizer)


def setup(name, d, dtype, tokenizer_dir=TOK_LLAMA2):
    """The model and tokenizer as the CLI sets them up (make_heads_goldens.setup's steps)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    model = load(name, d, dtype)
    pipe = pipeline_of(name, model, tokenizer)
    if tokenizer.pad_token_id is None:
        model.config.pad_token_id = tokenizer.eos_token_id
        tokenizer.pad_token_id = tokenizer.eos_token_id
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if not check_tokenizer_chat_template(tokenizer):
        tokenizer.add_eos_token = True
    return tokenizer, pipe


def call(pipe, texts: List[str]):
    kwargs = {"batch_size": BATCH_SIZE, "truncation": True, "padding": True, "max_length": MAX_LENGTH,
              "function_to_apply": "none", "return_token_type_ids": False}
    transformers.BatchEncoding.to = mh._to_cpu_for_cuda
    with torch.no_grad():
        rewards = pipe(texts, **kwargs)
    if isinstance(rewards, dict) or hasattr(rewards, "logits"):
        raise RuntimeError(f"unexpected pipeline output {type(rewards)}")
    return rewards.float().cpu().numpy().tolist()


def run(name, d, dtype, texts, batch: int, tokenizer_dir=TOK_LLAMA2):
    _, pipe = setup(name, d, dtype, tokenizer_dir)
    scores = {"chosen": [], "rejected": []}
    for i in range(0, len(texts), batch):
        part = texts[i:i + batch]
        for side in ("chosen", "rejected"):
            scores[side].extend(call(pipe, [t[side] for t in part]))
    return scores


def flat(x):
    return x if isinstance(x, list) else [x]


def main():
    examples = mh.load_examples()
    texts = mh.tulu_texts(examples)
    golden = {
        "reference": rbref.REFERENCE,
        "generator": "tests/golden/make_heads2_goldens.py",
        "chat_template": "tulu",
        "max_length": MAX_LENGTH,
        "batch_size": BATCH_SIZE,
        "examples": examples,
        "texts": texts,
        "models": {},
    }
    for name, build, seed in [(GRM, build_grm, 21), (EURUS, build_eurus, 22), (LDL, build_ldl, 23)]:
        torch.manual_seed(0)
        d = build(seed)
        # the golden: the CLI's batches (see the docstring for LDL); each text alone for information
        fp32 = run(name, d, torch.float32, texts, BATCH_SIZE)
        single = run(name, d, torch.float32, texts, 1)
        bf16 = run(name, d, torch.bfloat16, texts, BATCH_SIZE)
        bf16_single = run(name, d, torch.bfloat16, texts, 1)
        # the bound: the worse of the package's two bf16 draws (CLI batches, each text alone)
        # (each against the fp32 run of its own batching: LDL's pooled positions follow the batches)
        record = mh.scored_record(fp32, ((fp32, bf16), (single, bf16_single)), single)
        margins = [min(abs(a - b) for a, b in zip(flat(c), flat(r)))
                   for c, r in zip(fp32["chosen"], fp32["rejected"])]
        config = json.loads((d / "config.json").read_text())
        golden["models"][name] = {
            "architecture": config["architectures"][0],
            "model_type": config["model_type"],
            "tokenizer": "shared/data/tokenizers/llama2",
            **record,
        }
        wins, single_diff = record["wins"], record["single_row_max_abs_diff"]
        worst, flips = record["bf16"]["max_abs_diff"], record["bf16"]["win_flips"]
        size = sum(f.stat().st_size for f in d.iterdir())
        print(f"{name}: {config['architectures'][0]}, {size} bytes, accuracy {sum(wins)}/{len(wins)}, "
              f"smallest |margin| {min(margins):.2e}, single-row diff {single_diff:.2e}, "
              f"bf16 max diff {worst:.4f}, flips {flips}")
    mh.dump_json(OUT / "heads2.json", golden)
    ldl_double_bos(examples)


def ldl_double_bos(examples):
    """LDL-Reward through a tokenizer whose chat template writes BOS, so that every text
    tokenizes to two leading BOS and LDLPipeline's strip of a call's first column applies: the
    widest rows of each call lose their first BOS, the shorter ones a pad (both BOS kept).
    RewardBench formats with the tokenizer's template when it has one
    (`prepare_dialogue_from_tokenizer`) and then adds no EOS. Output: heads2/ldl-double-bos.json
    (the CLI's batches as the golden; each text alone for information)."""
    tok = OUT / "tokenizers" / "llama2-bos-template"
    if tok.exists():
        shutil.rmtree(tok)
    tok.mkdir(parents=True)
    for f in mh.TOKENIZER_FILES:
        shutil.copyfile(TOK_LLAMA2 / f, tok / f)
    config = json.loads((tok / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = BOS_TEMPLATE
    (tok / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n",
                                               encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(tok)
    assert check_tokenizer_chat_template(tokenizer)
    texts = []
    for ex in examples:
        formatted = prepare_dialogue_from_tokenizer(dict(ex), tokenizer)
        texts.append({"chosen": formatted["text_chosen"], "rejected": formatted["text_rejected"]})
        ids = tokenizer(formatted["text_chosen"])["input_ids"]
        assert ids[:2] == [tokenizer.bos_token_id] * 2, ids[:3]
    d = OUT / LDL
    fp32 = run(LDL, d, torch.float32, texts, BATCH_SIZE, tok)
    single = run(LDL, d, torch.float32, texts, 1, tok)
    bf16 = run(LDL, d, torch.bfloat16, texts, BATCH_SIZE, tok)
    record = mh.scored_record(fp32, ((fp32, bf16),), single)
    wins, single_diff = record["wins"], record["single_row_max_abs_diff"]
    worst, flips = record["bf16"]["max_abs_diff"], record["bf16"]["win_flips"]
    margins = [abs(c - r) for c, r in zip(fp32["chosen"], fp32["rejected"])]
    print(f"{LDL} (double BOS): accuracy {sum(wins)}/{len(wins)}, smallest |margin| {min(margins):.2e}, "
          f"each text alone differs by {single_diff:.3f}, bf16 max diff {worst:.4f}, flips {flips}")
    assert single_diff > 1e-3, "the strip should leave shorter rows with both BOS"
    mh.dump_json(OUT / "ldl-double-bos.json", {
        "reference": rbref.REFERENCE,
        "generator": "tests/golden/make_heads2_goldens.py (ldl_double_bos)",
        "chat_template": "tulu",
        "tokenizer": "tests/golden/fixtures/heads2/tokenizers/llama2-bos-template",
        "max_length": MAX_LENGTH,
        "batch_size": BATCH_SIZE,
        "examples": examples,
        "texts": texts,
        "models": {LDL: {
            "architecture": json.loads((d / "config.json").read_text())["architectures"][0],
            **record,
        }},
    })


if __name__ == "__main__":
    main()
