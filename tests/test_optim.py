"""Every registered optimizer: reaches the known optimum of an ill-conditioned least-squares
problem, lowers the policy's loss, and trains/resumes through the trainer."""

import dataclasses
import json
import shutil

import pytest
import torch
from helpers import write_dataset
from test_parallel import batch, tiny_model
from torch import nn

from vlaforge.models.config import PolicyConfig
from vlaforge.registry import OPTIMIZERS
from vlaforge.train import amp
from vlaforge.train.config import OptimConfig, TrainConfig
from vlaforge.train.optim import build_optimizer, lr_at, param_groups
from vlaforge.train.trainer import BCObjective, train, train_step

CPU = torch.device("cpu")
# name -> (peak lr, steps) on the least-squares problem
SETTINGS = {"adamw": (0.05, 400), "radam": (0.05, 400), "lion": (0.02, 400), "sophia": (0.03, 300),
            "lbfgs": (1.0, 15), "kfac": (0.5, 150)}


class LeastSquares(nn.Module):
    """mean (x.w + b - y)^2 with feature scales from 0.1 to 3 (condition number ~900)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(256, 8, generator=g) * torch.logspace(-1, 0.5, 8)
        self.w_star, self.b_star = torch.randn(8, 1, generator=g), torch.tensor([0.7])
        self.y = self.x @ self.w_star + self.b_star
        self.linear = nn.Linear(8, 1)

    def forward(self, _batch) -> torch.Tensor:
        return ((self.linear(self.x) - self.y) ** 2).mean()


def test_every_optimizer_is_registered_and_tested():
    assert OPTIMIZERS.names() == sorted(SETTINGS)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_optimizer_reaches_the_least_squares_optimum(name):
    lr, steps = SETTINGS[name]
    torch.manual_seed(0)
    problem = LeastSquares()
    cfg = OptimConfig(name=name, lr=lr, weight_decay=0.0, warmup_steps=0, min_lr_ratio=0.01, curvature_every=5)
    opt = build_optimizer(problem, cfg)
    scaler = amp.grad_scaler("fp32", CPU)
    with torch.no_grad():
        first = float(problem(None))
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, cfg)
        train_step(problem, opt, scaler, [{}], "fp32", CPU, 0.0)
    w, b = problem.linear.weight.detach().T, problem.linear.bias.detach()
    with torch.no_grad():
        assert float(problem(None)) < 1e-4 * first
    assert torch.linalg.vector_norm(w - problem.w_star) < 0.05 and abs(float(b - problem.b_star)) < 0.02


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_optimizer_lowers_the_policy_loss(name, precision):
    model = tiny_model()
    lr = {"lbfgs": 0.5, "kfac": 0.05, "lion": 3e-4}.get(name, 1e-3)
    opt = build_optimizer(model, OptimConfig(name=name, lr=lr, curvature_every=2))
    scaler = amp.grad_scaler(precision, CPU)
    data = [batch(8, seed=1)]
    losses = [train_step(BCObjective(model), opt, scaler, data, precision, CPU, 1.0)[0] for _ in range(12)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", ["sophia", "kfac", "lion", "lbfgs"])
def test_optimizer_state_survives_a_resume(tmp_path, name):
    write_dataset(tmp_path / "ds", episodes=3, length=10)
    tiny = PolicyConfig(d_model=32, n_layers=1, n_heads=2, chunk_size=4, vision_channels=[8, 8])

    cfg = TrainConfig(dataset=str(tmp_path / "ds"), output_dir=str(tmp_path / "run"), steps=8, batch_size=8,
                      log_every=1, ckpt_every=4, tracking="none", policy=tiny, precision="fp32",
                      optim=OptimConfig(name=name, lr=1e-3, warmup_steps=2, curvature_every=3))
    train(cfg, show_progress=False)
    full = losses(tmp_path / "run")
    # Lose everything after the step-4 checkpoint, then resume: the same losses follow.
    shutil.rmtree(tmp_path / "run/checkpoints/step_0000008")
    shutil.rmtree(tmp_path / "run/policy")
    train(dataclasses.replace(cfg, resume=True), show_progress=False)
    resumed = losses(tmp_path / "run")
    assert resumed[:4] == full[:4] and len(resumed) == 8
    if name == "lbfgs":  # its curvature history is rebuilt, not restored
        assert all(torch.isfinite(torch.tensor(resumed)))
    else:
        assert resumed == pytest.approx(full, rel=1e-5)


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_closure_optimizers_refuse_fp16_loss_scaling():
    model = tiny_model()
    opt = build_optimizer(model, OptimConfig(name="lbfgs"))
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    with pytest.raises(ValueError, match="fp16 loss scaling"):
        train_step(BCObjective(model), opt, scaler, [batch(4)], "fp32", CPU, 1.0)


def test_adamw_fuses_plain_weights_and_matches_the_per_tensor_step():
    """Plain CPU weights get torch's fused AdamW; its steps equal the per-tensor loop's."""
    torch.manual_seed(0)
    models = [LeastSquares(), LeastSquares()]
    models[1].load_state_dict(models[0].state_dict())
    cfg = OptimConfig(lr=0.05, weight_decay=0.1)
    fused = build_optimizer(models[0], cfg)
    loop = torch.optim.AdamW(param_groups(models[1], 0.1), lr=0.05, betas=tuple(cfg.betas), foreach=False)
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    for _ in range(20):
        for model, opt in zip(models, (fused, loop)):
            opt.zero_grad()
            model(None).backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
