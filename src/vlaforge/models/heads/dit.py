"""Diffusion Transformer (Peebles & Xie, 2023) denoiser for action chunks, shared by the
diffusion and flow-matching heads.

Tokens are the K noisy actions of the chunk, each plus a position embedding and its own query
token from the policy (so chunk slot k is conditioned on what the backbone put in query k).
Every block is modulated by adaLN-Zero on c = time embedding + pooled query tokens: the
LayerNorms' shift and scale and a gate on each residual branch come from c, and the gates start
at zero, so each block starts as the identity; the output layer starts at zero too.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vlaforge.models.transformer import MLP, Attention


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of times t in [0, 1] (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], -1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width, elementwise_affine=False)
        self.attn = Attention(width, n_heads, 0.0)
        self.ln2 = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = MLP(width)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, -1)
        x = x + gate1[:, None] * self.attn(modulate(self.ln1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.ln2(x), shift2, scale2))


class DiT(nn.Module):
    """(noisy chunk (B, K, A), time (B,) in [0, 1], cond (B, K, d)) -> (B, K, A)."""

    def __init__(self, action_dim: int, chunk_size: int, d_cond: int, layers: int, n_heads: int) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"head_layers must be >= 1, got {layers}")
        w = d_cond
        self.inp = nn.Linear(action_dim, w)
        self.pos = nn.Parameter(torch.zeros(1, chunk_size, w))
        self.cond_tokens = nn.Linear(d_cond, w)
        self.cond_pool = nn.Linear(d_cond, w)
        self.time = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.blocks = nn.ModuleList([DiTBlock(w, n_heads) for _ in range(layers)])
        self.ln_out = nn.LayerNorm(w, elementwise_affine=False)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))
        self.out = nn.Linear(w, action_dim)
        for layer in (self.ada_out[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.time(time_embedding(t, self.pos.shape[-1]).to(cond.dtype)) + self.cond_pool(cond.mean(1))
        h = self.inp(x.to(cond.dtype)) + self.pos + self.cond_tokens(cond)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada_out(c).chunk(2, -1)
        return self.out(modulate(self.ln_out(h), shift, scale))
