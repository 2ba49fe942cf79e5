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

import copy
import io
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from vlaforge.deploy.artifact import example_inputs, write_deployed
from vlaforge.models.policy import Policy, load_torch_policy

INT4_GROUP = 32


def dynamic_int8(model: nn.Module) -> nn.Module:
    """``model`` with int8 dynamic quantization of its Linear layers (a new module)."""
    with torch.no_grad():
        return torch.ao.quantization.quantize_dynamic(model.float().eval(), {nn.Linear}, dtype=torch.qint8)


def _torchao():
    logging.getLogger("torchao").setLevel(logging.ERROR)  # it logs every optional GPU kernel it lacks
    try:
        import torchao.quantization as ao
        from torchao.quantization.granularity import PerGroup
    except ImportError as e:
        raise ImportError(f"weight-only quantization needs torchao: pip install 'vlaforge[deploy]' ({e})") from None
    return ao, PerGroup


def int8_weight(model: nn.Module) -> nn.Module:
    """``model`` (a copy) with torchao int8 weight-only quantization of its Linear layers."""
    ao, _ = _torchao()
    model = copy.deepcopy(model).float().eval()
    ao.quantize_(model, ao.Int8WeightOnlyConfig(), filter_fn=lambda m, _: type(m) is nn.Linear)
    return model


def int4_weight(model: nn.Module) -> nn.Module:
    """``model`` (a copy) with torchao int4 weight-only quantization, groups of INT4_GROUP inputs."""
    ao, per_group = _torchao()
    model = copy.deepcopy(model).float().eval()
    config = ao.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=per_group(INT4_GROUP))
    ao.quantize_(model, config, filter_fn=int4_quantizable)
    return model


def int4_quantizable(module: nn.Module, _fqn: str = "") -> bool:
    """Plain Linear layers whose input width splits into int4 groups (subclasses such as the
    regression head keep their own methods and stay fp32, as in dynamic-int8)."""
    return type(module) is nn.Linear and module.in_features % INT4_GROUP == 0


class Autocast(nn.Module):
    """``model`` run under bf16 autocast, its output returned in fp32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.float().eval()
        self.cfg = model.cfg  # what Policy reads off its network

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", torch.bfloat16):
            return self.model(*args).float()


def compiled(model: nn.Module) -> nn.Module:
    """``model`` compiled by torch.compile (compilation happens on the first call)."""
    return torch.compile(model.float().eval())


TORCH_METHODS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "dynamic-int8": dynamic_int8, "int8-weight": int8_weight, "int4-weight": int4_weight,
    "bf16": Autocast, "compile": compiled,
}
METHODS = (*TORCH_METHODS, "static-int8", "onnx-int8")


def serialized_bytes(model: nn.Module) -> int:
    """Size of the model's state as stored (int8 weights count 1 byte each)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def load_quantized(d: Path, method: str, verify: bool = True) -> Policy:
    """The fp32 policy stored in ``d`` with the torch quantization ``method`` applied."""
    if method not in TORCH_METHODS:
        raise ValueError(f"{d / 'deploy.json'} names an unknown torch quantization {method!r}; "
                         f"known: {', '.join(TORCH_METHODS)}")
    base = load_torch_policy(d, verify=verify)
    return Policy(TORCH_METHODS[method](base.model), base.normalizer, base.tokenizer, base.meta)


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
