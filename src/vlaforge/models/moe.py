"""Mixture-of-experts feed-forward: a top-k router, expert capacity with token dropping, and the
Switch Transformer load-balancing loss.

Each token goes to its ``top_k`` highest-scoring experts (weights renormalised over them when
k > 1). An expert takes at most ``capacity = ceil(capacity_factor * tokens * k / experts)``
tokens; first choices are served before second choices, in token order (GShard), and an
assignment past capacity is dropped: that expert's output for the token is zero, and the
block's residual path carries the token on. The balancing loss ``experts * sum_e f_e * P_e``
(f_e the share of first choices sent to e, P_e its mean router probability) is 1 when routing
is uniform and grows as it concentrates; its gradient reaches the router through P_e.

After each forward, ``stats`` holds the balancing loss (a tensor in the graph), the fraction
of assignments dropped and each expert's share of the kept ones; the policy adds the loss to
its objective and the trainer logs the rest.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.models.config import PolicyConfig
from vlaforge.models.transformer import MLP
from vlaforge.registry import FFNS


class MoE(nn.Module):
    def __init__(self, d_model: int, experts: int = 4, top_k: int = 2, capacity_factor: float = 1.25,
                 hidden: int | None = None) -> None:
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"moe_top_k must be in [1, moe_experts={experts}], got {top_k}")
        if capacity_factor <= 0:
            raise ValueError(f"moe_capacity must be > 0, got {capacity_factor}")
        self.top_k, self.capacity_factor = top_k, capacity_factor
        self.router = nn.Linear(d_model, experts, bias=False)
        # Each expert is the dense MLP's size divided by k, so compute per token matches it.
        self.experts = nn.ModuleList([MLP(d_model, hidden or 4 * d_model // top_k) for _ in range(experts)])
        self.stats: dict[str, torch.Tensor] = {}

    def capacity(self, tokens: int) -> int:
        return math.ceil(self.capacity_factor * tokens * self.top_k / len(self.experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        n, e = x.shape[0], len(self.experts)
        probs = self.router(x).float().softmax(-1)  # (N, E)
        weight, choice = probs.topk(self.top_k, -1)  # (N, k)
        if self.top_k > 1:
            weight = weight / weight.sum(-1, keepdim=True)
        # Queue position of every (choice rank, token) assignment at its expert: first choices
        # of all tokens, then second choices, each in token order.
        onehot = F.one_hot(choice.t().reshape(-1), e)  # (k*N, E)
        position = ((onehot.cumsum(0) - 1) * onehot).sum(-1).view(self.top_k, n).t()  # (N, k)
        kept = position < self.capacity(n)
        out = torch.zeros_like(x)
        for i, expert in enumerate(self.experts):
            token, rank = torch.nonzero((choice == i) & kept, as_tuple=True)
            y = expert(x[token]) * weight[token, rank, None].to(x.dtype)
            out = out.index_add(0, token, y.to(out.dtype))
        first = F.one_hot(choice[:, 0], e).float().mean(0)
        counts = F.one_hot(choice[kept], e).sum(0).float()
        self.stats = {
            "aux_loss": e * (first * probs.mean(0)).sum(),
            "dropped": 1.0 - kept.float().mean(),
            "utilisation": counts / counts.sum().clamp(min=1.0),
        }
        return out.view(shape)


@FFNS.register("moe")
def moe_ffn(cfg: PolicyConfig) -> nn.Module:
    return MoE(cfg.d_model, cfg.moe_experts, cfg.moe_top_k, cfg.moe_capacity)
