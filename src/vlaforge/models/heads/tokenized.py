"""Tokenized head (RT-2 / OpenVLA): each action dimension is cut into ``action_bins`` uniform bins
between the dataset's minimum and maximum, and each query token classifies every dimension.

A classifier can put mass on several bins, so it does not blur two modes into their average
the way regression does, though the arg-max picks one mode rather than sampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.models.config import PolicyConfig
from vlaforge.models.heads.base import ActionHead
from vlaforge.registry import HEADS


@HEADS.register("tokenized")
class TokenizedHead(ActionHead):
    exportable = True

    def __init__(self, cfg: PolicyConfig, action_dim: int, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__()
        if cfg.action_bins < 2:
            raise ValueError(f"action_bins must be >= 2, got {cfg.action_bins}")
        self.bins, self.action_dim = cfg.action_bins, action_dim
        self.logits = nn.Linear(cfg.d_model, action_dim * cfg.action_bins)
        self.register_buffer("low", low.float().clone())
        self.register_buffer("high", high.float().clone())

    def _logits(self, cond: torch.Tensor) -> torch.Tensor:
        return self.logits(cond).view(*cond.shape[:-1], self.action_dim, self.bins)

    def tokenize(self, action: torch.Tensor) -> torch.Tensor:
        """Normalised actions -> bin indices (values outside [low, high] go to the end bins)."""
        frac = (action - self.low) / (self.high - self.low).clamp(min=1e-6)
        return (frac * self.bins).long().clamp(0, self.bins - 1)

    def detokenize(self, index: torch.Tensor) -> torch.Tensor:
        """Bin indices -> the bins' centres."""
        return self.low + (index.float() + 0.5) / self.bins * (self.high - self.low)

    def loss(self, cond: torch.Tensor, action: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        logits = self._logits(cond).float()
        ce = F.cross_entropy(logits.flatten(0, -2), self.tokenize(action).flatten(), reduction="none")
        return (ce.view(action.shape).mean(-1) * valid.float()).mean()

    def predict(self, cond: torch.Tensor, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.detokenize(self._logits(cond).argmax(-1))
