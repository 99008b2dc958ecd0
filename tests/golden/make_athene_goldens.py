#!/usr/bin/env python3
"""Goldens for herd's Athene reward models (Nexusflow/Athene-RM-8B, Nexusflow/Athene-RM-70B:
worker/engine/src/models/reward_heads/athene.rs).

Reference. RewardBench 0.1.4 has no entry for Athene (rewardbench/models/__init__.py names none),
and transformers has no class for it: config.json names `CustomAutoModelForSequenceClassification`,
the training code's class, which no auto_map resolves. The reference is the hub model card's code,
TRANSCRIBED below (marked), from https://huggingface.co/Nexusflow/Athene-RM-8B/blob/main/README.md
(commits 5b1310f "Create README.md", 358287c, cdf428f; the same code in
https://huggingface.co/Nexusflow/Athene-RM-70B/blob/main/README.md, commit e71206c, and, with a
batched pipeline, in allenai/reward-bench branch codex/add-llama3-athene-rm-70b-model-to-rewardbench,
rewardbench/models/athene.py at 98cda4a8781d40e97e2a153be9253cc81559ba6c, never merged):
  * AtheneForSequenceClassification: `LlamaModel` as `model`, `v_head = nn.Linear(hidden, 1,
    bias=False)` on `hidden_states[-1]`, the reward at the LAST index where `input_ids == CLS_ID`
    (`CLS_ID = 128003`), `{"scores": torch.stack(scores)}`;
  * AtheneRewardPipeline (a TextClassificationPipeline): preprocess formats the messages with
    `tokenizer.apply_chat_template(inputs, tokenize=False)`, appends `tokenizer.cls_token` and
    tokenizes with `max_length=4096, padding="longest", truncation=True` and the default special
    tokens (so the tokenizer's BOS comes before the BOS the chat template writes); postprocess
    returns `scores.cpu().float().item()`: one float per conversation, one conversation per forward.
The rest is transformers 4.51.0 (the version rewardbench 0.1.4 pins; its venv runs this script):
LlamaModel, the tokenizer, `pipeline(..., pipeline_class=AtheneRewardPipeline)`.

One change to the transcription, for a tiny model: `CLS_ID` is the tokenizer's `cls_token_id`
instead of the literal 128003. No tokenizer here holds id 128003 (`<|reserved_special_token_1|>` of
the Llama-3 tokenizer, which the hub tokenizer names as cls_token) and a 128256-row embedding would
not be tiny. For the hub models the two are the same id; herd reads the cls_token's id and refuses a
tokenizer whose cls_token is not 128003 when the vocabulary holds 128003.

Tokenizer (committed beside the model): the Llama-2 tokenizer of ../shared/data/tokenizers/llama2
with `<|reserved_special_token_1|>` added as its cls_token (a new special token, id 32000), the
Meta-Llama-3-Instruct chat template (it writes `bos_token` before the first turn; Athene-RM-8B's
base model is meta-llama/Meta-Llama-3-8B-Instruct; the hub tokenizer_config.json could not be read
from here) and `pad_token = "<unk>"`: the card's `padding="longest"` makes transformers demand a pad
token even for one row (nothing is padded, the scores do not depend on it).

Model (tests/golden/fixtures/athene/Nexusflow/Athene-RM-8B/, the folder path ending with the name
herd's registry serves): a tiny random Llama body (hidden 16, 2 layers, 4 heads / 2 kv heads,
rope_theta 500000 as Llama-3, vocabulary 32001) with its v_head, saved in bfloat16 with config.json
`architectures` set to the hub's `CustomAutoModelForSequenceClassification`; the goldens RE-LOAD it
in float32. Examples: make_heads_goldens.load_examples (the first 2 rows of each llmbar and hep
subset of ../shared/data, 22 pairs), each response as [user prompt, assistant response].

Output: tests/golden/fixtures/athene/athene.json, keyed as make_heads2_goldens.py's heads2.json: per
example the chat-template text and the pipeline's input ids; per model the fp32 scores (a float per
conversation), the wins, and a bf16 bound (2x the largest |bf16 - fp32| of the card's pipeline with
the folder loaded in bfloat16, its win flips + 2).

Regenerate (from the repository root):
    ~/.cache/herd/venv-rewardbench-0.1.4/bin/python tests/golden/make_athene_goldens.py
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_heads_goldens as mh  # noqa: E402  (helpers only: its main() is not run)
import torch  # noqa: E402
import transformers  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer, LlamaConfig, LlamaModel, LlamaPreTrainedModel, TextClassificationPipeline, pipeline,
)

OUT = HERE / "fixtures" / "athene"
NAME = "Nexusflow/Athene-RM-8B"
ARCHITECTURE = "CustomAutoModelForSequenceClassification"
CLS_TOKEN = "<|reserved_special_token_1|>"
MAX_LENGTH = 4096  # the card's preprocess
# the Meta-Llama-3-Instruct chat template
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

assert transformers.__version__ == "4.51.0", transformers.__version__


# -----------------------------------------------------------------------------------------------
# TRANSCRIPTION (not a package's code): the Athene-RM model card's classes
# -----------------------------------------------------------------------------------------------
class AtheneForSequenceClassification(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.v_head = nn.Linear(config.hidden_size, 1, bias=False)
        self.CLS_ID = 128003  # set to the tiny tokenizer's cls_token_id after loading (docstring)
        self.post_init()

    def get_device(self):
        return self.model.device

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, position_ids=None):
        transformer_outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
        )
        hidden_states = transformer_outputs.hidden_states[-1]
        scores = []
        rewards = self.v_head(hidden_states).squeeze(-1)
        bs = int(input_ids.shape[0])
        for i in range(bs):
            c_inds = (input_ids[i] == self.CLS_ID).nonzero()
            c_ind = c_inds[-1].item()
            scores.append(rewards[i, c_ind])
        scores = torch.stack(scores)
        return {"scores": scores}


class AtheneRewardPipeline(TextClassificationPipeline):
    def preprocess(self, inputs, **tokenizer_kwargs) -> Dict[str, torch.Tensor]:
        return_tensors = self.framework
        formatted = self.tokenizer.apply_chat_template(inputs, tokenize=False)
        formatted = formatted + self.tokenizer.cls_token
        return self.tokenizer(
            formatted,
            return_tensors=return_tensors,
            max_length=4096,
            padding="longest",
            truncation=True,
        )

    def postprocess(self, model_outputs, function_to_apply=None, top_k=1, _legacy=True):
        return model_outputs["scores"].cpu().float().item()
# ----------------------------------------------------------------------------- end of transcription


def build_tokenizer(d: Path):
    """The Llama-2 tokenizer with Athene's cls_token added, the Llama-3 template and a pad token."""
    tok = AutoTokenizer.from_pretrained(mh.TOK_LLAMA2)
    tok.add_special_tokens({"cls_token": CLS_TOKEN, "pad_token": "<unk>"})
    tok.chat_template = LLAMA3_TEMPLATE
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        for f in ("tokenizer_config.json", "special_tokens_map.json"):
            shutil.copyfile(Path(tmp) / f, d / f)
        added = json.loads((Path(tmp) / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    # tokenizer.json: the shared file (its compact merges) with the added token entry transformers
    # wrote, rather than transformers' re-serialisation (twice the size)
    data = json.loads((mh.TOK_LLAMA2 / "tokenizer.json").read_text(encoding="utf-8"))
    new = [t for t in added if t["content"] == CLS_TOKEN]
    assert len(new) == 1 and new[0]["id"] == 32000, new
    data["added_tokens"].append(new[0])
    (d / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    reloaded = AutoTokenizer.from_pretrained(d)
    assert reloaded.cls_token == CLS_TOKEN and reloaded.cls_token_id == 32000, reloaded.cls_token_id
    assert reloaded.pad_token_id == 0 and reloaded.chat_template == LLAMA3_TEMPLATE
    probe = "Hello <s> world" + CLS_TOKEN + " again" + CLS_TOKEN
    assert reloaded(probe)["input_ids"] == tok(probe)["input_ids"], probe
    return reloaded


def build_model(d: Path, cls_id: int, seed: int):
    config = LlamaConfig(
        vocab_size=cls_id + 1, hidden_size=16, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_theta=500000.0, bos_token_id=1, eos_token_id=2, pad_token_id=None,
        tie_word_embeddings=False, hidden_act="silu",
    )
    model = AtheneForSequenceClassification(config)
    mh.randomize_(model, seed)
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    # the hub's config.json names the training code's class
    path = d / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["architectures"] = [ARCHITECTURE]
    path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def load_pipe(d: Path, dtype):
    tokenizer = AutoTokenizer.from_pretrained(d)
    model = AtheneForSequenceClassification.from_pretrained(d, torch_dtype=dtype).eval()
    # the one change to the card's code (docstring): the CLS id of the tiny tokenizer
    model.CLS_ID = tokenizer.cls_token_id
    return pipeline(task="text-classification", model=model, tokenizer=tokenizer,
                    pipeline_class=AtheneRewardPipeline, device="cpu")


def messages(prompt, response):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def run(pipe, examples):
    scores = {"chosen": [], "rejected": []}
    with torch.no_grad():
        for ex in examples:
            for side in ("chosen", "rejected"):
                out = pipe([messages(ex["prompt"], ex[side])])
                assert isinstance(out, list) and len(out) == 1 and isinstance(out[0], float), out
                scores[side].append(out[0])
    return scores


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    if OUT.exists():
        shutil.rmtree(OUT)
    d = OUT / NAME
    d.mkdir(parents=True)
    tok = build_tokenizer(d)
    build_model(d, tok.cls_token_id, seed=31)

    examples = mh.load_examples()
    for ex in examples:
        for side in ("chosen", "rejected"):
            text = tok.apply_chat_template(messages(ex["prompt"], ex[side]), tokenize=False)
            ids = tok(text + tok.cls_token, max_length=MAX_LENGTH, truncation=True)["input_ids"]
            # the card's rows: the tokenizer's BOS, the template's BOS, ..., the cls token; none cut
            assert ids[:2] == [tok.bos_token_id, tok.bos_token_id] and ids[-1] == tok.cls_token_id, ids[:3]
            assert len(ids) < MAX_LENGTH, len(ids)
            ex[f"text_{side}"] = text
            ex[f"input_ids_{side}"] = ids

    fp32 = run(load_pipe(d, torch.float32), examples)
    bf16 = run(load_pipe(d, torch.bfloat16), examples)
    record = mh.scored_record(fp32, ((fp32, bf16),))
    wins, worst, flips = record["wins"], record["bf16"]["max_abs_diff"], record["bf16"]["win_flips"]
    margins = [abs(c - r) for c, r in zip(fp32["chosen"], fp32["rejected"])]
    golden = {
        "reference": "transcription of the Athene-RM model card (AtheneForSequenceClassification + "
                     "AtheneRewardPipeline), transformers " + transformers.__version__ + ", torch "
                     + torch.__version__.split("+")[0] + " (CPU, fp32 unless stated)",
        "generator": "tests/golden/make_athene_goldens.py",
        # the tokenizer's own template wins over the requested FastChat one, as in RewardBench
        "chat_template": "tulu",
        "max_length": MAX_LENGTH,
        "cls_token": tok.cls_token,
        "cls_token_id": tok.cls_token_id,
        "examples": examples,
        "models": {
            NAME: {
                "architecture": ARCHITECTURE,
                "model_type": "llama",
                **record,
            }
        },
    }
    mh.dump_json(OUT / "athene.json", golden)
    size = sum(f.stat().st_size for f in d.iterdir())
    print(f"{NAME}: {size} bytes, accuracy {sum(wins)}/{len(wins)}, smallest |margin| {min(margins):.2e}, "
          f"bf16 max diff {worst:.4f}, flips {flips}")


if __name__ == "__main__":
    main()
