"""Mamba token mixer, in its Mamba-2 form (Dao & Gu, 2024): a selective state-space scan as a
drop-in for attention.

Per head h (with ``head_dim`` channels p and a state of size n) the recurrence is, with an
input-dependent step size dt_t and input-dependent B_t, C_t shared by the heads,

    H_t = exp(dt_t * A_h) * H_{t-1} + dt_t * x_t B_t^T        y_t = H_t C_t + D_h * x_t

so a step costs O(p n) and a sequence O(length): no T x T attention over the whole sequence.
Mamba-2 makes A a scalar per head (Mamba-1: per channel and state), which turns the scan into
matrix products:

- ``selective_scan``: the chunked scan (SSD). Within a chunk of ``chunk`` tokens the outputs
  are a causal, decay-weighted (C B^T) matrix applied to the inputs, as in masked attention;
  each chunk's final state is passed to the next through a short recurrence over chunks, and
  read out by the next chunk's C. All matmuls: fast on a CPU, never a (length x state) tensor
  per channel.
- ``selective_scan_reference``: the step-by-step recurrence, the ground truth for tests.
- ``mamba-ssm``'s fused Triton kernel when the tensors are on CUDA and the package is installed.

``MambaMixer.step`` advances one token with cached convolution and SSM states: recurrent
inference for control, O(1) per new token however long the history. Padding tokens
(``key_mask`` False) get a zero input and a zero step size, so they leave the state unchanged.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.models.config import PolicyConfig
from vlaforge.registry import BACKBONES


def selective_scan_reference(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                             D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (b, L, h, p); dt (b, L, h); A, D (h); B, C (b, L, n) -> y (b, L, h, p), last state (b, h, p, n)."""
    b, length, h, p = x.shape
    state = x.new_zeros(b, h, p, B.shape[-1])
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, None, None, :]
        ys.append((state * C[:, t, None, None, :]).sum(-1) + D[:, None] * x[:, t])
    return torch.stack(ys, 1), state


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T): out[i, j] = a[j+1] + ... + a[i] for i >= j, -inf above the diagonal
    (exp of it is the decay from step j to step i, zero where j > i)."""
    t = a.shape[-1]
    a = a[..., None].expand(*a.shape, t)  # [..., i, j] = a[i]
    a = a.masked_fill(~torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device), -1), 0.0)
    out = a.cumsum(-2)
    return out.masked_fill(~torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device)), float("-inf"))


def selective_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """The chunked scan; same arguments and output as ``selective_scan_reference`` (without the
    state). Runs in fp32 whatever the autocast dtype: decays compound rounding errors."""
    if x.is_cuda and mamba_ssm_available():
        return _scan_cuda(x, dt, A, B, C, D, chunk)
    with torch.autocast(x.device.type, enabled=False):
        b, length, h, p = x.shape
        pad = -length % chunk  # zero step sizes and inputs: the padding changes nothing
        x, dt, B, C = (F.pad(t.float(), (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
        c = x.shape[1] // chunk
        xs = (x * dt[..., None]).view(b, c, chunk, h, p)
        a = (dt * A).view(b, c, chunk, h).permute(0, 3, 1, 2)  # (b, h, c, l) log-decays
        B, C = B.view(b, c, chunk, -1), C.view(b, c, chunk, -1)
        a_cum = a.cumsum(-1)
        # 1. within each chunk: causal decay-weighted C B^T applied to the inputs
        scores = torch.einsum("bcln,bcsn->bcls", C, B)[:, None] * torch.exp(_segsum(a))  # (b, h, c, l, s)
        y = torch.einsum("bhcls,bcshp->bclhp", scores, xs)
        # 2. each chunk's contribution to its final state
        to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, h, c, l)
        states = torch.einsum("bcln,bhcl,bclhp->bchpn", B, to_end, xs)
        # 3. carry states across chunks: state entering chunk k
        states = torch.cat([torch.zeros_like(states[:, :1]), states], 1)
        across = torch.exp(_segsum(F.pad(a_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
        entering = torch.einsum("bhzc,bchpn->bzhpn", across, states)[:, :-1]
        # 4. the entering state, decayed to each position, read out by C
        y = y + torch.einsum("bcln,bchpn,bhcl->bclhp", C, entering, torch.exp(a_cum))
        y = y.reshape(b, c * chunk, h, p)[:, :length]
        return y + D[:, None] * x[:, :length]


@functools.cache
def mamba_ssm_available() -> bool:
    """Asked on every CUDA call: answered once, since a failed import is not cached by Python."""
    try:
        import mamba_ssm  # noqa: F401
    except ImportError:
        return False
    return True


def _scan_cuda(x, dt, A, B, C, D, chunk) -> torch.Tensor:
    """The fused SSD kernel of ``mamba-ssm`` (one group of B and C)."""
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return mamba_chunk_scan_combined(x, dt, A.float(), B[:, :, None], C[:, :, None], chunk, D=D.float())


class MambaMixer(nn.Module):
    """in-projection to (z, x, B, C, dt) -> causal depthwise conv over (x, B, C) -> SiLU ->
    selective scan over ``n_heads`` heads -> gated by SiLU(z) -> out-projection (Mamba-2 block)."""

    def __init__(self, d_model: int, n_heads: int = 4, d_state: int = 16, expand: int = 2, chunk: int = 32,
                 d_conv: int = 4) -> None:
        super().__init__()
        if min(d_state, expand, chunk, d_conv) < 1:
            raise ValueError(f"mamba needs ssm_state, ssm_expand and ssm_chunk >= 1, got {d_state}, {expand}, {chunk}")
        inner = expand * d_model
        if inner % n_heads:
            raise ValueError(f"mamba inner width {inner} must be divisible by n_heads {n_heads}")
        self.inner, self.heads, self.d_state, self.chunk = inner, n_heads, d_state, chunk
        conv_width = inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, inner + conv_width + n_heads)
        self.conv = nn.Conv1d(conv_width, conv_width, d_conv, groups=conv_width, padding=d_conv - 1)
        # Step sizes start log-uniform in [1e-3, 1e-1] (the bias is softplus^-1 of them); A_h in [-16, -1].
        dt = torch.exp(torch.rand(n_heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(n_heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(n_heads))
        self.out_proj = nn.Linear(inner, d_model)

    def _split(self, proj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """in-projection -> z, (x, B, C) before the conv, raw dt."""
        return proj.split([self.inner, self.inner + 2 * self.d_state, self.heads], -1)

    def _scan_inputs(self, xbc: torch.Tensor, dt: torch.Tensor):
        x, B, C = xbc.split([self.inner, self.d_state, self.d_state], -1)
        x = x.reshape(*x.shape[:-1], self.heads, -1)
        return x, F.softplus(dt.float() + self.dt_bias), B, C

    def forward(self, u: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d) -> (B, L, d); the scan runs left to right, so later tokens see earlier ones."""
        z, xbc, dt = self._split(self.in_proj(u))
        if key_mask is not None:
            xbc = xbc * key_mask[..., None]
        xbc = F.silu(self.conv(xbc.transpose(1, 2))[..., : u.shape[1]].transpose(1, 2))
        x, dt, B, C = self._scan_inputs(xbc, dt)
        if key_mask is not None:
            dt = dt * key_mask[..., None]
        y = selective_scan(x, dt, -torch.exp(self.A_log.float()), B, C, self.D, self.chunk)
        return self.out_proj(y.flatten(-2).to(z.dtype) * F.silu(z))

    def init_cache(self, batch: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        return {"conv": torch.zeros(batch, self.conv.in_channels, self.conv.kernel_size[0], device=device),
                "ssm": torch.zeros(batch, self.heads, self.inner // self.heads, self.d_state, device=device)}

    def step(self, u: torch.Tensor, cache: dict[str, torch.Tensor]) -> torch.Tensor:
        """One token (B, d) -> (B, d), updating ``cache`` in place; equals ``forward`` on the
        sequence so far, at its last position."""
        z, xbc, dt = self._split(self.in_proj(u))
        cache["conv"] = torch.cat([cache["conv"][:, :, 1:], xbc[:, :, None].float()], -1)
        xbc = F.silu((cache["conv"] * self.conv.weight[:, 0]).sum(-1) + self.conv.bias)
        x, dt, B, C = self._scan_inputs(xbc, dt)
        decay = torch.exp(dt * -torch.exp(self.A_log))[:, :, None, None]
        cache["ssm"] = decay * cache["ssm"] + (dt[..., None] * x)[..., None] * B[:, None, None, :]
        y = (cache["ssm"] * C[:, None, None, :]).sum(-1) + self.D[:, None] * x
        return self.out_proj(y.flatten(-2).to(z.dtype) * F.silu(z))


@BACKBONES.register("mamba")
def mamba_mixer(cfg: PolicyConfig) -> nn.Module:
    return MambaMixer(cfg.d_model, cfg.n_heads, cfg.ssm_state, cfg.ssm_expand, cfg.ssm_chunk)
