"""Post-training quantization of a policy into a deployed directory (``vlaforge quantize``).

    dynamic-int8  torch.ao dynamic quantization: every nn.Linear gets int8 weights and
                  per-call int8 activations (convolutions stay fp32)
    int8-weight   torchao weight-only int8 (per-channel scales), fp32 activations
    int4-weight   torchao weight-only int4 in groups of 32 input features (Linear layers whose
                  width is not a multiple of 32 stay fp32)
Only plain nn.Linear layers are quantized: the action head (a Linear subclass) stays fp32.
    static-int8   PT2E: exported graph calibrated on dataset frames, int8 weights and activations;
                  the directory stores the calibration inputs and the graph is re-derived and
                  compiled with Inductor at load (``static_int8.py``)
    onnx-int8     the ONNX graph quantized by ONNX Runtime (int8 weights, dynamic activations)
    bf16          no quantization: fp32 weights run under bf16 autocast
    compile       no quantization: fp32 weights run through torch.compile (Inductor)
The last two are runtimes rather than storage formats; as deployed directories they can be
evaluated like any other method (``vlaforge eval --policy=DIR``), so their success is measured,
not assumed.

The other torch methods are deterministic functions of the fp32 weights, so the deployed directory
stores those (safetensors) and the method is applied when it is loaded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlaforge.deploy.artifact import write_deployed
from vlaforge.runtime.policy import Policy, example_inputs, load_torch_policy
from vlaforge.runtime.torch_methods import TORCH_METHODS, load_quantized


def serialized_bytes(model: nn.Module) -> int:
    """Size of the model's state as stored (int8 weights count 1 byte each)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


METHODS = (*TORCH_METHODS, "static-int8", "onnx-int8")


def quantize(policy_dir: str, output: str, method: str, dataset: str = "", calibration_samples: int = 64) -> Path:
    """Write ``policy_dir`` quantized with ``method`` to the new directory ``output``
    (``dataset`` supplies static-int8's calibration frames)."""
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; known: {', '.join(METHODS)}")
    if not output:
        raise ValueError("quantize needs --output=DIR for the deployed policy")
    if method == "onnx-int8":
        from vlaforge.deploy.onnx import write_onnx

        return write_deployed(policy_dir, output, lambda tmp: write_onnx(Path(policy_dir), tmp, int8=True))
    if method == "static-int8":
        from vlaforge.deploy.static_int8 import write_static_int8

        if calibration_samples < 1:
            raise ValueError(f"calibration_samples must be >= 1, got {calibration_samples}")
        return write_deployed(policy_dir, output,
                              lambda tmp: write_static_int8(Path(policy_dir), tmp, dataset, calibration_samples))

    def write(tmp: Path) -> dict:
        base = load_torch_policy(Path(policy_dir))
        quant = load_quantized(tmp, method)
        err = max(float(np.abs(quant.predict(*x) - base.predict(*x)).max()) for x in _examples(base))
        return {"runtime": "torch", "method": method, "model": "model.safetensors",
                "size_bytes": serialized_bytes(quant.model), "fp32_size_bytes": serialized_bytes(base.model),
                "parity_max_abs": err, "head": base.cfg.head}

    return write_deployed(policy_dir, output, write)


def _examples(policy: Policy, n: int = 8) -> list:
    return [example_inputs(policy, seed=s) for s in range(n)]
