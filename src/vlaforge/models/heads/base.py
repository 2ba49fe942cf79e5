"""The contract every action head meets (``--policy.head``; register a subclass in ``HEADS``).

A head is built as ``Head(cfg, action_dim, low, high)`` (``low``/``high``: (A,) normalised action
bounds from the data) and reads the K query tokens ``cond`` (B, K, d) the backbone produced.
Class flags say what the rest of the toolkit may do with it, instead of lists of names:

- ``exportable``: ``predict`` is a fixed graph (no sampling loop), so ONNX export supports it;
- ``samples``: ``predict`` draws from a distribution, so the spread of several draws is an
  uncertainty (active learning's ``--uncertainty=head``).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import ClassVar

import torch
from torch import nn


class ActionHead(nn.Module, metaclass=ABCMeta):
    exportable: ClassVar[bool] = False
    samples: ClassVar[bool] = False

    @abstractmethod
    def loss(self, cond: torch.Tensor, action: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Scalar loss of normalised ``action`` (B, K, A) given ``cond``; chunk slots with
        ``valid`` (B, K) False (past the episode end) count zero, averaged over all K slots."""

    @abstractmethod
    def predict(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The normalised action chunk (B, K, A); any noise drawn from ``generator``."""
