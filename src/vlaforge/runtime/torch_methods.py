"""The ``torch`` deploy runtime: the fp32 weights with a torch method applied at load. Every method
is a deterministic function of the weights, so a deployed directory stores only those.

    dynamic-int8  torch.ao dynamic quantization: every nn.Linear gets int8 weights and
                  per-call int8 activations (convolutions stay fp32)
    int8-weight   torchao weight-only int8 (per-channel scales), fp32 activations
    int4-weight   torchao weight-only int4 in groups of 32 input features (Linear layers whose
                  width is not a multiple of 32 stay fp32)
    bf16          fp32 weights run under bf16 autocast
    compile       fp32 weights run through torch.compile (Inductor)
    sliced        the fusion MLP channels and attention heads that pruning zeroed, cut out of
                  the tensors (a smaller network computing the same function)
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


def _linear(layer: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear with the kept output ``rows`` and input ``cols`` (boolean masks) of ``layer``."""
    w, b = layer.weight.detach(), layer.bias.detach() if layer.bias is not None else None
    if rows is not None:
        w, b = w[rows], None if b is None else b[rows]
    if cols is not None:
        w = w[:, cols]
    out = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        out.weight.copy_(w)
        if b is not None:
            out.bias.copy_(b)
    return out


def _at_least_one(keep: torch.Tensor) -> torch.Tensor:
    """All-pruned layers keep their first (dead, so still exact) unit: no zero-width tensors."""
    if not keep.any():
        keep = keep.clone()
        keep[0] = True
    return keep


def sliced(model: nn.Module) -> nn.Module:
    """``model`` (a copy) with the dead units of its fusion blocks cut out of the tensors: an MLP
    hidden unit whose input row and bias are zero outputs GELU(0) = 0, and an attention head
    whose value rows and bias are zero outputs 0 whatever it attends to, so removing them (fc1
    rows and fc2 columns; the head's q, k, v rows and proj columns) leaves the function
    unchanged. Channel and head pruning (``vlaforge prune``) zero exactly these weights."""
    from vlaforge.models.transformer import MLP, Attention

    model = copy.deepcopy(model).float().eval()
    for m in list(model.modules()):
        if isinstance(m, MLP):
            keep = _at_least_one((m[0].weight.detach() != 0).any(1) | (m[0].bias.detach() != 0))
            if not keep.all():
                m[0], m[2] = _linear(m[0], rows=keep), _linear(m[2], cols=keep)
        elif isinstance(m, Attention):
            dh = m.head_dim
            live = (m.v.weight.detach().view(-1, dh, m.v.in_features) != 0).flatten(1).any(1) | \
                (m.v.bias.detach().view(-1, dh) != 0).any(1)
            live = _at_least_one(live)
            if not live.all():
                keep = live.repeat_interleave(dh)
                m.q, m.k, m.v = (_linear(f, rows=keep) for f in (m.q, m.k, m.v))
                m.proj = _linear(m.proj, cols=keep)
                m.n_heads = int(live.sum())
    return model


def compiled(model: nn.Module) -> nn.Module:
    """``model`` compiled by torch.compile (compilation happens on the first call)."""
    return torch.compile(model.float().eval())


TORCH_METHODS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "dynamic-int8": dynamic_int8, "int8-weight": int8_weight, "int4-weight": int4_weight,
    "bf16": Autocast, "compile": compiled, "sliced": sliced,
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
