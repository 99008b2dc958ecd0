#!/usr/bin/env python3
"""Tiny EasyLM streaming checkpoints + goldens for herd's EasyLM reader/converter (no JAX needed).

Writes tests/golden/easylm/ (deleted and rewritten):

  worked-examples.msgpack     the byte sequences worked out in shared/reference/easylm-and-peers.md A2.3,
                              produced by this script's encoder and asserted equal to the reference's hex:
                              wq f32 (2,3) record, score bf16 (2,1) record, a 0-d int32 (ext8) under
                              opt_state, and a train-state `step` int (payload 0x07).
  rm-gqa-bf16.streaming_params
                              reward model (score.kernel), bfloat16, GQA 4 heads / 2 kv heads, head size 8,
                              records in sorted key order (score before transformer), bin8/bin16 payloads
                              with ext8/ext16 arrays.
  rm-fp32.streaming_train_state
                              the same kind of model in float32 as a TrainState: `step` int first, every
                              parameter under params/params/, then opt_state records (0-d int32 count in
                              ext8, 0-d float32 in fixext16, float32 mu arrays); vocab 600 so the embedding
                              is an ext32 inside a bin32; rope_theta 500000 (an override).
  rm-mha-chunked.streaming_params
                              bfloat16, 4 heads = 4 kv heads, every array over 256 bytes in flax's chunked
                              form ({"__msgpack_chunked_array__", "shape", "chunks"}, last chunk shorter),
                              records in module order (transformer first).
  lm-mqa-f16-legacy.streaming_params
                              causal LM (lm_head.kernel), float16, 4 heads / 1 kv head, rms_norm_eps 1e-5,
                              written like msgpack < 1.0 (use_bin_type=False): payloads and buffers are
                              msgpack str, not bin.

For each model fixture, <name>.json holds: the options herd needs (num_heads and overrides, since these shapes
are outside the size table), the expected config fields, token-id inputs, and outputs of
  * a float64 numpy forward of the ORIGINAL EasyLM weights with interleaved (Meta-style) rotary, and
  * transformers (fp32) on the weights converted with this script's numpy mapping (transpose + the rotary
    permutation by its index formula, checked element by element against the upstream view/transpose code);
both agree to < 1e-4 (asserted). <name>.expected-bf16.safetensors holds the Hugging Face tensors that
`worker convert` must write with its default --dtype bf16 (torch's round-to-nearest-even for float32 and
float16 sources), compared byte for byte by worker/tests/easylm_golden.rs.

Subcommand `check-hf --golden F.json --model DIR`: loads a folder written by `worker convert` with
transformers (fp32) and compares its outputs to the goldens; worker/tests/easylm_golden.rs runs it when the
herd venv's python is present.

Regenerate (from the repository root):
    $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_easylm_fixtures.py
Deterministic (fixed seeds). Tested with numpy 2.4, msgpack 1.1, torch 2.11.0, transformers 4.57.6.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import msgpack
import numpy as np

OUT = Path(__file__).resolve().parent / "easylm"

# ------------------------------------------------------------------------------------------------
# encoding (flax.serialization.to_bytes, EasyLM StreamingCheckpointer)


def bf16_bits(f32):
    """float32 array -> bfloat16 bit patterns (uint16), round to nearest even (NaN-free inputs)."""
    u = np.ascontiguousarray(f32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def raw_bytes(values, dtype):
    """(bytes, values as float64 exactly as stored) for a float64 array stored in `dtype`."""
    if dtype == "bfloat16":
        bits = bf16_bits(values.astype(np.float32))
        return bits.tobytes(), bf16_to_f32(bits).astype(np.float64)
    arr = values.astype(np.dtype(dtype).newbyteorder("<"))
    return arr.tobytes(), arr.astype(np.float64)


def ndarray_ext_data(shape, dtype, raw, bin_type=True):
    return msgpack.packb((list(shape), dtype, raw), use_bin_type=bin_type)


def to_bytes_array(shape, dtype, raw, bin_type=True):
    """flax to_bytes(ndarray) for arrays of 1 GiB or less: ExtType(1, packb((shape, dtype, buffer)))."""
    return msgpack.packb(msgpack.ExtType(1, ndarray_ext_data(shape, dtype, raw, bin_type)), use_bin_type=bin_type)


def to_bytes_chunked(shape, dtype, raw, itemsize, max_chunk):
    """flax's chunked form (_chunk in flax/serialization.py) with MAX_CHUNK_SIZE = max_chunk."""
    chunk_elems = max(1, max_chunk // itemsize)
    n = len(raw) // itemsize
    chunks = {}
    for i, start in enumerate(range(0, n, chunk_elems)):
        piece = raw[start * itemsize:min(n, start + chunk_elems) * itemsize]
        chunks[str(i)] = msgpack.ExtType(1, ndarray_ext_data([len(piece) // itemsize], dtype, piece))
    data = {
        "__msgpack_chunked_array__": True,
        "shape": {str(i): d for i, d in enumerate(shape)},
        "chunks": chunks,
    }
    return msgpack.packb(data, use_bin_type=True)


def record(key, payload, bin_type=True):
    return msgpack.Packer(use_bin_type=bin_type).pack((tuple(key), payload))


def check_worked_examples():
    """shared/reference/easylm-and-peers.md A2.3, byte for byte."""
    s = lambda text: bytes([0xA0 + len(text)]) + text.encode()  # fixstr
    wq = record(
        ["transformer", "h", "0", "attention", "wq", "kernel"],
        to_bytes_array((2, 3), "float32", np.arange(6, dtype="<f4").tobytes()),
    )
    expected_wq = (
        bytes([0x92, 0x96]) + s("transformer") + s("h") + s("0") + s("attention") + s("wq") + s("kernel")
        + bytes([0xC4, 0x29, 0xC7, 0x26, 0x01, 0x93, 0x92, 0x02, 0x03]) + s("float32")
        + bytes([0xC4, 0x18]) + np.arange(6, dtype="<f4").tobytes()
    )
    assert wq == expected_wq, wq.hex()
    score_raw, _ = raw_bytes(np.array([[1.0], [-2.0]]), "bfloat16")
    score = record(["score", "kernel"], to_bytes_array((2, 1), "bfloat16", score_raw))
    expected_score = (
        bytes([0x92, 0x92]) + s("score") + s("kernel") + bytes([0xC4, 0x16, 0xC7, 0x13, 0x01, 0x93, 0x92, 0x02, 0x01])
        + s("bfloat16") + bytes([0xC4, 0x04, 0x80, 0x3F, 0x00, 0xC0])
    )
    assert score == expected_score, score.hex()
    int7 = to_bytes_array((), "int32", np.int32(7).tobytes())
    assert int7 == bytes([0xC7, 0x0E, 0x01, 0x93, 0x90]) + s("int32") + bytes([0xC4, 0x04, 7, 0, 0, 0]), int7.hex()
    assert msgpack.packb(7) == b"\x07"
    # a 0-d float32 lands exactly on fixext16 (0xd8)
    f0 = to_bytes_array((), "float32", np.float32(0.5).tobytes())
    assert f0[0] == 0xD8 and len(f0) == 18, f0.hex()
    return wq + score + record(["opt_state", "count"], int7) + record(["step"], msgpack.packb(7))


# ------------------------------------------------------------------------------------------------
# tiny LLaMA models: EasyLM names and flax shapes


def easylm_params(rng, vocab, dim, heads, kv_heads, ffn, layers, head):
    hd = dim // heads
    p = {}

    def mat(*shape, scale):
        return rng.standard_normal(shape) * scale

    p[("transformer", "wte", "embedding")] = mat(vocab, dim, scale=1.0)
    for i in range(layers):
        h = ("transformer", "h", str(i))
        p[h + ("attention", "wq", "kernel")] = mat(dim, heads * hd, scale=dim ** -0.5)
        p[h + ("attention", "wk", "kernel")] = mat(dim, kv_heads * hd, scale=dim ** -0.5)
        p[h + ("attention", "wv", "kernel")] = mat(dim, kv_heads * hd, scale=dim ** -0.5)
        p[h + ("attention", "wo", "kernel")] = mat(heads * hd, dim, scale=dim ** -0.5)
        p[h + ("feed_forward", "w1", "kernel")] = mat(dim, ffn, scale=dim ** -0.5)
        p[h + ("feed_forward", "w3", "kernel")] = mat(dim, ffn, scale=dim ** -0.5)
        p[h + ("feed_forward", "w2", "kernel")] = mat(ffn, dim, scale=ffn ** -0.5)
        p[h + ("attention_norm", "kernel")] = 1.0 + 0.2 * rng.standard_normal(dim)
        p[h + ("ffn_norm", "kernel")] = 1.0 + 0.2 * rng.standard_normal(dim)
    p[("transformer", "ln_f", "kernel")] = 1.0 + 0.2 * rng.standard_normal(dim)
    if head == "score":
        p[("score", "kernel")] = mat(dim, 1, scale=1.0)
    else:
        p[("lm_head", "kernel")] = mat(dim, vocab, scale=dim ** -0.5)
    return p


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope_interleaved(x, theta):
    """EasyLM apply_rotary_emb: pairs (2i, 2i+1) rotated as complex numbers. x: (T, n, hd)."""
    t, _, hd = x.shape
    freqs = 1.0 / theta ** (np.arange(0, hd, 2)[: hd // 2] / hd)
    angles = np.outer(np.arange(t), freqs)
    xc = x[..., 0::2] + 1j * x[..., 1::2]
    out = xc * np.exp(1j * angles)[:, None, :]
    res = np.empty_like(x)
    res[..., 0::2] = out.real
    res[..., 1::2] = out.imag
    return res


def easylm_forward(p, cfg, ids):
    """float64 forward of the EasyLM LLaMA on the stored weights; returns final normed hidden states."""
    heads, kv_heads, layers, eps, theta = cfg["heads"], cfg["kv_heads"], cfg["layers"], cfg["eps"], cfg["theta"]
    x = p[("transformer", "wte", "embedding")][ids]
    t, dim = x.shape
    hd = dim // heads
    mask = np.tril(np.ones((t, t), dtype=bool))
    for i in range(layers):
        h = ("transformer", "h", str(i))
        a = rms_norm(x, p[h + ("attention_norm", "kernel")], eps)
        q = (a @ p[h + ("attention", "wq", "kernel")]).reshape(t, heads, hd)
        k = (a @ p[h + ("attention", "wk", "kernel")]).reshape(t, kv_heads, hd)
        v = (a @ p[h + ("attention", "wv", "kernel")]).reshape(t, kv_heads, hd)
        q, k = rope_interleaved(q, theta), rope_interleaved(k, theta)
        rep = heads // kv_heads
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
        scores = np.where(mask[None], scores, -np.inf)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attended = np.einsum("hqk,khd->qhd", scores, v).reshape(t, heads * hd)
        x = x + attended @ p[h + ("attention", "wo", "kernel")]
        m = rms_norm(x, p[h + ("ffn_norm", "kernel")], eps)
        gate = m @ p[h + ("feed_forward", "w1", "kernel")]
        up = m @ p[h + ("feed_forward", "w3", "kernel")]
        x = x + (gate / (1 + np.exp(-gate)) * up) @ p[h + ("feed_forward", "w2", "kernel")]
    return rms_norm(x, p[("transformer", "ln_f", "kernel")], eps)


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def numpy_outputs(p, cfg, inputs):
    out = []
    for ids in inputs:
        hidden = easylm_forward(p, cfg, np.array(ids))
        if cfg["head"] == "score":
            out.append((hidden[-1] @ p[("score", "kernel")]).tolist())
        else:
            lp = log_softmax(hidden @ p[("lm_head", "kernel")])
            out.append([float(lp[t, ids[t + 1]]) for t in range(len(ids) - 1)])
    return out


# ------------------------------------------------------------------------------------------------
# the Hugging Face mapping, in numpy (index formula) and checked against the upstream torch code


def permute_rows(w_t, n, hd):
    """hf_row[h*hd + j*(hd/2) + i] = easylm_row[h*hd + 2i + j] on a transposed (out, in) kernel."""
    out = np.empty_like(w_t)
    half = hd // 2
    for h in range(n):
        for j in range(2):
            for i in range(half):
                out[h * hd + j * half + i] = w_t[h * hd + 2 * i + j]
    return out


def check_permutation_against_upstream(w_t, n, hd):
    import torch

    dim_in = w_t.shape[1]
    upstream = torch.tensor(w_t).view(n, hd // 2, 2, dim_in).transpose(1, 2).reshape(n * hd, dim_in).numpy()
    mine = permute_rows(w_t, n, hd)
    assert np.array_equal(upstream, mine), "index formula disagrees with w.view(n, hd/2, 2, D).transpose(1, 2)"
    # and the inverse (convert_hf_to_easylm.py inverse_permute) restores the EasyLM rows
    inverse = torch.tensor(mine).reshape(n, 2, hd // 2, dim_in).transpose(1, 2).reshape(n * hd, dim_in).numpy()
    assert np.array_equal(inverse, w_t)


def hf_state_dict(p, cfg):
    heads, kv_heads = cfg["heads"], cfg["kv_heads"]
    sd = {}
    for key, value in p.items():
        name = ".".join(key)
        if name == "transformer.wte.embedding":
            sd["model.embed_tokens.weight"] = value
        elif name == "transformer.ln_f.kernel":
            sd["model.norm.weight"] = value
        elif name == "score.kernel":
            sd["score.weight"] = value.T
        elif name == "lm_head.kernel":
            sd["lm_head.weight"] = value.T
        else:
            _, _, i, *rest = key
            pre = f"model.layers.{i}."
            rest = ".".join(rest)
            hd = value.shape[0] // heads if rest == "attention.wq.kernel" else None
            mapping = {
                "attention_norm.kernel": ("input_layernorm.weight", None),
                "ffn_norm.kernel": ("post_attention_layernorm.weight", None),
                "attention.wq.kernel": ("self_attn.q_proj.weight", heads),
                "attention.wk.kernel": ("self_attn.k_proj.weight", kv_heads),
                "attention.wv.kernel": ("self_attn.v_proj.weight", 0),
                "attention.wo.kernel": ("self_attn.o_proj.weight", 0),
                "feed_forward.w1.kernel": ("mlp.gate_proj.weight", 0),
                "feed_forward.w3.kernel": ("mlp.up_proj.weight", 0),
                "feed_forward.w2.kernel": ("mlp.down_proj.weight", 0),
            }
            hf, permute = mapping[rest]
            if permute is None:
                sd[pre + hf] = value
            elif permute == 0:
                sd[pre + hf] = value.T
            else:
                hd = cfg["dim"] // heads
                w_t = np.ascontiguousarray(value.T)
                check_permutation_against_upstream(w_t, permute, hd)
                sd[pre + hf] = permute_rows(w_t, permute, hd)
    return sd


def hf_config(cfg):
    """What herd writes for these shapes and options (LLaMA-2 family defaults: bos 1, eos 2, pad 0)."""
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=cfg["vocab"],
        hidden_size=cfg["dim"],
        intermediate_size=cfg["ffn"],
        num_hidden_layers=cfg["layers"],
        num_attention_heads=cfg["heads"],
        num_key_value_heads=cfg["kv_heads"],
        head_dim=cfg["dim"] // cfg["heads"],
        rms_norm_eps=cfg["eps"],
        rope_theta=cfg["theta"],
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    if cfg["head"] == "score":
        config.num_labels = 1
        config.architectures = ["LlamaForSequenceClassification"]
    else:
        config.architectures = ["LlamaForCausalLM"]
    return config


def transformers_outputs(model, head, inputs):
    import torch

    out = []
    with torch.no_grad():
        for ids in inputs:
            x = torch.tensor([ids])
            if head == "score":
                out.append(model(input_ids=x).logits[0].double().tolist())
            else:
                lp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
                out.append([float(lp[t, ids[t + 1]]) for t in range(len(ids) - 1)])
    return out


def transformers_from_numpy(sd, cfg):
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = hf_config(cfg)
    cls = LlamaForSequenceClassification if cfg["head"] == "score" else LlamaForCausalLM
    model = cls(config).float().eval()
    state = {k: torch.tensor(np.ascontiguousarray(v), dtype=torch.float32) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if "rotary_emb" not in m]
    assert not missing and not unexpected, (missing, unexpected)
    return model


def max_diff(a, b):
    """Max |a - b| over equal-shaped outputs (a zip would pass over missing rows silently)."""
    if len(a) != len(b) or any(len(ra) != len(rb) for ra, rb in zip(a, b)):
        raise ValueError(f"output shapes differ: {[len(r) for r in a]} vs {[len(r) for r in b]}")
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


# ------------------------------------------------------------------------------------------------
# fixtures

FIXTURES = [
    dict(name="rm-gqa-bf16", file="rm-gqa-bf16.streaming_params", seed=1, vocab=96, dim=32, heads=4, kv_heads=2,
         ffn=64, layers=2, head="score", dtype="bfloat16", eps=1e-6, theta=10000.0, layout="params",
         order="sorted", framing="bin", chunk=None, options={"num_heads": 4}),
    dict(name="rm-fp32-trainstate", file="rm-fp32.streaming_train_state", seed=2, vocab=600, dim=32, heads=4,
         kv_heads=2, ffn=64, layers=2, head="score", dtype="float32", eps=1e-6, theta=500000.0,
         layout="train_state", order="module", framing="bin", chunk=None,
         options={"num_heads": 4, "rope_theta": 500000.0}),
    dict(name="rm-mha-chunked", file="rm-mha-chunked.streaming_params", seed=3, vocab=96, dim=32, heads=4,
         kv_heads=4, ffn=48, layers=3, head="score", dtype="bfloat16", eps=1e-6, theta=10000.0, layout="params",
         order="module", framing="bin", chunk=256, options={"num_heads": 4}),
    dict(name="lm-mqa-f16-legacy", file="lm-mqa-f16-legacy.streaming_params", seed=4, vocab=80, dim=32, heads=4,
         kv_heads=1, ffn=64, layers=2, head="lm_head", dtype="float16", eps=1e-5, theta=10000.0,
         layout="params", order="module", framing="str", chunk=None,
         options={"num_heads": 4, "rms_norm_eps": 1e-5}),
]


def inputs_for(rng, vocab):
    lengths = [1, 2, 5, 9, 16, 23]
    # ids from 3 up: never the pad id (0), so transformers' "last non-pad token" pooling is the last token
    return [rng.integers(3, vocab, size=n).tolist() for n in lengths]


def write_fixture(fx):
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(fx["seed"])
    cfg = dict(fx)
    p = easylm_params(rng, fx["vocab"], fx["dim"], fx["heads"], fx["kv_heads"], fx["ffn"], fx["layers"], fx["head"])
    # the weights as stored (rounded to the fixture's dtype), which every forward below uses
    stored, raws = {}, {}
    for key, value in p.items():
        raws[key], stored[key] = raw_bytes(value, fx["dtype"])
    keys = sorted(stored) if fx["order"] == "sorted" else list(stored)
    bin_type = fx["framing"] == "bin"
    itemsize = 2 if fx["dtype"] in ("bfloat16", "float16") else 4

    blob = bytearray()
    if fx["layout"] == "train_state":
        blob += record(["step"], msgpack.packb(1903))
    for key in keys:
        shape = stored[key].shape
        if fx["chunk"] is not None and len(raws[key]) > fx["chunk"]:
            payload = to_bytes_chunked(shape, fx["dtype"], raws[key], itemsize, fx["chunk"])
        else:
            payload = to_bytes_array(shape, fx["dtype"], raws[key], bin_type)
        prefix = ("params", "params") if fx["layout"] == "train_state" else ()
        blob += record(prefix + key, payload, bin_type)
    if fx["layout"] == "train_state":
        # optax adamw state: a count, a scalar, and first moments for two tensors
        blob += record(["opt_state", "0", "count"], to_bytes_array((), "int32", np.int32(1903).tobytes()))
        blob += record(["opt_state", "1", "hyperparams", "learning_rate"],
                       to_bytes_array((), "float32", np.float32(1e-5).tobytes()))
        for key in [("transformer", "wte", "embedding"), ("transformer", "ln_f", "kernel")]:
            mu = (0.01 * stored[key]).astype("<f4")
            blob += record(("opt_state", "1", "0", "mu") + key, to_bytes_array(mu.shape, "float32", mu.tobytes()))
    (OUT / fx["file"]).write_bytes(bytes(blob))

    inputs = inputs_for(rng, fx["vocab"])
    numpy_out = numpy_outputs(stored, cfg, inputs)
    sd = hf_state_dict(stored, cfg)
    model = transformers_from_numpy(sd, cfg)
    hf_out = transformers_outputs(model, fx["head"], inputs)
    diff = max_diff(numpy_out, hf_out)
    assert diff < 1e-4, f"{fx['name']}: transformers vs numpy EasyLM forward differ by {diff}"

    expected = {
        k: torch.tensor(np.ascontiguousarray(v), dtype=torch.float32).to(torch.bfloat16).contiguous()
        for k, v in sd.items()
    }
    save_file(expected, str(OUT / f"{fx['name']}.expected-bf16.safetensors"), metadata={"format": "pt"})

    config = hf_config(cfg)
    golden = {
        "file": fx["file"],
        "head": "score" if fx["head"] == "score" else "lm_head",
        "dtype": fx["dtype"],
        "layout": fx["layout"],
        "chunked": fx["chunk"] is not None,
        "options": fx["options"],
        "config": {
            "architectures": config.architectures,
            "vocab_size": fx["vocab"],
            "hidden_size": fx["dim"],
            "intermediate_size": fx["ffn"],
            "num_hidden_layers": fx["layers"],
            "num_attention_heads": fx["heads"],
            "num_key_value_heads": fx["kv_heads"],
            "head_dim": fx["dim"] // fx["heads"],
            "rms_norm_eps": fx["eps"],
            "rope_theta": fx["theta"],
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        "inputs": inputs,
        "numpy_easylm": numpy_out,
        "transformers": hf_out,
        "max_abs_diff_numpy_vs_transformers": diff,
        "expected_bf16": f"{fx['name']}.expected-bf16.safetensors",
    }
    (OUT / f"{fx['name']}.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(f"{fx['name']}: {len(blob)} bytes, numpy vs transformers max |diff| {diff:.2e}")


def make():
    import torch

    torch.set_num_threads(1)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    (OUT / "worked-examples.msgpack").write_bytes(check_worked_examples())
    for fx in FIXTURES:
        write_fixture(fx)


def check_hf(golden_path, model_dir):
    """Loads a folder `worker convert` wrote with transformers (fp32) and compares to the goldens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.set_num_threads(1)
    golden = json.loads(Path(golden_path).read_text())
    cls = AutoModelForSequenceClassification if golden["head"] == "score" else AutoModelForCausalLM
    model = cls.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = transformers_outputs(model, golden["head"], golden["inputs"])
    diff = max_diff(out, golden["numpy_easylm"])
    result = {"class": type(model).__name__, "max_abs_diff": diff, "ok": diff < 1e-4}
    print(json.dumps(result))
    return 0 if result["ok"] else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check-hf")
    check.add_argument("--golden", required=True)
    check.add_argument("--model", required=True)
    args = parser.parse_args()
    if args.command == "check-hf":
        sys.exit(check_hf(args.golden, args.model))
    make()


if __name__ == "__main__":
    main()
