#!/usr/bin/env python3
"""Rotary inverse frequencies as transformers computes them, for worker/engine/src/models/rope.rs.

Reference: Hugging Face transformers 4.57.6 on torch 2.11.0, `ROPE_INIT_FUNCTIONS` of
transformers/modeling_rope_utils.py (`_compute_default_rope_parameters`,
`_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters`) called with the device
the model's rotary embedding is built with (None: the CPU), float32. No transcription: every value
is transformers' own output. The rope unit test compares herd's frequencies with these bit for
bit, on the CPU and (HERD_TEST_DEVICE=cuda) after the move to a GPU.

Writes tests/golden/rope/inverse_frequencies.json: one case per configuration, the float32 values
as Python floats (exact: every float32 is a double) and as their bit patterns.

Run: $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_rope_goldens.py
"""

import json
import struct
from pathlib import Path

import torch
import transformers
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

OUT = Path(__file__).resolve().parent / "rope" / "inverse_frequencies.json"

LLAMA31 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

# (name, head_dim, rope_theta, rope_scaling): shapes of the fixtures and of real models
CASES = [
    ("llama2-128", 128, 10000.0, None),
    ("tiny-8", 8, 10000.0, None),
    ("qwen2-128-1e6", 128, 1000000.0, None),
    ("linear-64", 64, 10000.0, {"rope_type": "linear", "factor": 4.0}),
    ("llama3.1-128", 128, 500000.0, LLAMA31),
    ("llama3.1-64", 64, 500000.0, LLAMA31),
    ("llama3-tiny-16", 16, 10000.0, {**LLAMA31, "original_max_position_embeddings": 64}),
]


def bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def main() -> None:
    assert transformers.__version__ == "4.57.6", transformers.__version__
    assert torch.__version__.split("+")[0] == "2.11.0", torch.__version__
    cases = []
    for name, head_dim, theta, scaling in CASES:
        config = LlamaConfig(
            hidden_size=head_dim * 2,
            num_attention_heads=2,
            head_dim=head_dim,
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=131072,
        )
        rope_type = (scaling or {}).get("rope_type", "default")
        inv_freq, _ = ROPE_INIT_FUNCTIONS[rope_type](config, None)
        assert inv_freq.dtype == torch.float32 and inv_freq.device.type == "cpu"
        values = inv_freq.tolist()
        cases.append(
            {
                "name": name,
                "head_dim": head_dim,
                "rope_theta": theta,
                "rope_scaling": scaling,
                "inv_freq": values,
                "bits": [bits(v) for v in values],
            }
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    golden = {
        "reference": {"transformers": transformers.__version__, "torch": torch.__version__},
        "cases": cases,
    }
    OUT.write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
