"""Flow-matching head (pi0): a DiT learns the velocity that carries noise to actions.

With x_t = t * noise + (1 - t) * action, the target velocity is noise - action; training times
follow pi0's Beta(1.5, 1) (more weight on noisy times), and sampling integrates dx/dt from
t = 1 (pure noise) to t = 0 with ``sample_steps`` Euler steps.
"""

from __future__ import annotations

import torch

from vlaforge.models.config import PolicyConfig
from vlaforge.models.heads.base import ActionHead, inpaint
from vlaforge.models.heads.dit import DiT
from vlaforge.registry import HEADS


@HEADS.register("flow")
class FlowHead(ActionHead):
    samples = True
    exportable = True  # the sampling loop unrolls; the initial noise is a graph input

    def __init__(self, cfg: PolicyConfig, action_dim: int, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__()
        if cfg.sample_steps < 1:
            raise ValueError(f"sample_steps must be >= 1, got {cfg.sample_steps}")
        self.sample_steps, self.action_dim = cfg.sample_steps, action_dim
        self.net = DiT(action_dim, cfg.chunk_size, cfg.d_model, cfg.head_layers, cfg.n_heads)
        self.time_dist = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0))

    def loss(self, cond: torch.Tensor, action: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        t = (0.999 * self.time_dist.sample((len(action),)) + 0.001).to(action.device)
        noise = torch.randn_like(action)
        x = t[:, None, None] * noise + (1 - t[:, None, None]) * action
        err = (self.net(x, t, cond).float() - (noise - action)).pow(2).mean(-1)
        return (err * valid.float()).mean()

    def predict(self, cond: torch.Tensor, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, guide: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Euler integration of the velocity from t = 1 (noise) to 0. ``guide`` = (prefix
        (B, K, A), weights (B, K)) inpaints the chunk (real-time chunking): see ``inpaint``."""
        b, k = cond.shape[:2]
        x0 = torch.randn(b, k, self.action_dim, generator=generator, device=cond.device) if noise is None else noise
        x, dt = x0, 1.0 / self.sample_steps
        for i in range(self.sample_steps):
            t = 1.0 - i * dt
            if guide is not None:
                x = inpaint(x, t * x0 + (1 - t) * guide[0], guide[1])  # the committed actions' point at level t
            x = x - dt * self.net(x, torch.full((b,), t, device=cond.device), cond).float()
        return x if guide is None else inpaint(x, guide[0], guide[1])
