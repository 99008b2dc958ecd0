#!/usr/bin/env python3
"""Goldens for herd's custom reward heads on Llama backbones (worker/engine/src/models/reward_heads/).

Reference: the published rewardbench 0.1.4 package (its models/ code: model classes, pipelines and
REWARD_MODEL_CONFIG) with its pinned transformers 4.51.0, on CPU, imported through tests/golden/rbref.py
(runtime-only CPU patches, see there). One more runtime patch here, touching no arithmetic: the custom
pipelines (OpenBMBPipeline, BeaverPipeline, BeaverCostPipeline, GRMPipeline, StarlingPipeline) move the
tokenized batch to "cuda"; `BatchEncoding.to("cuda")` goes to the CPU instead while this script runs.

Which code is the package's and which is transcribed:
  * INF-ORM (INFORMForSequenceClassification + RewardBenchPipeline), UltraRM (LlamaRewardModel +
    OpenBMBPipeline), Beaver (LlamaForScore + BeaverPipeline / BeaverCostPipeline), Starling-RM-34B
    (starling.py's LlamaForSequenceClassification + StarlingPipeline) and GRM (GRewardModel +
    GRMPipeline): the package's classes and pipelines, picked from REWARD_MODEL_CONFIG by model name
    exactly as scripts/run_rm.py and the `rewardbench` CLI pick them.
  * Llama-3.1-Nemotron-70B-Reward-HF: not in rewardbench 0.1.4 (hub-only model card code), TRANSCRIBED
    here: transformers' LlamaForCausalLM on one unpadded sequence, reward = logits[0, -1, 0] (the model
    card's `generate(max_new_tokens=1, output_scores=True).scores[0][0][0]`).

The run around the pipelines follows the `rewardbench` CLI (rewardbench/rewardbench.py): FastChat "tulu"
formatting through rewardbench.utils.prepare_dialogue (the tokenizer has no chat template), so the
tokenizer appends EOS (`add_eos_token = True`); `padding_side = "left"`, `truncation_side = "left"`,
max_length 2048; pad = EOS when the tokenizer has none, also written to `model.config.pad_token_id`;
batches of 8 examples in dataset order, the chosen texts and the rejected texts in separate pipeline calls.

Models (tests/golden/fixtures/heads/<org>/<name>/: the folder path ends with the REWARD_MODEL_CONFIG key,
which is how both RewardBench and herd's registry find the pipeline by name): tiny random Llama backbones
(hidden 8, 2 layers, 2 heads / 1 kv head, vocabulary 32000 of the Llama-2 tokenizer), saved in bfloat16;
the goldens come from RE-LOADING the folders in float32 (the weights herd loads). The Llama-2 tokenizer is
../shared/data/tokenizers/llama2 (no pad token: pad = EOS 2), except Starling's, committed beside its model
with `pad_token = "<unk>"` (id 0, Starling's hard-coded PAD_ID, as the Yi tokenizer of Starling-RM-34B).

Outputs: tests/golden/fixtures/heads/heads.json: per model, the pipeline's fp32 scores (as
`rewards.float().cpu().numpy().tolist()` gives them: a list per row, or a float per row for the
`[batch]` pipelines), the wins, and a bf16 bound: the same run with the folder loaded in bfloat16, and
herd's bf16 must keep 2x its largest score difference and its win flips + 2 (as make_fixtures.py).

Examples: the first 2 rows of each llmbar and hep subset of ../shared/data (22 pairs), embedded.

The real `rewardbench` CLI on one custom-head fixture (tests/golden/fixtures/heads/cli/): `rbref.run_cli`
run from tests/golden/fixtures/heads with `--model Nexusflow/Starling-RM-34B` (so that `args.model in
REWARD_MODEL_CONFIG` picks StarlingPipeline, as for the hub model), the CLI goldens' preference data
(tests/golden/cli/data/preference.jsonl, made by make_cli_goldens.py; read, not rewritten),
`--load_json --not_quantized --torch_dtype float32 --save_all --chat_template tulu`; its result files are
copied to cli/results/ and the arguments to cli/manifest.json (worker/tests/heads_cli.rs replays them).

Regenerate (from the repository root):
    ~/.cache/herd/venv-rewardbench-0.1.4/bin/python tests/golden/make_heads_goldens.py
"""

import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rbref  # noqa: E402  (patches first)
import torch  # noqa: E402
import transformers  # noqa: E402
from fastchat.conversation import get_conv_template  # noqa: E402
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

from rewardbench.models import REWARD_MODEL_CONFIG  # noqa: E402
from rewardbench.models.beaver import LlamaForScore  # noqa: E402
from rewardbench.models.grm import GRewardModel  # noqa: E402
from rewardbench.models.inform import INFORMForSequenceClassification  # noqa: E402
from rewardbench.models.openbmb import LlamaRewardModel  # noqa: E402
from rewardbench.models.starling import LlamaForSequenceClassification as StarlingRM  # noqa: E402
from rewardbench.utils import check_tokenizer_chat_template, prepare_dialogue  # noqa: E402

OUT = HERE / "fixtures" / "heads"
DATA = Path(os.environ.get("HERD_SHARED") or HERE.parent.parent.parent / "shared") / "data"
TOK_LLAMA2 = DATA / "tokenizers" / "llama2"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
BATCH_SIZE = 8  # the CLI's default --batch_size
MAX_LENGTH = 2048  # the CLI's default --max_length
BF16_SCORE_FACTOR = 2.0
BF16_FLIP_MARGIN = 2

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
transformers.logging.set_verbosity_error()

_original_to = transformers.BatchEncoding.to


def _to_cpu_for_cuda(encoding, target, *args, **kwargs):
    return _original_to(encoding, "cpu" if target == "cuda" else target, *args, **kwargs)


transformers.BatchEncoding.to = _to_cpu_for_cuda


def dump_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------
def llama_config(**extra):
    return LlamaConfig(
        vocab_size=32000, hidden_size=8, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
        rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=1, eos_token_id=2, pad_token_id=None,
        tie_word_embeddings=False, hidden_act="silu", **extra,
    )


def randomize_(model, seed):
    """Seeded random values for every parameter (fp32), large enough that layout mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                v = 1.0 + 0.1 * n
            elif name.endswith(".bias"):
                v = 0.3 * n
            elif "embed_tokens" in name:
                v = n
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                v = 2.0 * n / p.shape[1] ** 0.5
            elif p.dim() == 2:
                v = n / p.shape[1] ** 0.5
            else:
                raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(v)


def save(model, name, seed):
    randomize_(model, seed)
    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    return d


def starling_tokenizer(d: Path):
    for f in TOKENIZER_FILES:
        shutil.copyfile(TOK_LLAMA2 / f, d / f)
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        cfg = json.loads((d / f).read_text(encoding="utf-8"))
        cfg["pad_token"] = "<unk>" if f == "tokenizer_config.json" else cfg["unk_token"]
        (d / f).write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


NEMOTRON = "nvidia/Llama-3.1-Nemotron-70B-Reward-HF"

# (REWARD_MODEL_CONFIG key or folder name, builder, seed)
MODELS = [
    ("infly/INF-ORM-Llama3.1-70B", lambda: INFORMForSequenceClassification(llama_config()), 11),
    ("openbmb/UltraRM-13b", lambda: LlamaRewardModel(llama_config()), 12),
    ("PKU-Alignment/beaver-7b-v1.0-reward", lambda: LlamaForScore(llama_config()), 13),
    # a two-dimensional cost head with bias: the negation and the row of labels both show
    ("PKU-Alignment/beaver-7b-v1.0-cost", lambda: LlamaForScore(llama_config(), score_dim=2, bias=True), 14),
    ("Nexusflow/Starling-RM-34B", lambda: StarlingRM(llama_config()), 15),
    # two hidden layers of 12 neurons, read from config.json (GRM's defaults: one of 1024)
    ("Ray2333/GRM-llama3-8B-sftreg",
     lambda: GRewardModel(llama_config(vhead_layer_type="mlp", vhead_num_neurons=12, vhead_num_layers=2)), 16),
    (NEMOTRON, lambda: LlamaForCausalLM(llama_config()), 17),
]


# ------------------------------------------------------------------------------------------------
# data and the run
# ------------------------------------------------------------------------------------------------
def load_examples():
    rows = []
    for fname in ("rewardbench-llmbar.jsonl", "rewardbench-hep.jsonl"):
        per_subset = {}
        with open(DATA / fname, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                per_subset.setdefault(r["subset"], []).append(r)
        for rs in per_subset.values():
            for r in rs[:2]:
                rows.append({k: r[k] for k in ("id", "subset", "prompt", "chosen", "rejected")})
    assert len(rows) == 22, len(rows)
    return rows


def tokenizer_dir(name):
    return OUT / name if name == "Nexusflow/Starling-RM-34B" else TOK_LLAMA2


def setup(name, dtype):
    """The model and tokenizer as the CLI sets them up (rewardbench.py, classifier branch)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(name))
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    if name == NEMOTRON:
        # transcribed (model card): the causal LM itself
        model = LlamaForCausalLM.from_pretrained(OUT / name, torch_dtype=dtype).eval()
        pipe = None
    else:
        config = REWARD_MODEL_CONFIG[name]
        # fp32 and bf16 draws here; the package's torch_dtype (bf16 for INF-ORM) is the bf16 draw
        model = config["model_builder"](str(OUT / name), torch_dtype=dtype, device_map="cpu")
        pipe = config["pipeline_builder"]("text-classification", model=model, tokenizer=tokenizer)
    if tokenizer.pad_token_id is None:
        model.config.pad_token_id = tokenizer.eos_token_id
        tokenizer.pad_token_id = tokenizer.eos_token_id
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if not check_tokenizer_chat_template(tokenizer):
        tokenizer.add_eos_token = True
    return tokenizer, model, pipe


def nemotron_rewards(tokenizer, model, texts):
    """Transcribed model-card reward: each conversation alone, logits[0, -1, 0]."""
    out = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out.append(model(input_ids=ids).logits[0, -1, 0].float().item())
    return out


def run(name, dtype, texts):
    tokenizer, model, pipe = setup(name, dtype)
    kwargs = {"batch_size": BATCH_SIZE, "truncation": True, "padding": True, "max_length": MAX_LENGTH,
              "function_to_apply": "none", "return_token_type_ids": False}
    scores = {"chosen": [], "rejected": []}
    for i in range(0, len(texts), BATCH_SIZE):
        batch = texts[i:i + BATCH_SIZE]
        for side in ("chosen", "rejected"):
            side_texts = [t[side] for t in batch]
            if pipe is None:
                rewards = nemotron_rewards(tokenizer, model, side_texts)
            else:
                # rbref's RewardBenchPipeline patch restores the original `to` after each call
                transformers.BatchEncoding.to = _to_cpu_for_cuda
                with torch.no_grad():
                    rewards = pipe(side_texts, **kwargs)
                if isinstance(rewards, dict) or hasattr(rewards, "logits"):
                    raise RuntimeError(f"{name}: unexpected pipeline output {type(rewards)}")
                rewards = rewards.float().cpu().numpy().tolist()
            scores[side].extend(rewards)
    return scores


def flat(x):
    return x if isinstance(x, list) else [x]


def tulu_texts(examples):
    """Each example's chosen and rejected texts as the CLI formats them with FastChat "tulu"."""
    texts = []
    for ex in examples:
        formatted = prepare_dialogue(dict(ex), get_conv_template("tulu"))
        texts.append({"chosen": formatted["text_chosen"], "rejected": formatted["text_rejected"]})
    return texts


def scored_record(fp32, draws, single=None):
    """A model's golden entry from its runs ({"chosen": [...], "rejected": [...]}): the fp32
    scores (the golden) and wins, each text alone when `single` is given, and the bf16 bound from
    `draws`, pairs (fp32 run, bf16 run) each of one batching: 2x the largest |bf16 - fp32| and the
    most win flips + 2 over them; the first draw's bf16 scores are recorded."""
    sides = ("chosen", "rejected")
    worst = max(abs(a - b) for ref, draw in draws for side in sides
                for x, y in zip(ref[side], draw[side]) for a, b in zip(flat(x), flat(y)))
    flips = max(sum(1 for c0, r0, c, r in zip(ref["chosen"], ref["rejected"], draw["chosen"], draw["rejected"])
                    if (c0 > r0) != (c > r))
                for ref, draw in draws)
    record = {
        "scores_chosen": fp32["chosen"],
        "scores_rejected": fp32["rejected"],
        "wins": [c > r for c, r in zip(fp32["chosen"], fp32["rejected"])],
    }
    if single is not None:
        record["single_row_scores_chosen"] = single["chosen"]
        record["single_row_scores_rejected"] = single["rejected"]
        record["single_row_max_abs_diff"] = max(
            abs(a - b) for side in sides for x, y in zip(fp32[side], single[side]) for a, b in zip(flat(x), flat(y)))
    bf16 = draws[0][1]
    record["bf16"] = {"scores_chosen": bf16["chosen"], "scores_rejected": bf16["rejected"],
                      "max_abs_diff": worst, "win_flips": flips,
                      "bound": {"max_abs_diff": BF16_SCORE_FACTOR * worst,
                                "max_win_flips": flips + BF16_FLIP_MARGIN}}
    return record


def main():
    examples = load_examples()
    texts = []
    for ex in examples:
        formatted = prepare_dialogue(dict(ex), get_conv_template("tulu"))
        texts.append({"chosen": formatted["text_chosen"], "rejected": formatted["text_rejected"]})
    golden = {
        "reference": rbref.REFERENCE,
        "generator": "tests/golden/make_heads_goldens.py",
        "chat_template": "tulu",
        "max_length": MAX_LENGTH,
        "batch_size": BATCH_SIZE,
        "examples": examples,
        "texts": texts,
        "models": {},
    }
    for name, build, seed in MODELS:
        torch.manual_seed(0)
        d = save(build(), name, seed)
        if name == "Nexusflow/Starling-RM-34B":
            starling_tokenizer(d)
        fp32 = run(name, torch.float32, texts)
        bf16 = run(name, torch.bfloat16, texts)
        wins = [c > r for c, r in zip(fp32["chosen"], fp32["rejected"])]
        worst = max(abs(a - b) for side in ("chosen", "rejected")
                    for x, y in zip(fp32[side], bf16[side]) for a, b in zip(flat(x), flat(y)))
        flips = sum(1 for w, c, r in zip(wins, bf16["chosen"], bf16["rejected"]) if w != (c > r))
        margins = [min(abs(a - b) for a, b in zip(flat(c), flat(r))) for c, r in zip(fp32["chosen"], fp32["rejected"])]
        config = json.loads((d / "config.json").read_text())
        golden["models"][name] = {
            "architecture": config["architectures"][0],
            "tokenizer": "fixture" if tokenizer_dir(name) != TOK_LLAMA2 else "shared/data/tokenizers/llama2",
            "scores_chosen": fp32["chosen"],
            "scores_rejected": fp32["rejected"],
            "wins": wins,
            "bf16": {"scores_chosen": bf16["chosen"], "scores_rejected": bf16["rejected"],
                     "max_abs_diff": worst, "win_flips": flips,
                     "bound": {"max_abs_diff": BF16_SCORE_FACTOR * worst,
                               "max_win_flips": flips + BF16_FLIP_MARGIN}},
        }
        size = sum(f.stat().st_size for f in d.iterdir())
        print(f"{name}: {config['architectures'][0]}, {size} bytes, accuracy {sum(wins)}/{len(wins)}, "
              f"smallest |margin| {min(margins):.2e}, bf16 max diff {worst:.4f}, flips {flips}")
    dump_json(OUT / "heads.json", golden)
    cli_golden()


CLI_MODEL = "Nexusflow/Starling-RM-34B"


def cli_golden():
    """The `rewardbench` CLI on the Starling fixture, run from OUT with the REWARD_MODEL_CONFIG key."""
    import tempfile

    dest = OUT / "cli"
    if dest.exists():
        shutil.rmtree(dest)
    dataset = os.path.relpath(HERE / "cli" / "data" / "preference.jsonl", OUT)
    extra = ["--chat_template", "tulu"]
    cwd = os.getcwd()
    os.chdir(OUT)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            output_dir = os.path.join(tmp, "results") + "/"
            argv = ["--model", CLI_MODEL, "--dataset", dataset, "--load_json", "--not_quantized",
                    "--torch_dtype", "float32", "--save_all", "--output_dir", output_dir, *extra]
            rbref.run_cli(argv)
            shutil.copytree(os.path.join(tmp, "results"), dest / "results")
    finally:
        os.chdir(cwd)
    dump_json(dest / "manifest.json", {
        "reference": rbref.REFERENCE,
        "model": CLI_MODEL,
        "dataset": dataset,
        "extra": extra,
        "cli_argv": ["OUTPUT_DIR/" if a == output_dir else a for a in argv],
    })
    print(f"CLI golden: {sorted(str(p.relative_to(dest)) for p in dest.rglob('*') if p.is_file())}")


if __name__ == "__main__":
    main()
