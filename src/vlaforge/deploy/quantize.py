"""The deploy backends on the ``torch`` runtime (runtime/torch_methods.py): methods that are
deterministic functions of the fp32 weights, so the deployed directory stores those
(safetensors) and the method is applied when it is loaded.

    dynamic-int8  torch.ao dynamic quantization: every nn.Linear gets int8 weights and
                  per-call int8 activations (convolutions stay fp32)
    int8-weight   torchao weight-only int8 (per-channel scales), fp32 activations
    int4-weight   torchao weight-only int4 in groups of 32 input features (Linear layers whose
                  width is not a multiple of 32 stay fp32)
    bf16          no quantization: fp32 weights run under bf16 autocast
    compile       no quantization: fp32 weights run through torch.compile (Inductor)
Only plain nn.Linear layers are quantized: the action head (a Linear subclass) stays fp32. The
last two are runtimes rather than storage formats; as deployed directories they are evaluated
like any other method (``vlaforge eval --policy=DIR``), so their success is measured, not assumed.
(static-int8: deploy/static_int8.py; onnx-int8: deploy/onnx.py.)
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from vlaforge.deploy.base import DeployBackend, DeployOptions
from vlaforge.registry import DEPLOY_BACKENDS
from vlaforge.runtime.policy import Policy
from vlaforge.runtime.torch_methods import TORCH_METHODS

# Each method's parity limit, max |deployed - fp32| in normalised action units on random example
# inputs, and its summary for `vlaforge list`. A limit catches a broken graph, not a quality
# loss (success under each method is measured by benchmarks/deploy.py): about 3x the largest
# error measured on the quickstart policy (dynamic-int8 0.29, int8-weight 0.07, int4-weight 0.79,
# bf16 0.05; a compiled fp32 graph differs only by reassociation, 3e-6).
TORCH_BACKENDS = {
    "dynamic-int8": (1.0, "int8 weights and per-call int8 activations in every Linear (torch.ao)"),
    "int8-weight": (1.0, "int8 weight-only Linear layers, per-channel scales (torchao)"),
    "int4-weight": (2.5, "int4 weight-only Linear layers, groups of 32 inputs (torchao)"),
    "bf16": (0.25, "fp32 weights run under bf16 autocast"),
    "compile": (1e-3, "fp32 weights run through torch.compile (Inductor)"),
    "sliced": (1e-4, "channels and heads zeroed by pruning cut out of the tensors: a smaller network, the same function"),
}


def serialized_bytes(model: nn.Module) -> int:
    """Size of the model's state as stored (int8 weights count 1 byte each)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def torch_method(method: str) -> DeployBackend:
    """The backend that stores the fp32 weights and names ``method`` for the torch runtime to apply."""

    def write(base: Policy, tmp: Path, options: DeployOptions) -> dict:
        return {"runtime": "torch", "model": "model.safetensors",
                "size_bytes": serialized_bytes(TORCH_METHODS[method](base.model)),
                "fp32_size_bytes": serialized_bytes(base.model)}

    return DeployBackend(write, *TORCH_BACKENDS[method])


for _method in TORCH_BACKENDS:
    DEPLOY_BACKENDS.register(_method)(torch_method(_method))
