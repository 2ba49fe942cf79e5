"""CORAL feature alignment: the loss measures a distribution shift, and training with a
target-domain dataset pulls the visual features of the two domains together."""

import json

import numpy as np
import pytest
import torch
from helpers import write_dataset

from vlaforge.models.config import PolicyConfig
from vlaforge.train.alignment import coral_loss
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train


def test_coral_loss_measures_shift_and_is_differentiable():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 8, generator=g), torch.randn(512, 8, generator=g)
    assert coral_loss(a, b) < 0.1
    assert coral_loss(a * 10, b * 10) == pytest.approx(coral_loss(a, b).item(), rel=1e-4)  # scale-free
    shifted = (b * 2.0 + 1.0).requires_grad_()
    loss = coral_loss(a, shifted)
    assert loss > 1.0
    loss.backward()
    assert torch.isfinite(shifted.grad).all() and shifted.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2"):
        coral_loss(a[:1], b)


def test_training_with_an_align_dataset_closes_the_feature_gap(tmp_path):
    write_dataset(tmp_path / "source", episodes=6, seed=0)
    write_dataset(tmp_path / "target", episodes=6, seed=1, image_fn=lambda im: (im // 4 + 150).astype(np.uint8))
    policy = PolicyConfig(d_model=32, n_layers=1, n_heads=2, vision_channels=[8, 8])
    final = {}
    for weight in (0.0, 1.0):  # weight 0 still measures the gap, without training against it
        run = tmp_path / f"run{weight}"
        cfg = TrainConfig(dataset=str(tmp_path / "source"), output_dir=str(run), steps=40, batch_size=8,
                          log_every=5, tracking="none", policy=policy, align_dataset=str(tmp_path / "target"),
                          align_weight=weight, ema_decay=0.0)
        train(cfg, show_progress=False)
        log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert len(log) == 8 and all(np.isfinite(r["align_loss"]) for r in log)
        final[weight] = np.mean([r["align_loss"] for r in log[-3:]])
    assert final[1.0] < 0.8 * final[0.0]
    bad = TrainConfig(dataset=str(tmp_path / "source"), output_dir=str(tmp_path / "bad"), steps=1, tracking="none",
                      policy=policy, align_dataset=str(tmp_path / "missing"))
    with pytest.raises(Exception, match="missing"):
        train(bad, show_progress=False)
