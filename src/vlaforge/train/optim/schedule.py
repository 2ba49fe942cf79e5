"""Learning-rate schedule (linear warmup + cosine) and batch-size scaling of the peak rate."""

from __future__ import annotations

import math

from vlaforge.train.config import OptimConfig


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
