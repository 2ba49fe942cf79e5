"""``vlaforge prune``: mask a trained policy (train/prune.py) and fine-tune it briefly on its data
with the mask held, then export it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vlaforge.runtime.policy import Policy, load_policy
from vlaforge.train.config import OptimConfig, TrainConfig
from vlaforge.train.prune import apply_masks, parse_prune, pruning_masks, zero_fraction
from vlaforge.train.trainer import train


def prune(cfg) -> Path:
    """Prune ``cfg.policy`` (a PruneConfig) and fine-tune it on ``cfg.dataset`` for ``cfg.steps``
    steps with the mask held; returns the pruned policy directory."""
    if not cfg.policy or not cfg.output_dir:
        raise ValueError("prune needs --policy=DIR and --output_dir=DIR")
    spec = f"{cfg.method}:{cfg.sparsity}"
    parse_prune(spec)
    if cfg.steps < 0:
        raise ValueError(f"steps must be >= 0, got {cfg.steps}")
    if cfg.steps == 0:  # masked, not fine-tuned
        base = load_policy(cfg.policy)
        masks = pruning_masks(base.model, cfg.method, cfg.sparsity)
        apply_masks(base.model, masks)
        meta = dict(base.meta, pruning={"method": cfg.method, "sparsity": cfg.sparsity,
                                        "zero_fraction": zero_fraction(base.model, masks)})
        return Policy(base.model, base.normalizer, base.tokenizer, meta).save(Path(cfg.output_dir) / "policy")
    if not cfg.dataset:
        raise ValueError("fine-tuning a pruned policy needs --dataset=DIR (or --steps=0 to skip it)")
    optim = dataclasses.replace(OptimConfig(), lr=cfg.lr, warmup_steps=min(30, cfg.steps // 10))
    return train(TrainConfig(dataset=cfg.dataset, output_dir=cfg.output_dir, steps=cfg.steps, init_from=cfg.policy,
                             prune=spec, optim=optim, tracking="none"))
