#!/usr/bin/env python3
"""Goldens for herd's gated multi-objective reward heads (ArmoRM, QRM) on tiny random models.

Reference (run in ~/.cache/herd/venv-rewardbench-0.1.4: rewardbench 0.1.4, transformers 4.51.0,
torch 2.11.0, CPU; `rbref` is imported first for its documented CPU patches):

  qrm-llama31/  rewardbench/models/qrm.py `LlamaForRewardModelWithGating31` -- the PUBLISHED
                package's class, used as is (nicolinho/QRM-Llama3.1-8B).
  qrm-llama3/   rewardbench/models/qrm.py `LlamaForRewardModelWithGating3` -- the published
                package's class (nicolinho/QRM-Llama3-8B), on the same weights as qrm-llama31
                (its safetensors file is a symlink to qrm-llama31's).
  armorm/       `LlamaForRewardModelWithGating` of RLHFlow/ArmoRM-Llama3-8B-v0.1. Its modeling file
                (`modeling_custom.py`) is hub-only remote code that the package loads through
                `trust_remote_code`; it is TRANSCRIBED below (`LlamaForRewardModelWithGating`, marked), the
                package only supplies `ArmoRMPipeline` (rewardbench/models/armorm.py), which returns
                `outputs.logits`.

Both QRM classes override `from_pretrained` to force `attn_implementation="flash_attention_2"`
(CUDA only); the goldens load them through `LlamaPreTrainedModel.from_pretrained` with the default
(sdpa) attention instead, which changes no arithmetic beyond float noise.

Inputs. The gate reads the hidden state at the last occurrence of the Llama-3 token pattern
`<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n` = [128009, 128006, 78191, 128007,
271] (`find_token_for_gating`, hard-coded ids in both files). No Llama-3 tokenizer is available here
(../shared/data has Llama-2 and GPT-2 only), so the token ids are assembled in the Llama-3 chat
template's layout -- `<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n{prompt}<|eot_id|>
<|start_header_id|>assistant<|end_header_id|>\\n\\n{response}<|eot_id|>` with Llama-3's ids for the
special and header tokens -- and the message texts tokenized with the Llama-2 tokenizer from
../shared/data (no BOS). The models have Llama-3's vocabulary size so every id is in range. The
goldens therefore test the model (backbone, pooled and gate positions, head) on token ids; text
formatting and tokenization are herd's generic path, tested elsewhere. One synthetic two-turn pair
(id 100000) checks that the LAST assistant header is the one the gate reads.

Scoring follows the package's pipelines (`ArmoRMPipeline.__call__`, `RewardBenchPipeline.__call__`):
the rewardbench CLI sets `tokenizer.padding_side = "left"` and no truncation, and the model is
called with the padded `input_ids` and `attention_mask`; here that tokenizer output is built from
the ids directly (left padding with `config.pad_token_id`, <|end_of_text|> = 128001, which no
sequence contains, so the remote code's `argmax(ids == pad) - 1 (mod L)` pools the last token).
The score is `outputs.logits` (ArmoRM [B], QRM [B, 1]); the CLI writes `.float().tolist()`,
flattening QRM's one-element lists, so both write one float per sequence.

Runs per case: fp32 at batch size 1 (the golden scores), fp32 in the CLI's padded batches of 8
(chosen and rejected texts in separate calls), and bf16 (the folder loaded in bfloat16) in both
ways, with the bf16 bound derived as in make_fixtures.py (factor x the largest |bf16 - fp32| of the
reference's own bf16 draws; flips + margin).

Weights are random (seeded) and saved in bf16; the reference re-loads the saved folder in fp32.
Writes tests/golden/fixtures/gated/ only. Regenerate from the repository root:
    $HOME/.cache/herd/venv-rewardbench-0.1.4/bin/python tests/golden/make_gated_goldens.py
"""

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rbref  # noqa: E402,F401  (CPU patches; must precede the package imports)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import LlamaConfig, LlamaModel, LlamaPreTrainedModel  # noqa: E402
from transformers.utils import ModelOutput  # noqa: E402

from rewardbench.models import qrm  # noqa: E402

OUT = HERE / "fixtures" / "gated"
MODELS = OUT / "models"
DATA = Path(os.environ.get("HERD_SHARED") or HERE.parent.parent.parent / "shared") / "data"
TOK_LLAMA2 = DATA / "tokenizers" / "llama2" / "tokenizer.json"

REFERENCE = (f"rewardbench {rbref.EXPECTED_REWARDBENCH} (qrm.py; ArmoRM transcribed), transformers "
             f"{transformers.__version__}, torch {torch.__version__.split('+')[0]} (CPU)")
assert transformers.__version__ == rbref.EXPECTED_TRANSFORMERS, transformers.__version__

# Llama-3 ids of the chat template's special and header tokens
BEGIN_OF_TEXT, END_OF_TEXT = 128000, 128001
START_HEADER, END_HEADER, EOT = 128006, 128007, 128009
USER, ASSISTANT, NEWLINES = 882, 78191, 271
PAD = END_OF_TEXT
GATE_PATTERN = [EOT, START_HEADER, ASSISTANT, END_HEADER, NEWLINES]
assert GATE_PATTERN == qrm.token_pattern

PADDED_BATCH_SIZE = 8
BF16_SCORE_FACTOR = 2.0
BF16_FLIP_MARGIN = 2
BF16_RULE = (f"max_abs_diff = {BF16_SCORE_FACTOR:g} x the largest |bf16 - fp32| score difference of the "
             f"reference's bf16 draws; max_win_flips = the most win flips of those draws + {BF16_FLIP_MARGIN}")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
transformers.logging.set_verbosity_error()


# -----------------------------------------------------------------------------------------------
# TRANSCRIPTION (not the package's code): RLHFlow/ArmoRM-Llama3-8B-v0.1 modeling_custom.py,
# hub-only remote code, as `trust_remote_code` loads it. GatingNetwork, find_token_for_gating and
# LlamaForRewardModelWithGating.forward's head; the pooled index is the same
# `argmax(ids == pad) - 1 (mod L)` rule as QRM's.
# -----------------------------------------------------------------------------------------------
class ArmoGatingTranscribed(nn.Module):
    def __init__(self, in_features, out_features, bias=True, temperature=10, logit_scale=1.0,
                 hidden_dim=1024, n_hidden=3):
        super().__init__()
        self.temperature = temperature
        self.logit_scale = nn.Parameter(torch.ones(1) * logit_scale)
        layers = []
        for _ in range(n_hidden):
            layers.append(nn.Linear(in_features, hidden_dim))
            in_features = hidden_dim
        layers.append(nn.Linear(in_features, out_features, bias=bias))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        x = F.softmax(x / self.temperature, dim=1)
        return x * self.logit_scale[0]


def armo_find_token_for_gating(lst):
    n = len(GATE_PATTERN)
    for j in range(len(lst) - n, -1, -1):
        if lst[j:j + n] == GATE_PATTERN:
            return j
    raise ValueError("Token pattern not found in the list.")


@dataclass
class ArmoOutput(ModelOutput):
    rewards: torch.FloatTensor = None
    hidden_state: Optional[Tuple[torch.FloatTensor, ...]] = None
    prompt_embedding: Optional[torch.FloatTensor] = None
    gating_output: Optional[torch.FloatTensor] = None
    score: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None


class LlamaForRewardModelWithGating(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = LlamaModel(config)
        config_dict = config.to_dict()
        self.num_objectives = config_dict.get("num_objectives", 19)
        self.regression_layer = nn.Linear(config.hidden_size, self.num_objectives, bias=False)
        self.post_init()
        eye = torch.zeros(self.num_objectives, self.num_objectives)
        eye[range(self.num_objectives), range(self.num_objectives)] = 1.0
        self.reward_transform_matrix = nn.Parameter(eye)
        self.reward_transform_matrix.requires_grad = False
        self.gating = ArmoGatingTranscribed(config.hidden_size, config.num_objectives,
                                            temperature=config_dict.get("gating_temperature", 10),
                                            hidden_dim=config_dict.get("gating_hidden_dim", 1024),
                                            n_hidden=config_dict.get("gating_n_hidden", 3))

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        tokens_hidden_states = self.model(input_ids, attention_mask=attention_mask)[0]
        batch_size = input_ids.shape[0]
        sequence_lengths = torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1
        sequence_lengths = sequence_lengths % input_ids.shape[-1]
        dummy_iterator = torch.arange(batch_size, device=tokens_hidden_states.device)
        hidden_states = tokens_hidden_states[dummy_iterator, sequence_lengths]
        rewards = self.regression_layer(hidden_states)
        gating_token_positions = [armo_find_token_for_gating(ids.tolist()) for ids in input_ids]
        prompt_embedding = tokens_hidden_states[dummy_iterator, gating_token_positions, :]
        gating_output = self.gating(prompt_embedding)
        rewards_adjusted = rewards @ self.reward_transform_matrix
        score = torch.sum(gating_output * rewards_adjusted, dim=1)
        return ArmoOutput(rewards=rewards, hidden_state=hidden_states, prompt_embedding=prompt_embedding,
                          gating_output=gating_output, score=score, logits=score)
# ----------------------------------------------------------------------------- end of transcription


def dump_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def tiny_config(architecture: str, **extra) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=128256,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        bos_token_id=BEGIN_OF_TEXT,
        eos_token_id=EOT,
        pad_token_id=PAD,
        num_labels=1,
        architectures=[architecture],
        torch_dtype="bfloat16",
        **extra,
    )


def randomize_(model: nn.Module, seed: int) -> None:
    """Seeded random values for every parameter and BatchNorm statistic, so that mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight") and name.startswith("model."):
                v = 1.0 + 0.1 * n
            elif name == "gating.logit_scale":
                v = 1.5 + 0.3 * n
            elif name == "reward_transform_matrix":
                v = torch.eye(p.shape[0]) + 0.3 * n  # ArmoRM's real matrix is not the identity
            elif name.startswith("gating.") and p.dim() == 1:  # biases, BatchNorm weight/bias
                v = (1.0 + 0.2 * n) if name.endswith("weight") else 0.3 * n
            elif "embed_tokens" in name:
                v = n
            elif name == "regression_layer.weight":
                v = n
            elif name.startswith("gating.") and p.dim() == 2:
                v = 0.6 * n
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                v = 0.3 * n
            elif name.endswith(".weight") and p.dim() == 2:
                v = 0.6 * n  # v/o/gate/up/down: large, so the last token sees its context
            else:
                raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(v)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                b.fill_(1234)


def save(model: nn.Module, name: str, seed: int) -> Path:
    randomize_(model, seed)
    model = model.to(torch.bfloat16)
    d = MODELS / name
    model.save_pretrained(d, safe_serialization=True)
    return d


def load(cls, d: Path, dtype):
    # QRM's own from_pretrained forces flash_attention_2 (CUDA); the base class loads it on CPU
    model = LlamaPreTrainedModel.from_pretrained.__func__(cls, d, torch_dtype=dtype)
    if cls is not LlamaForRewardModelWithGating:
        # qrm.py's forward feeds `hidden_states.float()` and `prompt_embedding.float()` to its
        # head, inside `torch.autocast(dtype=torch.float32)`, which torch disables ("the target
        # dtype is not supported"). With any head tensor left in bf16 the package's forward fails
        # (bf16 model: `expected m1 and m2 to have the same dtype`; QRM3 even in fp32, whose
        # __init__ makes `reward_transform_matrix` bf16: `expected scalar type Float but found
        # BFloat16`). So the head runs in float32, the backbone in `dtype`, as herd does.
        model.regression_layer.float()
        model.gating.float()
        model.reward_transform_matrix.data = model.reward_transform_matrix.data.float()
    return model.eval()


# -----------------------------------------------------------------------------------------------
# inputs
# -----------------------------------------------------------------------------------------------
def llama3_ids(tok: Tokenizer, turns: List[Tuple[str, str]]) -> List[int]:
    ids = [BEGIN_OF_TEXT]
    for role, text in turns:
        ids += [START_HEADER, USER if role == "user" else ASSISTANT, END_HEADER, NEWLINES]
        ids += tok.encode(text, add_special_tokens=False).ids
        ids.append(EOT)
    return ids


def examples(tok: Tokenizer):
    rows = []
    for name in ["rewardbench-llmbar.jsonl", "rewardbench-hep.jsonl"]:
        seen = {}
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if seen.get(r["subset"], 0) < 2:
                seen[r["subset"]] = seen.get(r["subset"], 0) + 1
                rows.append(r)
    out = []
    for r in rows:
        out.append({
            "id": r["id"], "subset": r["subset"], "prompt": r["prompt"],
            "chosen": r["chosen"], "rejected": r["rejected"],
            "chosen_ids": llama3_ids(tok, [("user", r["prompt"]), ("assistant", r["chosen"])]),
            "rejected_ids": llama3_ids(tok, [("user", r["prompt"]), ("assistant", r["rejected"])]),
        })
    # two turns: the gate must read the second assistant header, not the first
    first = [("user", "What is 2 + 2?"), ("assistant", "4."), ("user", "And times 3?")]
    out.append({
        "id": 100000, "subset": "synthetic-two-turns", "prompt": "What is 2 + 2? / And times 3?",
        "chosen": "12.", "rejected": "It is 6, since 2 + 2 = 3.",
        "chosen_ids": llama3_ids(tok, first + [("assistant", "12.")]),
        "rejected_ids": llama3_ids(tok, first + [("assistant", "It is 6, since 2 + 2 = 3.")]),
    })
    return out


def left_padded(seqs: List[List[int]]):
    """What the CLI's tokenizer call gives the pipeline: padding_side left, no truncation."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    return ids, mask


def logits(model, seqs: List[List[int]]) -> List[float]:
    ids, mask = left_padded(seqs)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).logits
    # the CLI: `rewards.float().cpu().numpy().tolist()`, QRM's [B, 1] flattened when written
    values = out.float().cpu().numpy().tolist()
    return [v[0] if isinstance(v, list) else v for v in values]


def run(model, exs, batch: int):
    chosen, rejected = [], []
    for start in range(0, len(exs), batch):
        part = exs[start:start + batch]
        chosen += logits(model, [e["chosen_ids"] for e in part])
        rejected += logits(model, [e["rejected_ids"] for e in part])
    return chosen, rejected


def spread(golden_c, golden_r, c, r):
    worst = max(abs(a - b) for a, b in zip(golden_c + golden_r, c + r))
    flips = [i for i in range(len(c)) if (golden_c[i] > golden_r[i]) != (c[i] > r[i])]
    return {"max_abs_diff": worst, "win_flips": len(flips)}


def case(name: str, cls, folder: Path, exs, find_gate):
    model = load(cls, folder, torch.float32)
    chosen, rejected = run(model, exs, 1)
    padded_c, padded_r = run(model, exs, PADDED_BATCH_SIZE)
    model16 = load(cls, folder, torch.bfloat16)
    draws = {"bf16": run(model16, exs, 1), "bf16_padded_batch": run(model16, exs, PADDED_BATCH_SIZE)}
    measured = {k: spread(chosen, rejected, *v) for k, v in draws.items()}
    max_abs = BF16_SCORE_FACTOR * max(m["max_abs_diff"] for m in measured.values())
    out_examples = []
    for i, e in enumerate(exs):
        out_examples.append({
            **e,
            "gate_chosen": find_gate(e["chosen_ids"]),
            "gate_rejected": find_gate(e["rejected_ids"]),
            "scores_chosen": chosen[i], "scores_rejected": rejected[i],
            "padded_batch_scores_chosen": padded_c[i], "padded_batch_scores_rejected": padded_r[i],
            "bf16_scores_chosen": draws["bf16"][0][i], "bf16_scores_rejected": draws["bf16"][1][i],
        })
    config = json.loads((folder / "config.json").read_text())
    golden = {
        "reference": REFERENCE,
        "class": config["architectures"][0],
        "model": folder.name,
        "pad_token_id": PAD,
        "gate_pattern": GATE_PATTERN,
        "bf16_bound": {
            "rule": BF16_RULE, "reference": measured, "max_abs_diff": max_abs,
            "max_win_flips": max(m["win_flips"] for m in measured.values()) + BF16_FLIP_MARGIN,
        },
        "examples": out_examples,
    }
    dump_json(OUT / f"{name}.json", golden)
    wins = sum(1 for e in out_examples if e["scores_chosen"] > e["scores_rejected"])
    print(f"{name}: {len(out_examples)} pairs, {wins} wins, bf16 {measured}")


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    tok = Tokenizer.from_file(str(TOK_LLAMA2))
    exs = examples(tok)

    gating = dict(num_objectives=4, gating_hidden_dim=6, gating_n_hidden=2, gating_temperature=1.5)
    armo_dir = save(LlamaForRewardModelWithGating(tiny_config("LlamaForRewardModelWithGating", **gating)), "armorm", 11)
    # qrm.py's reward_quantiles (not part of the score) only broadcasts when num_quantiles ==
    # num_objectives, as in the published checkpoints
    qrm_cfg = tiny_config("LlamaForRewardModelWithGating31", num_quantiles=4, **gating)
    qrm_dir = save(qrm.LlamaForRewardModelWithGating31(qrm_cfg), "qrm-llama31", 12)
    # QRM-Llama3: same weights, the other class
    qrm3_dir = MODELS / "qrm-llama3"
    qrm3_dir.mkdir(parents=True)
    config = json.loads((qrm_dir / "config.json").read_text())
    config["architectures"] = ["LlamaForRewardModelWithGating3"]
    (qrm3_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.symlink("../qrm-llama31/model.safetensors", qrm3_dir / "model.safetensors")

    case("armorm", LlamaForRewardModelWithGating, armo_dir, exs, armo_find_token_for_gating)
    case("qrm-llama31", qrm.LlamaForRewardModelWithGating31, qrm_dir, exs, qrm.find_token_for_gating)
    case("qrm-llama3", qrm.LlamaForRewardModelWithGating3, qrm3_dir, exs, qrm.find_token_for_gating)


if __name__ == "__main__":
    main()
