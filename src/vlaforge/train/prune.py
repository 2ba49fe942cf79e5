"""Pruning masks: zero the least important weights and keep them at zero through training.

    unstructured  global magnitude pruning over every Linear and Conv2d weight
    channels      whole hidden channels of the fusion MLPs, scored by ||fc1 row|| * ||fc2 column||
    heads         whole attention heads of the fusion blocks, scored by ||v rows|| * ||proj columns||
    structured    channels and heads together, each at the given sparsity (the two touch disjoint
                  weights, so their masks are simply merged)

The trainer re-applies the masks after every optimizer step (``--prune=method:sparsity``), so
pruned weights stay exactly zero; ``vlaforge prune`` (deploy/prune.py) drives it. The structured
methods zero whole channels and heads, the form an inference engine can drop.
"""

from __future__ import annotations

import torch
from torch import nn

from vlaforge.models.transformer import MLP, Attention

METHODS = ("unstructured", "channels", "heads", "structured")


def _lowest(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask of the ``fraction`` lowest-scoring entries."""
    k = int(round(fraction * scores.numel()))
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        mask[scores.flatten().argsort()[:k].view(-1)] = True
    return mask


def pruning_masks(model: nn.Module, method: str, sparsity: float) -> dict[str, torch.Tensor]:
    """Parameter name -> 0/1 mask (same shape) for pruning ``sparsity`` of ``method``'s units."""
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; known: {', '.join(METHODS)}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    params = dict(model.named_parameters())
    masks: dict[str, torch.Tensor] = {}
    if method == "unstructured":
        names = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        flat = torch.cat([params[n].detach().abs().flatten() for n in names])
        k = int(round(sparsity * flat.numel()))
        threshold = flat.kthvalue(k).values if k else flat.new_tensor(-1.0)
        return {n: (params[n].detach().abs() > threshold).float() for n in names}
    if method == "structured":
        return pruning_masks(model, "channels", sparsity) | pruning_masks(model, "heads", sparsity)
    for name, m in model.named_modules():
        if method == "channels" and isinstance(m, MLP):
            fc1, fc2 = m[0], m[2]
            pruned = _lowest(fc1.weight.detach().norm(dim=1) * fc2.weight.detach().norm(dim=0), sparsity)
            keep = (~pruned).float()
            masks[f"{name}.0.weight"] = keep[:, None].expand_as(fc1.weight).clone()
            masks[f"{name}.0.bias"] = keep.clone()
            masks[f"{name}.2.weight"] = keep[None, :].expand_as(fc2.weight).clone()
        if method == "heads" and isinstance(m, Attention):
            h, d = m.n_heads, m.v.weight.shape[0]
            v = m.v.weight.detach().view(h, d // h, -1).flatten(1).norm(dim=1)
            proj = m.proj.weight.detach().view(-1, h, d // h).transpose(0, 1).flatten(1).norm(dim=1)
            keep = (~_lowest(v * proj, sparsity)).float().repeat_interleave(d // h)
            masks[f"{name}.v.weight"] = keep[:, None].expand_as(m.v.weight).clone()
            masks[f"{name}.v.bias"] = keep.clone()
            masks[f"{name}.proj.weight"] = keep[None, :].expand_as(m.proj.weight).clone()
    if not masks:
        raise ValueError(f"the model has no {'MLP' if method == 'channels' else 'attention'} layers to prune by {method}")
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def zero_fraction(model: nn.Module, masks: dict[str, torch.Tensor]) -> float:
    """Fraction of the masked parameters that are zero (the achieved sparsity)."""
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in masks)
    return sum(int((params[n] == 0).sum()) for n in masks) / max(total, 1)


def parse_prune(spec: str) -> tuple[str, float]:
    """``"unstructured:0.5"`` -> ("unstructured", 0.5)."""
    method, _, value = spec.partition(":")
    try:
        sparsity = float(value)
    except ValueError:
        raise ValueError(f"prune spec {spec!r} must look like method:sparsity, e.g. unstructured:0.5") from None
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; known: {', '.join(METHODS)}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return method, sparsity
