"""The published rewardbench==0.1.4 package, made to run on CPU by runtime-only patches.

Golden generators that call the real package import this module first (it lives in the
reference environment `~/.cache/herd/venv-rewardbench-0.1.4`, built by scripts/setup: rewardbench
0.1.4 with its pinned transformers 4.51.0, trl 0.8.6 and fschat 0.2.36, reusing the torch 2.11.0
install of the main environment through a .pth file). Nothing installed is edited; each patch
below replaces one attribute at runtime and touches no arithmetic:

1. `rewardbench/rewardbench.py` does `import wandb` at top level and uses it only with
   `--wandb_run`. A module object named wandb is put in sys.modules for that import and removed
   again, after transformers' own imports, so transformers still sees wandb as absent.
2. `RewardBenchPipeline.__call__` (`rewardbench/models/pipeline.py`) moves the tokenized batch to
   "cuda". Here `BatchEncoding.to("cuda")` is redirected to the pipeline model's device for the
   duration of that call (CPU in the goldens); the tensors are the same.
3. The CLI's DPO path (`rewardbench.py::main`, `model_kwargs = {"load_in_8bit": True, ...}`)
   loads both models in 8-bit through bitsandbytes (CUDA only). `load_in_8bit` is dropped from
   `PreTrainedModel.from_pretrained`'s keyword arguments, so the models load in full precision;
   on CPU the package already passes `torch_dtype=None` (fp32) and `device_map="cpu"`.
   The classifier path is not patched: golden generators pass the CLI's own `--not_quantized`
   (its quantized branch also pins `device_map={"": 0}`, a GPU).

Use `run_cli(argv)` to run the `rewardbench` console script (`rewardbench.rewardbench:main`).
"""

import importlib.machinery
import sys
import types

import torch  # noqa: F401  (imported before the wandb stand-in exists)
import transformers
import transformers.generation.utils  # noqa: F401
import transformers.models.auto.modeling_auto  # noqa: F401
import trl  # noqa: F401

EXPECTED_REWARDBENCH = "0.1.4"
EXPECTED_TRANSFORMERS = "4.51.0"


def _import_rewardbench_cli():
    stub = types.ModuleType("wandb")
    stub.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    had = "wandb" in sys.modules
    if not had:
        sys.modules["wandb"] = stub
    try:
        from rewardbench import rewardbench as cli  # noqa: WPS433
    finally:
        if not had:
            del sys.modules["wandb"]
    return cli


def _patch_pipeline_device():
    from rewardbench.models import pipeline

    original_call = pipeline.RewardBenchPipeline.__call__
    original_to = transformers.BatchEncoding.to

    def call_on_model_device(self, samples, return_inputs=False, **kwargs):
        device = self.model.device

        def to(encoding, target, *args, **kw):
            if target == "cuda":
                target = device
            return original_to(encoding, target, *args, **kw)

        transformers.BatchEncoding.to = to
        try:
            return original_call(self, samples, return_inputs=return_inputs, **kwargs)
        finally:
            transformers.BatchEncoding.to = original_to

    pipeline.RewardBenchPipeline.__call__ = call_on_model_device


def _patch_no_8bit():
    # REWARD_MODEL_CONFIG holds `AutoModel*.from_pretrained` bound at import time, so the patch
    # sits where every Auto class ends: the concrete model class's `from_pretrained`.
    from transformers.modeling_utils import PreTrainedModel

    original = PreTrainedModel.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        kwargs.pop("load_in_8bit", None)
        return original(cls, *args, **kwargs)

    PreTrainedModel.from_pretrained = classmethod(from_pretrained)


def _check_versions():
    import importlib.metadata as md

    got = md.version("rewardbench")
    if got != EXPECTED_REWARDBENCH or transformers.__version__ != EXPECTED_TRANSFORMERS:
        raise SystemExit(
            f"rbref: expected rewardbench {EXPECTED_REWARDBENCH} with transformers "
            f"{EXPECTED_TRANSFORMERS}, found {got} with {transformers.__version__}: run this "
            "script with ~/.cache/herd/venv-rewardbench-0.1.4/bin/python (scripts/setup builds it)"
        )


_check_versions()
cli = _import_rewardbench_cli()
_patch_pipeline_device()
_patch_no_8bit()

# the versions a golden file should record
REFERENCE = (
    f"rewardbench {EXPECTED_REWARDBENCH} (PyPI), transformers {transformers.__version__}, "
    f"torch {torch.__version__}, CPU; runtime patches in tests/golden/rbref.py"
)


def run_cli(argv):
    """Run the `rewardbench` console script with `argv` (without the program name)."""
    saved = sys.argv
    sys.argv = ["rewardbench", *argv]
    try:
        cli.main()
    finally:
        sys.argv = saved
