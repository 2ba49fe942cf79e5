"""Mixture of experts: capacity, dropped-token accounting, the balancing loss, utilisation."""

import math

import pytest
import torch

from vlaforge.models.moe import MoE


def test_capacity_is_respected_and_drops_counted():
    torch.manual_seed(0)
    moe = MoE(8, experts=4, top_k=2, capacity_factor=0.5)
    with torch.no_grad():  # route every token's first choice to expert 0
        moe.router.weight.zero_()
        moe.router.weight[0, 0] = 10.0
    x = torch.randn(1, 40, 8)
    x[..., 0] = x[..., 0].abs() + 1.0
    moe(x)
    cap = moe.capacity(40)
    assert cap == math.ceil(0.5 * 40 * 2 / 4) == 10
    share = moe.stats["utilisation"]
    kept = (1 - moe.stats["dropped"]) * 80
    assert torch.allclose(share.sum(), torch.tensor(1.0))
    assert bool((share * kept <= cap + 1e-4).all())  # no expert takes more than its capacity
    assert moe.stats["dropped"] > 0.4


def test_output_is_gated_sum_of_experts_with_ample_capacity():
    torch.manual_seed(0)
    moe = MoE(8, experts=3, top_k=2, capacity_factor=10.0)
    x = torch.randn(2, 5, 8)
    out = moe(x).view(-1, 8)
    flat = x.view(-1, 8)
    probs = moe.router(flat).softmax(-1)
    w, idx = probs.topk(2, -1)
    w = w / w.sum(-1, keepdim=True)
    ref = torch.stack([sum(w[n, r] * moe.experts[int(idx[n, r])](flat[n]) for r in range(2)) for n in range(10)])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert moe.stats["dropped"] == 0


def test_dropped_assignments_contribute_zero():
    torch.manual_seed(0)
    moe = MoE(8, experts=2, top_k=1, capacity_factor=0.5)
    x = torch.randn(1, 8, 8)
    out = moe(x)[0]
    assert moe.capacity(8) == 2
    zero_rows = (out.abs().sum(-1) == 0).sum()
    assert zero_rows == 8 - 4  # two experts x capacity two tokens kept


def test_balance_loss_is_differentiable_and_one_when_uniform():
    moe = MoE(8, experts=4, top_k=1)
    with torch.no_grad():
        moe.router.weight.zero_()
    moe(torch.randn(1, 64, 8))
    assert abs(moe.stats["aux_loss"].item() - 1.0) < 0.3  # ties go to expert 0: f=(1,0,0,0), P uniform
    torch.manual_seed(1)
    moe = MoE(8, experts=4, top_k=2)
    moe(torch.randn(2, 16, 8))
    moe.stats["aux_loss"].backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0


def test_bad_config():
    with pytest.raises(ValueError, match="moe_top_k"):
        MoE(8, experts=2, top_k=3)
    with pytest.raises(ValueError, match="moe_capacity"):
        MoE(8, capacity_factor=0)
