#!/usr/bin/env python3
"""Fixtures and goldens for checkpoints written by PyTorch's `torch.save` (herd's
worker/engine/src/torch_save.rs): `pytorch_model.bin` shards, a bare `.pt` state dict, broken
archives, and berkeley-nest/Starling-RM-7B-alpha, whose weights exist only as such a file.

Reference: the published rewardbench 0.1.4 package with its pinned transformers 4.51.0 and torch, on
CPU, imported through tests/golden/rbref.py (runtime-only CPU patches); the run around the pipeline
is make_heads_goldens.py's (the `rewardbench` CLI's: FastChat "tulu", left padding and truncation,
max_length 2048, pad = EOS when the tokenizer has none, `add_eos_token`), imported from it.

1. tests/golden/fixtures/torch_save/mistral-rm-bin/: tests/golden/fixtures/models/mistral-rm
   (bf16) re-saved by transformers' own `save_pretrained(safe_serialization=False,
   max_shard_size="1MB")`: `pytorch_model-0000N-of-0000M.bin` shards and
   `pytorch_model.bin.index.json`, the format of every hub model published before safetensors.
   The script checks that every tensor is bit-identical to the safetensors file's, so herd's
   scores of the two folders must be identical too (worker/engine/tests/torch_save.rs).
2. tests/golden/fixtures/torch_save/broken/: archives herd must refuse with an error naming the
   file and the reason: the pre-1.6 legacy format, a compressed storage entry, a non-contiguous
   view, a storage entry cut short, a pickled module and a nested dict.
2b. tests/golden/fixtures/torch_save/views.pt: tensors that are contiguous views at non-zero
   offsets into storages shared with other tensors (a row range, one row, a 1-sized dimension
   with an arbitrary stride, a float16 storage), as hand-written checkpoints save split or tied
   weights; their values are recorded so herd must read each at its own offset.
3. berkeley-nest/Starling-RM-7B-alpha (tests/golden/fixtures/torch_save/berkeley-nest/
   Starling-RM-7B-alpha/): the package's `GPTRewardModel` + `StarlingPipeline`
   (rewardbench/models/starling.py). `build_starling_rm` builds `GPTRewardModel` from
   "meta-llama/Llama-2-7b-chat-hf" (a causal LM and its tokenizer) and then loads the first `.pt`
   or `model.bin` file of the model's snapshot with `load_state_dict(..., strict=False)`; here the
   base is a tiny random LlamaForCausalLM with the Llama-2 tokenizer of ../shared/data (the same
   tokenizer.model as meta-llama's), and those loading lines are TRANSCRIBED (the hub download is
   replaced by the local folder). The folder holds what that loading needs: the base's config.json
   and tokenizer, and the reward model's whole `state_dict()` saved with `torch.save` as
   `model.pt` (so `model.model.*`, `model.lm_head.weight` and `transformer.*`, the latter two
   sharing storages, and `v_head.weight`).
   `GPTRewardModel.PAD_ID = tokenizer(tokenizer.pad_token)["input_ids"][0]` with pad = unk: the
   Llama-2 tokenizer prepends BOS, so PAD_ID is 1 (BOS), asserted below; the reward of a row is
   read before its first id 1, or at its last column when that is index 0. Alone, every row starts
   with BOS: the reward is the last token's. In the CLI's left-padded batches a shorter row's first
   BOS follows its pads, so the package reads the hidden state of a LEFT PAD (a fully masked
   query, whose value the attention backend decides); herd does not reproduce that read. The
   golden is therefore each text alone (batch size 1, `scores_*`); the CLI's batches of 8 are
   recorded as `cli_batch_scores_*`, with their largest difference, for information.
   `v_head` is made outside `from_pretrained`, so it stays float32 whatever the body's dtype: the
   package runs only in float32 (in bf16 its forward fails on the dtype mismatch). The bf16 draw
   here casts the states to float32 at the head (a forward pre-hook, marked below), which is what
   herd's float32 head does.

Output: tests/golden/fixtures/torch_save/torch_save.json.

Regenerate (from the repository root):
    ~/.cache/herd/venv-rewardbench-0.1.4/bin/python tests/golden/make_torch_save_goldens.py
"""

import io
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rbref  # noqa: E402  (patches first)
import make_heads_goldens as mh  # noqa: E402  (helpers only: its main() is not run)
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaForCausalLM  # noqa: E402

from rewardbench.models import REWARD_MODEL_CONFIG  # noqa: E402
from rewardbench.models.starling import GPTRewardModel  # noqa: E402
from rewardbench.utils import check_tokenizer_chat_template  # noqa: E402

OUT = HERE / "fixtures" / "torch_save"
STARLING = "berkeley-nest/Starling-RM-7B-alpha"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
transformers.logging.set_verbosity_error()
assert transformers.__version__ == rbref.EXPECTED_TRANSFORMERS, transformers.__version__


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# ------------------------------------------------------------------------------------------------
# 1. transformers' .bin shards of a fixture model
# ------------------------------------------------------------------------------------------------
def make_bin_shards():
    source = HERE / "fixtures" / "models" / "mistral-rm"
    out = fresh(OUT / "mistral-rm-bin")
    model = AutoModelForSequenceClassification.from_pretrained(source, torch_dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=False, max_shard_size="1MB")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(source / f, out / f)
    shards = sorted(p.name for p in out.glob("pytorch_model-*.bin"))
    assert len(shards) >= 2 and (out / "pytorch_model.bin.index.json").is_file(), shards
    saved = {}
    for shard in shards:
        saved.update(torch.load(out / shard, map_location="cpu", weights_only=True))
    original = load_file(str(source / "model.safetensors"))
    assert saved.keys() == original.keys(), (saved.keys() ^ original.keys())
    for name, tensor in original.items():
        assert saved[name].dtype == tensor.dtype and torch.equal(saved[name], tensor), name
    return {"source": "tests/golden/fixtures/models/mistral-rm", "shards": shards}


# ------------------------------------------------------------------------------------------------
# 2. archives herd must refuse
# ------------------------------------------------------------------------------------------------
def rewrite_zip(path: Path, edit):
    """Rewrites the zip archive `path` entry by entry through `edit(info, data) -> (compress, data)`."""
    entries = []
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            entries.append((info.filename, z.read(info.filename)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in entries:
            compress, data = edit(name, data)
            # a fixed timestamp: the same bytes on every run
            z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, compress_type=compress)
    path.write_bytes(buffer.getvalue())


def make_broken():
    out = fresh(OUT / "broken")
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(4, 6, generator=g)
    # (the legacy format keys its storages by memory address: its bytes differ from run to run)
    torch.save({"weight": weight}, out / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({"weight": weight}, out / "compressed.pt")
    rewrite_zip(out / "compressed.pt",
                lambda name, data: (zipfile.ZIP_DEFLATED if "/data/" in name else zipfile.ZIP_STORED, data))
    torch.save({"weight": weight.t()}, out / "noncontiguous.pt")
    torch.save({"weight": weight}, out / "truncated.pt")
    rewrite_zip(out / "truncated.pt",
                lambda name, data: (zipfile.ZIP_STORED, data[: len(data) // 2] if "/data/" in name else data))
    torch.save(torch.nn.Linear(6, 4), out / "module.pt")
    torch.save({"model": {"weight": weight}}, out / "nested.pt")
    return sorted(p.name for p in out.iterdir())


def make_views():
    g = torch.Generator().manual_seed(6)
    base = torch.randn(6, 4, generator=g)
    half = torch.randn(3, 5, generator=g).to(torch.float16)
    tensors = {
        "whole": base,
        "rows": base[2:5],
        "row": base[4],
        "unit": base[1:2],  # shape (1, 4): its first stride is free
        "half_tail": half[1:],
    }
    torch.save(tensors, OUT / "views.pt")
    reread = torch.load(OUT / "views.pt", map_location="cpu", weights_only=True)
    offsets = {name: t.storage_offset() for name, t in reread.items()}
    # one storage per source tensor, and every view but the whole ones away from its start
    assert reread["rows"].untyped_storage().data_ptr() == reread["whole"].untyped_storage().data_ptr()
    assert all(offsets[name] > 0 for name in ("rows", "row", "unit", "half_tail")), offsets
    return {
        name: {"shape": list(t.shape), "dtype": str(t.dtype), "storage_offset": offsets[name],
               "values": t.float().flatten().tolist()}
        for name, t in reread.items()
    }


# ------------------------------------------------------------------------------------------------
# 3. Starling-RM-7B-alpha
# ------------------------------------------------------------------------------------------------
BASE = OUT / "_base"  # the stand-in for meta-llama/Llama-2-7b-chat-hf, removed at the end


def build_starling(seed):
    base = fresh(BASE)
    LlamaForCausalLM(mh.llama_config()).save_pretrained(base, safe_serialization=True)
    for f in mh.TOKENIZER_FILES:
        shutil.copyfile(mh.TOK_LLAMA2 / f, base / f)
    reward_model = GPTRewardModel(str(base))
    assert reward_model.PAD_ID == 1, reward_model.PAD_ID  # tokenizer("<unk>") = [BOS, unk]
    mh.randomize_(reward_model, seed)
    reward_model.to(torch.bfloat16)
    out = fresh(OUT / STARLING)
    torch.save(reward_model.state_dict(), out / "model.pt")
    # what scoring needs beside the checkpoint: the base's config.json and the tokenizer
    for f in ["config.json"] + mh.TOKENIZER_FILES:
        shutil.copyfile(base / f, out / f)
    return out


def load_starling(d: Path, dtype):
    """build_starling_rm's loading (TRANSCRIBED: the base is BASE, the snapshot the folder `d`)."""
    reward_model = GPTRewardModel(str(BASE), torch_dtype=dtype)
    for fpath in os.listdir(d):
        if fpath.endswith(".pt") or fpath.endswith("model.bin"):
            checkpoint = os.path.join(d, fpath)
            break
    reward_model.load_state_dict(torch.load(checkpoint), strict=False)
    if dtype != torch.float32:
        # patch (bf16 draw only): `v_head` is built outside from_pretrained, so it stays float32
        # while the body takes `dtype`, and the package's forward then fails in F.linear (float32
        # weight, bf16 states); the states are cast to float32 at the head instead
        reward_model.v_head.register_forward_pre_hook(lambda _m, args: tuple(a.float() for a in args))
    return reward_model.eval().requires_grad_(False)


def run_starling(d: Path, dtype, texts, batch):
    tokenizer = AutoTokenizer.from_pretrained(d)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    model = load_starling(d, dtype)
    pipe = REWARD_MODEL_CONFIG[STARLING]["pipeline_builder"]("text-classification", model=model,
                                                             tokenizer=tokenizer)
    if tokenizer.pad_token_id is None:
        model.config.pad_token_id = tokenizer.eos_token_id
        tokenizer.pad_token_id = tokenizer.eos_token_id
    assert not check_tokenizer_chat_template(tokenizer)
    tokenizer.add_eos_token = True
    kwargs = {"batch_size": batch, "truncation": True, "padding": True, "max_length": mh.MAX_LENGTH,
              "function_to_apply": "none", "return_token_type_ids": False}
    scores = {"chosen": [], "rejected": []}
    for i in range(0, len(texts), batch):
        part = texts[i:i + batch]
        for side in ("chosen", "rejected"):
            transformers.BatchEncoding.to = mh._to_cpu_for_cuda
            with torch.no_grad():
                rewards = pipe([t[side] for t in part], **kwargs)
            scores[side].extend(rewards.float().cpu().numpy().tolist())
    return scores


def starling_golden(examples, texts):
    d = build_starling(31)
    fp32 = run_starling(d, torch.float32, texts, 1)
    bf16 = run_starling(d, torch.bfloat16, texts, 1)
    cli = run_starling(d, torch.float32, texts, mh.BATCH_SIZE)
    record = mh.scored_record(fp32, ((fp32, bf16),))
    wins, worst, flips = record["wins"], record["bf16"]["max_abs_diff"], record["bf16"]["win_flips"]
    cli_diff = max(abs(a - b) for side in ("chosen", "rejected") for a, b in zip(fp32[side], cli[side]))
    margins = [abs(c - r) for c, r in zip(fp32["chosen"], fp32["rejected"])]
    print(f"{STARLING}: accuracy {sum(wins)}/{len(wins)}, smallest |margin| {min(margins):.2e}, "
          f"bf16 max diff {worst:.4f}, flips {flips}, CLI batches differ by up to {cli_diff:.3f}")
    assert cli_diff > 1e-3, "the CLI's left-pad reads should differ from each text alone"
    return {
        "architecture": json.loads((d / "config.json").read_text())["architectures"][0],
        "tokenizer": "shared/data/tokenizers/llama2",
        "pad_id": 1,
        **record,
        "cli_batch_scores_chosen": cli["chosen"],
        "cli_batch_scores_rejected": cli["rejected"],
        "cli_batch_max_abs_diff": cli_diff,
    }


def main():
    examples = mh.load_examples()
    texts = mh.tulu_texts(examples)
    torch.manual_seed(0)
    golden = {
        "reference": rbref.REFERENCE,
        "generator": "tests/golden/make_torch_save_goldens.py",
        "chat_template": "tulu",
        "max_length": mh.MAX_LENGTH,
        "batch_size": 1,
        "examples": examples,
        "texts": texts,
        "bin_shards": make_bin_shards(),
        "broken": make_broken(),
        "views": make_views(),
        "models": {STARLING: starling_golden(examples, texts)},
    }
    mh.dump_json(OUT / "torch_save.json", golden)
    shutil.rmtree(BASE)


if __name__ == "__main__":
    main()
