"""Post-training quantization of a policy into a deployed directory (``vlaforge quantize``).

    dynamic-int8  torch.ao dynamic quantization: every nn.Linear gets int8 weights and
                  per-call int8 activations (convolutions stay fp32); applied at load time
                  from the stored fp32 weights, which it reproduces exactly
    onnx-int8     the ONNX graph quantized by ONNX Runtime (int8 weights, dynamic activations)
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlaforge.deploy.artifact import example_inputs, write_deployed
from vlaforge.models.policy import Policy, load_torch_policy

METHODS = ("dynamic-int8", "onnx-int8")


def dynamic_int8(model: nn.Module) -> nn.Module:
    """``model`` with int8 dynamic quantization of its Linear layers (a new module)."""
    with torch.no_grad():
        return torch.ao.quantization.quantize_dynamic(model.float().eval(), {nn.Linear}, dtype=torch.qint8)


def serialized_bytes(model: nn.Module) -> int:
    """Size of the model's state as stored (int8 weights count 1 byte each)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def load_quantized(d: Path, method: str) -> Policy:
    base = load_torch_policy(d)
    if method != "dynamic-int8":
        raise ValueError(f"{d / 'deploy.json'} names an unknown torch quantization {method!r}; known: dynamic-int8")
    policy = Policy.__new__(Policy)
    policy.model = dynamic_int8(base.model)
    policy._setup(base.cfg, base.normalizer, base.tokenizer, base.meta)
    policy._noise = torch.Generator()
    policy.reset()
    return policy


def quantize(policy_dir: str, output: str, method: str) -> Path:
    """Write ``policy_dir`` quantized with ``method`` to the new directory ``output``."""
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; known: {', '.join(METHODS)}")
    if not output:
        raise ValueError("quantize needs --output=DIR for the deployed policy")
    if method == "onnx-int8":
        from vlaforge.deploy.onnx import write_onnx

        return write_deployed(policy_dir, output, lambda tmp: write_onnx(Path(policy_dir), tmp, int8=True))

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
