"""Diffusion head (Diffusion Policy with a DiT denoiser): DDPM training, DDIM sampling.

Training noises the demonstrated chunk to a random level t of ``diffusion_steps`` (squared-
cosine schedule, as Diffusion Policy) and regresses the noise. Sampling runs DDIM (eta = 0,
deterministic given the starting noise) over ``sample_steps`` evenly spaced levels, clipping
the predicted clean chunk to the dataset's action range at each step.
"""

from __future__ import annotations

import math

import torch

from vlaforge.models.config import PolicyConfig
from vlaforge.models.heads.base import ActionHead, inpaint
from vlaforge.models.heads.dit import DiT
from vlaforge.registry import HEADS


def cosine_alpha_bar(steps: int) -> torch.Tensor:
    """Cumulative signal fraction alpha_bar_t, t = 1..steps (Nichol & Dhariwal), betas capped at 0.999."""
    f = lambda t: math.cos((t / steps + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(steps)], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


@HEADS.register("dit")
class DiffusionHead(ActionHead):
    samples = True
    exportable = True  # the sampling loop unrolls; the initial noise is a graph input

    def __init__(self, cfg: PolicyConfig, action_dim: int, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__()
        if cfg.diffusion_steps < 2 or not 1 <= cfg.sample_steps <= cfg.diffusion_steps:
            raise ValueError(f"need diffusion_steps >= 2 and 1 <= sample_steps <= diffusion_steps, "
                             f"got {cfg.diffusion_steps} and {cfg.sample_steps}")
        self.steps, self.sample_steps = cfg.diffusion_steps, cfg.sample_steps
        self.net = DiT(action_dim, cfg.chunk_size, cfg.d_model, cfg.head_layers, cfg.n_heads)
        self.register_buffer("alpha_bar", cosine_alpha_bar(cfg.diffusion_steps), persistent=False)
        self.register_buffer("low", low.float().clone())
        self.register_buffer("high", high.float().clone())

    def loss(self, cond: torch.Tensor, action: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        t = torch.randint(0, self.steps, (len(action),), device=action.device)
        noise = torch.randn_like(action)
        ab = self.alpha_bar[t][:, None, None]
        noisy = ab.sqrt() * action + (1 - ab).sqrt() * noise
        err = (self.net(noisy, t.float() / self.steps, cond).float() - noise).pow(2).mean(-1)
        return (err * valid.float()).mean()

    def predict(self, cond: torch.Tensor, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, guide: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """DDIM from the noise. ``guide`` = (prefix (B, K, A), weights (B, K)) inpaints the chunk
        (real-time chunking): see ``inpaint``."""
        b, k = cond.shape[:2]
        x = torch.randn(b, k, len(self.low), generator=generator, device=cond.device) if noise is None else noise
        start = x
        levels = torch.linspace(self.steps - 1, 0, self.sample_steps, device=cond.device).round().long()
        for i, t in enumerate(levels):
            ab = self.alpha_bar[t]
            if guide is not None:  # the committed actions noised to this level along the same noise
                x = inpaint(x, ab.sqrt() * guide[0] + (1 - ab).sqrt() * start, guide[1])
            eps = self.net(x, t.float().expand(b) / self.steps, cond).float()
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(self.low, self.high)
            if i + 1 == len(levels):
                return x0 if guide is None else inpaint(x0, guide[0], guide[1])
            ab_next = self.alpha_bar[levels[i + 1]]
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()  # the noise consistent with the clipped x0
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        return x
