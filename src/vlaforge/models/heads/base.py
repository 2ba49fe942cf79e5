"""The contract every action head meets (``--policy.head``; register a subclass in ``HEADS``).

A head is built as ``Head(cfg, action_dim, low, high)`` (``low``/``high``: (A,) normalised action
bounds from the data) and reads the K query tokens ``cond`` (B, K, d) the backbone produced.
Class flags say what the rest of the toolkit may do with it, instead of lists of names:

- ``exportable``: given its inputs (and a sampling head's initial noise) ``predict`` is a fixed
  graph, loops of fixed length included, so ONNX export supports it;
- ``samples``: ``predict`` draws from a distribution, so the spread of several draws is an
  uncertainty (active learning's ``--uncertainty=head``); its only randomness is the initial
  noise (B, K, A), which ``predict`` also accepts as an argument.
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
    def predict(self, cond: torch.Tensor, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """The normalised action chunk (B, K, A). A sampling head starts from ``noise`` (B, K, A)
        when given (a server batching several robots draws each one's from its own generator),
        else draws it from ``generator``; the others ignore both."""


def inpaint(x: torch.Tensor, known: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Real-time chunking's inpainting step (Black et al. 2025, "Real-Time Execution of Action
    Chunking Flow Policies"), done by replacement as in RePaint (Lugmayr et al. 2022): the
    sample x (B, K, A) moves to ``known`` (the committed actions brought to the sample's noise
    level) by ``weights`` (B, K) per chunk step: 1 for actions that will execute while this
    chunk is computed, decaying over the rest of the overlap, 0 beyond it. The denoiser then
    sees the committed steps and continues them."""
    w = weights[..., None].to(x.dtype)
    return w * known + (1 - w) * x

