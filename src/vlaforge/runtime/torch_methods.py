"""The ``torch`` deploy runtime: the fp32 weights with a torch method applied at load. Every method
is a deterministic function of the weights, so a deployed directory stores only those.

    dynamic-int8  torch.ao dynamic quantization: every nn.Linear gets int8 weights and
                  per-call int8 activations (convolutions stay fp32)
    int8-weight   torchao weight-only int8 (per-channel scales), fp32 activations
    int4-weight   torchao weight-only int4 in groups of 32 input features (Linear layers whose
                  width is not a multiple of 32 stay fp32)
    bf16          fp32 weights run under bf16 autocast
    compile       fp32 weights run through torch.compile (Inductor)
Only plain nn.Linear layers are quantized: the action head (a Linear subclass) stays fp32.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vlaforge.models.quant import int4_config, int4_quantizable, torchao
from vlaforge.registry import DEPLOY_RUNTIMES
from vlaforge.runtime.policy import Policy, load_torch_policy


def dynamic_int8(model: nn.Module) -> nn.Module:
    """``model`` with int8 dynamic quantization of its Linear layers (a new module)."""
    with torch.no_grad():
        return torch.ao.quantization.quantize_dynamic(model.float().eval(), {nn.Linear}, dtype=torch.qint8)


def int8_weight(model: nn.Module) -> nn.Module:
    """``model`` (a copy) with torchao int8 weight-only quantization of its Linear layers."""
    ao, _ = torchao()
    model = copy.deepcopy(model).float().eval()
    ao.quantize_(model, ao.Int8WeightOnlyConfig(), filter_fn=lambda m, _: type(m) is nn.Linear)
    return model


def int4_weight(model: nn.Module) -> nn.Module:
    """``model`` (a copy) with torchao int4 weight-only quantization, groups of INT4_GROUP inputs."""
    ao, _ = torchao()
    model = copy.deepcopy(model).float().eval()
    ao.quantize_(model, int4_config(), filter_fn=int4_quantizable)
    return model


class Autocast(nn.Module):
    """``model`` run under bf16 autocast, its output returned in fp32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.float().eval()
        self.cfg = model.cfg  # what Policy reads off its network

    def forward(self, *args: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast("cpu", torch.bfloat16):
            return self.model(*args).float()


def compiled(model: nn.Module) -> nn.Module:
    """``model`` compiled by torch.compile (compilation happens on the first call)."""
    return torch.compile(model.float().eval())


TORCH_METHODS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "dynamic-int8": dynamic_int8, "int8-weight": int8_weight, "int4-weight": int4_weight,
    "bf16": Autocast, "compile": compiled,
}


def load_quantized(d: Path, method: str, verify: bool = True) -> Policy:
    """The fp32 policy stored in ``d`` with the torch quantization ``method`` applied."""
    if method not in TORCH_METHODS:
        raise ValueError(f"{d / 'deploy.json'} names an unknown torch quantization {method!r}; "
                         f"known: {', '.join(TORCH_METHODS)}")
    base = load_torch_policy(d, verify=verify)
    return Policy(TORCH_METHODS[method](base.model), base.normalizer, base.tokenizer, base.meta)


@DEPLOY_RUNTIMES.register("torch")
def _load_deployed(d: Path, info: dict, file, verify: bool) -> Policy:
    return load_quantized(d, info.get("method"), verify=verify)
