"""Action heads: shapes, determinism, the toy bimodal distribution, registry and bad config."""

import pytest
import torch

from vlaforge.models.config import PolicyConfig
from vlaforge.models.heads.base import ActionHead
from vlaforge.models.heads.diffusion import cosine_alpha_bar
from vlaforge.models.heads.tokenized import TokenizedHead
from vlaforge.registry import HEADS

HEADS_ALL = HEADS.names()  # every registered head is tested
LOW, HIGH = torch.full((2,), -2.0), torch.full((2,), 2.0)


def make_head(name, **kw):
    torch.manual_seed(0)
    cfg = PolicyConfig(d_model=32, n_heads=2, chunk_size=3, head=name, **kw)
    return HEADS.get(name)(cfg, 2, LOW, HIGH)


@pytest.mark.parametrize("name", HEADS_ALL)
def test_shapes_and_determinism(name):
    head = make_head(name)
    cond = torch.randn(5, 3, 32)
    action, valid = torch.randn(5, 3, 2), torch.ones(5, 3, dtype=torch.bool)
    loss = head.loss(cond, action, valid)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())
    a = head.predict(cond, torch.Generator().manual_seed(3))
    b = head.predict(cond, torch.Generator().manual_seed(3))
    assert a.shape == (5, 3, 2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", HEADS_ALL)
def test_invalid_slots_do_not_count(name):
    head = make_head(name)
    cond, action = torch.randn(4, 3, 32), torch.randn(4, 3, 2)
    valid = torch.tensor([[True, True, False]] * 4)
    torch.manual_seed(1)
    a = head.loss(cond, action, valid)
    torch.manual_seed(1)
    b = head.loss(cond, torch.cat([action[:, :2], action[:, 2:] + 100.0], 1), valid)
    torch.testing.assert_close(a, b)


def test_tokenizer_round_trip_and_bin_width():
    head = make_head("tokenized", action_bins=256)
    x = torch.rand(1000, 2) * 3.9 - 1.95
    err = (head.detokenize(head.tokenize(x)) - x).abs().max()
    assert err <= (4.0 / 256) / 2 + 1e-6
    assert head.tokenize(torch.tensor([[-9.0, 9.0]])).tolist() == [[0, 255]]


def bimodal_batch(n, gen):
    """Actions +-1 (both dims, both slots) with equal probability for one and the same cond."""
    sign = torch.randint(0, 2, (n, 1, 1), generator=gen).float() * 2 - 1
    return sign.expand(n, 3, 2) + 0.05 * torch.randn(n, 3, 2, generator=gen)


def fit(name, steps):
    head = make_head(name, head_layers=2, sample_steps=10, diffusion_steps=50)
    cond = torch.randn(1, 3, 32, generator=torch.Generator().manual_seed(7))
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        action = bimodal_batch(128, gen)
        loss = head.loss(cond.expand(128, -1, -1), action, torch.ones(128, 3, dtype=torch.bool))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        sample = head.predict(cond.expand(400, -1, -1), torch.Generator().manual_seed(1))
    return head, losses, sample.mean((1, 2))


@pytest.mark.parametrize("name", ["dit", "flow"])
def test_generative_heads_sample_both_modes(name):
    _, losses, mean = fit(name, 400)
    assert sum(losses[-50:]) / 50 < 0.5 * sum(losses[:20]) / 20
    up, down = (mean > 0.5).float().mean(), (mean < -0.5).float().mean()
    assert 0.25 < up < 0.75 and 0.25 < down < 0.75, (up, down)
    assert ((mean.abs() < 0.5).float().mean()) < 0.1


def test_regression_averages_the_modes():
    _, _, mean = fit("regression", 300)
    assert mean.abs().max() < 0.3


def test_schedule_and_bad_config():
    ab = cosine_alpha_bar(100)
    assert ab[0] > 0.99 and ab[-1] < 1e-3 and bool((ab[1:] < ab[:-1]).all())
    with pytest.raises(KeyError, match="unknown action head 'difusion'"):
        HEADS.get("difusion")
    with pytest.raises(ValueError, match="sample_steps"):
        make_head("dit", sample_steps=0)
    with pytest.raises(ValueError, match="action_bins"):
        TokenizedHead(PolicyConfig(action_bins=1), 2, LOW, HIGH)


@pytest.mark.parametrize("name", HEADS_ALL)
def test_every_head_meets_the_contract(name):
    """Flags and methods the toolkit relies on: a sampling head's prediction depends on the
    generator, a deterministic one's does not; given the initial noise, every head's prediction
    is a function of its inputs alone (what batching several robots and ONNX export rely on)."""
    assert issubclass(HEADS.get(name), ActionHead)
    head = make_head(name)
    cond = torch.randn(2, 3, 32)
    a, b = head.predict(cond, torch.Generator().manual_seed(1)), head.predict(cond, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) != HEADS.get(name).samples
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(3))
    c = head.predict(cond, torch.Generator().manual_seed(1), noise)
    assert torch.equal(c, head.predict(cond, torch.Generator().manual_seed(2), noise))
    if HEADS.get(name).samples:  # the noise is the generator's first draw
        assert torch.equal(a, head.predict(cond, None, torch.randn(a.shape, generator=torch.Generator().manual_seed(1))))
