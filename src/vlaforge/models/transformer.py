"""Attention with a selectable kernel, the MLP feed-forward and the pre-norm residual block that
every backbone (transformer, Mamba) and feed-forward (MLP, mixture of experts) plugs into.

Attention backends (``--policy.attention``):

| name          | kernel                                                                   |
|---------------|--------------------------------------------------------------------------|
| auto          | torch picks (CUDA: flash / mem-efficient; CPU fp32: flash); on CPU under bf16 autocast ``composed`` below ``COMPOSED_BELOW`` tokens, the math kernel below ``MATH_BELOW`` and flash from there on, the fastest of the three at each length |
| flash         | CUDA: the ``flash-attn`` package when installed (padding removed, exact), else torch's flash kernel; CPU: torch's fused flash kernel |
| mem_efficient | torch's memory-efficient kernel (CUDA only; torch has none on CPU)       |
| math          | torch's reference math kernel (materialises the attention matrix; on CPU it computes bf16 inputs in fp32) |
| composed      | softmax(QK^T / sqrt(d)) V from two matmuls in the input dtype and a softmax in fp32 (what naive attention under CUDA autocast computes); autograd keeps the T x T matrix |

``naive_attention`` is the textbook softmax(QK^T / sqrt(d)) V, the reference the benchmark and
the tests compare the kernels against.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from vlaforge.models.config import PolicyConfig
from vlaforge.registry import BACKBONES, FFNS

ATTENTION_BACKENDS = ("auto", "flash", "mem_efficient", "math", "composed")
# Under CPU bf16 autocast, at the policy's training shape (batch 64, 4 heads of 32, 2 cores;
# benchmarks/results/attention.json at 05c64ae, fwd + bwd ms): the composed matmuls beat torch's
# math kernel, which computes bf16 inputs in fp32 on CPU and handles fully masked rows in extra
# passes, at 32 and 64 tokens (3.5 vs 4.8, 7.6 vs 10.3) and lose at 96 (27.2 vs 17.6); at 16
# they are within 0.2 ms. The math kernel beats torch's flash kernel up to 128 tokens (42.9 vs
# 64.9) and loses from 192 on (109 vs 61).
COMPOSED_BELOW = 80
MATH_BELOW = 160
_SDPA = {"flash": SDPBackend.FLASH_ATTENTION, "mem_efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, T, Dh) each, key_mask (B, T) True = attend -> (B, H, T, Dh)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return scores.softmax(-1) @ v


def composed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
                       dropout: float = 0.0) -> torch.Tensor:
    """(B, H, T, Dh) each -> (B, H, T, Dh): scores QK^T / sqrt(Dh) in q's dtype, the softmax in
    fp32 (Vaswani et al. 2017, eq. 1), weights cast back for the product with V. A sequence
    whose keys are all masked gets zeros, as torch's SDPA gives (masked scores are the fp32
    minimum rather than -inf, so such a row's softmax and its gradient stay finite)."""
    scores = (q @ k.transpose(-2, -1)).float() * (1.0 / math.sqrt(q.shape[-1]))
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(torch.float32).min)
    weights = F.dropout(scores.softmax(-1), dropout) if dropout else scores.softmax(-1)
    out = weights.to(v.dtype) @ v
    if key_mask is not None:
        out = out.masked_fill(~key_mask.any(-1)[:, None, None, None], 0.0)
    return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, backend: str,
              dropout: float = 0.0) -> torch.Tensor:
    """Scaled dot-product attention on the named backend; (B, H, T, Dh) in and out."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; known: {', '.join(ATTENTION_BACKENDS)}")
    if q.device.type == "cpu" and backend == "mem_efficient":
        raise ValueError("attention backend mem_efficient has no CPU kernel in torch; use auto, flash or math")
    if backend == "flash" and q.is_cuda and flash_attn_available():
        return flash_attn_unpadded(q, k, v, key_mask, dropout)
    if backend == "flash" and q.is_cuda and key_mask is not None:
        raise ValueError("attention backend flash on CUDA with a padding mask needs the flash-attn package "
                         "(pip install flash-attn): torch's flash kernel takes no mask; use auto or mem_efficient")
    mask = None if key_mask is None else key_mask[:, None, None, :]
    if backend == "auto":
        if not (q.device.type == "cpu" and torch.is_autocast_enabled("cpu") and q.shape[-2] < MATH_BELOW):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        backend = "composed" if q.shape[-2] < COMPOSED_BELOW else "math"  # the table above
    if backend == "composed":
        return composed_attention(q, k, v, key_mask, dropout)
    with sdpa_kernel(_SDPA[backend]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


@functools.cache
def flash_attn_available() -> bool:
    """Asked on every CUDA call: answered once, since a failed import is not cached by Python."""
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def flash_attn_unpadded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
                        dropout: float = 0.0, kernel=None) -> torch.Tensor:
    """Attention through ``flash_attn_varlen_func``: the masked (padding) tokens are removed, the
    sequences packed end to end, and the outputs scattered back, padding positions as zeros.

    flash-attn takes no mask, so packing is how it skips padding exactly. ``kernel`` defaults to
    the package's function; tests pass a reference to check the packing on CPU.
    """
    if kernel is None:
        from flash_attn import flash_attn_varlen_func as kernel
    b, h, t, dh = q.shape
    keep = torch.ones(b, t, dtype=torch.bool, device=q.device) if key_mask is None else key_mask
    lengths = keep.sum(1, dtype=torch.int32)
    cu = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
    rows = keep.flatten()
    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16

    def pack(x: torch.Tensor) -> torch.Tensor:  # (B, H, T, Dh) -> (N, H, Dh), real tokens only
        return x.transpose(1, 2).reshape(b * t, h, dh)[rows].to(dtype)

    longest = int(lengths.max())
    out = kernel(pack(q), pack(k), pack(v), cu, cu, longest, longest, dropout_p=dropout)
    full = out.new_zeros(b * t, h, dh)
    full[rows] = out
    return full.view(b, t, h, dh).transpose(1, 2).to(q.dtype)


class Attention(nn.Module):
    """Multi-head attention with separate q, k, v projections, so that tensor parallelism can
    split them by heads (train/parallel.py); heads are counted from the projection width, which
    is the local width on a tensor-parallel rank."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, backend: str = "auto") -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; known: {', '.join(ATTENTION_BACKENDS)}")
        self.n_heads, self.head_dim, self.dropout, self.backend = n_heads, d_model // n_heads, dropout, backend
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.proj = nn.Linear(d_model, d_model)
        self._register_load_state_dict_pre_hook(_split_fused_qkv)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (f(x).view(b, t, -1, self.head_dim).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = attention(q, k, v, key_mask, self.backend, self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))


def _split_fused_qkv(state: dict, prefix: str, *args) -> None:
    """Policies saved before q, k, v were separate hold one fused ``qkv`` projection: split it."""
    for kind in ("weight", "bias"):
        fused = state.pop(f"{prefix}qkv.{kind}", None)
        if fused is not None:
            for name, part in zip("qkv", fused.chunk(3)):
                state[f"{prefix}{name}.{kind}"] = part


class MLP(nn.Sequential):
    def __init__(self, d_model: int, hidden: int | None = None) -> None:
        super().__init__(nn.Linear(d_model, hidden or 4 * d_model), nn.GELU(), nn.Linear(hidden or 4 * d_model, d_model))


class Block(nn.Module):
    """Pre-norm residual block: x + mixer(ln(x)), then x + ffn(ln(x)). The mixer moves
    information between tokens (attention, a state-space scan), the feed-forward within each."""

    def __init__(self, d_model: int, mixer: nn.Module, ffn: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.mixer = mixer
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = ffn
        self.drop = nn.Dropout(dropout)
        self._register_load_state_dict_pre_hook(_rename_legacy)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.mixer(self.ln1(x), key_mask))
        return x + self.drop(self.ffn(self.ln2(x)))

    def step(self, x: torch.Tensor, cache: dict[str, torch.Tensor]) -> torch.Tensor:
        """One token (B, d) with a recurrent mixer's cache (Mamba): inference for control."""
        if not hasattr(self.mixer, "step"):
            raise TypeError(f"{type(self.mixer).__name__} has no recurrent step; use the mamba backbone")
        x = x + self.mixer.step(self.ln1(x), cache)
        return x + self.ffn(self.ln2(x)[:, None])[:, 0]


def _rename_legacy(state: dict, prefix: str, *args) -> None:
    """Policies saved before backbones were selectable name the mixer ``attn`` and the
    feed-forward ``mlp``."""
    for old, new in (("attn.", "mixer."), ("mlp.", "ffn.")):
        for key in [k for k in state if k.startswith(prefix + old)]:
            state[prefix + new + key[len(prefix + old):]] = state.pop(key)


@BACKBONES.register("transformer")
def attention_mixer(cfg: PolicyConfig) -> nn.Module:
    return Attention(cfg.d_model, cfg.n_heads, cfg.dropout, cfg.attention)


@FFNS.register("mlp")
def mlp_ffn(cfg: PolicyConfig) -> nn.Module:
    return MLP(cfg.d_model)
