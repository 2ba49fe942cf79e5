"""Low-rank adaptation (Hu et al. 2021, LoRA) for fine-tuning a trained policy on new tasks.

Every plain ``nn.Linear`` of the policy (the action head excepted: its own methods read its
weights) becomes ``W x + b + (alpha / r) B A x`` with A (r, in) and B (out, r) trained and W, b
frozen; B starts at zero, so the adapted policy starts as the base (Hu et al., sec. 4.1). A is
drawn like nn.Linear's own weights (Kaiming-uniform), seeded by the run.

The exported policy directory holds the merged weights W + (alpha / r) B A, so it loads and
deploys like any policy; the adapters alone are written beside it (``policy.adapter.safetensors``:
A, B and the rank and alpha in its metadata), and ``apply_adapter`` puts them back on a base
policy, unmerged, with the same outputs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from vlaforge.files import atomic_write_bytes


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``rank`` update scaled by ``alpha / rank``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t().to(x.dtype)) @ self.lora_b.t().to(x.dtype) * self.scale

    def delta(self) -> torch.Tensor:
        """The update to W, (out, in)."""
        return (self.lora_b @ self.lora_a) * self.scale


def targets(model: nn.Module, head: str = "head") -> list[str]:
    """Names of the plain ``nn.Linear`` modules LoRA adapts (everything but the action head)."""
    return [n for n, m in model.named_modules() if type(m) is nn.Linear and n != head and not n.startswith(f"{head}.")]


def add_adapters(model: nn.Module, rank: int, alpha: float, names: list[str] | None = None) -> list[str]:
    """Wrap the ``names`` Linear layers (default: ``targets``) in place and freeze every other
    parameter; returns the wrapped names."""
    if rank < 1 or alpha <= 0:
        raise ValueError(f"lora_rank must be >= 1 and lora_alpha > 0, got {rank} and {alpha}")
    names = targets(model) if names is None else names
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, attr, LoRALinear(getattr(owner, attr), rank, alpha))
    return names


def merged_state_dict(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A state dict of an adapted model (its own or an EMA copy) with every adapter folded into
    its layer: ``X.base.weight``, ``X.lora_a``, ``X.lora_b`` -> ``X.weight`` (+ ``X.bias``)."""
    out = {}
    for key, value in state.items():
        if key.endswith((".lora_a", ".lora_b")):
            continue
        if ".base." in key:
            prefix, _, leaf = key.rpartition(".base.")
            if leaf == "weight":
                delta = (state[f"{prefix}.lora_b"].float() @ state[f"{prefix}.lora_a"].float()) * scale
                value = (value.float() + delta).to(value.dtype)
            key = f"{prefix}.{leaf}"
        out[key] = value
    return out


def adapter_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items() if k.endswith((".lora_a", ".lora_b"))}


def save_adapter(state: dict[str, torch.Tensor], path: Path, rank: int, alpha: float) -> Path:
    """Write the adapters of ``state`` as safetensors (atomically), rank and alpha in its metadata."""
    payload = safetensors_bytes(adapter_tensors(state), metadata={"rank": str(rank), "alpha": str(alpha)})
    atomic_write_bytes(path, payload)
    return path


def apply_adapter(model: nn.Module, path: Path) -> nn.Module:
    """``model`` (a base policy's network) with the adapters of ``path`` added, unmerged."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    try:
        rank, alpha = int(meta["rank"]), float(meta["alpha"])
    except (KeyError, ValueError):
        raise ValueError(f"{path} is not a LoRA adapter file (needs rank and alpha in its metadata)") from None
    tensors = load_file(str(path))
    names = sorted({k.rpartition(".")[0] for k in tensors})
    add_adapters(model, rank, alpha, names)
    missing = [n for n in names if f"{n}.lora_a" not in tensors or f"{n}.lora_b" not in tensors]
    if missing:
        raise ValueError(f"{path}: adapters {missing} lack A or B")
    with torch.no_grad():
        for name in names:
            layer = model.get_submodule(name)
            layer.lora_a.copy_(tensors[f"{name}.lora_a"])
            layer.lora_b.copy_(tensors[f"{name}.lora_b"])
    return model
