"""Optimizers by name and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from vlaforge.config import OptimConfig
from vlaforge.registry import OPTIMIZERS


@OPTIMIZERS.register("adamw")
def adamw(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on norms, biases, embeddings of positions)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and p.shape[0] > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.name)(model, cfg)


def scaled_lr(cfg: OptimConfig, effective_batch: int) -> float:
    """Peak learning rate for ``effective_batch``: unchanged (``none``), proportional (``linear``,
    Goyal et al. for SGD) or with its square root (``sqrt``, the usual rule for Adam-type
    optimizers), relative to ``reference_batch``."""
    rules = {"none": lambda r: 1.0, "linear": lambda r: r, "sqrt": math.sqrt}
    if cfg.lr_scaling not in rules:
        raise ValueError(f"unknown optim.lr_scaling {cfg.lr_scaling!r}; use none, linear or sqrt")
    if cfg.reference_batch < 1:
        raise ValueError("optim.reference_batch must be >= 1")
    return cfg.lr * rules[cfg.lr_scaling](effective_batch / cfg.reference_batch)


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr * min_lr_ratio at ``total``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
