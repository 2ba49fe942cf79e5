"""Mamba: the chunked parallel scan and the recurrent step match the step-by-step recurrence."""

import pytest
import torch

from vlaforge.models.mamba import MambaMixer, selective_scan, selective_scan_reference
from vlaforge.models.moe import MoE
from vlaforge.models.transformer import MLP, Block


def scan_inputs(b=2, length=37, h=3, p=4, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, h, p, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(b, length, h, generator=g))
    A = -torch.rand(h, generator=g) * 4
    B, C = torch.randn(b, length, n, generator=g), torch.randn(b, length, n, generator=g)
    return x, dt, A, B, C, torch.randn(h, generator=g)


@pytest.mark.parametrize("chunk", [1, 5, 8, 64])
def test_parallel_scan_matches_recurrence(chunk):
    args = scan_inputs()
    ref, _ = selective_scan_reference(*args)
    torch.testing.assert_close(selective_scan(*args, chunk=chunk), ref, rtol=1e-5, atol=1e-5)


def test_scan_gradients_match():
    args = [a.clone().requires_grad_() for a in scan_inputs(length=19)]
    selective_scan(*args, chunk=8).square().sum().backward()
    fast = [a.grad.clone() for a in args]
    for a in args:
        a.grad = None
    selective_scan_reference(*args)[0].square().sum().backward()
    for f, a in zip(fast, args):
        torch.testing.assert_close(f, a.grad, rtol=1e-4, atol=1e-4)


def test_recurrent_step_matches_forward():
    torch.manual_seed(0)
    mixer = MambaMixer(16, n_heads=2, d_state=4, expand=2, chunk=8)
    x = torch.randn(3, 21, 16)
    full = mixer(x)
    cache = mixer.init_cache(3)
    steps = torch.stack([mixer.step(x[:, t], cache) for t in range(x.shape[1])], 1)
    torch.testing.assert_close(steps, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ffn", ["mlp", "moe"])
def test_block_step_matches_forward(ffn):
    torch.manual_seed(0)
    block = Block(16, MambaMixer(16, n_heads=2, d_state=4, chunk=4), MLP(16) if ffn == "mlp" else MoE(16, 4, 2, 8.0))
    x = torch.randn(2, 9, 16)
    cache = block.mixer.init_cache(2)
    steps = torch.stack([block.step(x[:, t], cache) for t in range(9)], 1)
    torch.testing.assert_close(steps, block(x), rtol=1e-4, atol=1e-5)


def test_padding_leaves_state_unchanged():
    torch.manual_seed(0)
    mixer = MambaMixer(8, n_heads=2, d_state=4, chunk=4, d_conv=1)  # no conv mixing: padding is fully inert
    x = torch.randn(1, 6, 8)
    mask = torch.tensor([[True, True, False, False, True, True]])
    out = mixer(x, mask)
    compact = mixer(x[:, mask[0]])
    torch.testing.assert_close(out[:, mask[0]], compact, rtol=1e-5, atol=1e-6)


def test_bad_config():
    with pytest.raises(ValueError, match="ssm_state"):
        MambaMixer(8, d_state=0)
    with pytest.raises(TypeError, match="no recurrent step"):
        from vlaforge.models.transformer import Attention
        Block(8, Attention(8, 2, 0.0), MLP(8)).step(torch.randn(1, 8), {})
