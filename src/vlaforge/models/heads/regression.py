"""Regression head: a linear map from each query token to its action, trained with L1."""

from __future__ import annotations

import torch
from torch import nn

from vlaforge.models.config import PolicyConfig
from vlaforge.models.heads.base import ActionHead
from vlaforge.registry import HEADS


@HEADS.register("regression")
class RegressionHead(nn.Linear, ActionHead):
    exportable = True

    """An ``nn.Linear`` itself, so its weights keep the names (head.weight) older policies have."""

    def __init__(self, cfg: PolicyConfig, action_dim: int, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__(cfg.d_model, action_dim)

    def loss(self, cond: torch.Tensor, action: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        err = (self(cond).float() - action).abs().mean(-1)
        return (err * valid.float()).mean()

    def predict(self, cond: torch.Tensor, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        return self(cond)
