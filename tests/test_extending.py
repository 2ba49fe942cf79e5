"""docs/extending.md's examples, executed: a head and a deploy backend are one file plus their
registry entries, and the rest of the toolkit (training, the head contract, deploy with its parity
check, bench latency, load_policy) takes them."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_dataset
from test_heads import make_head

from vlaforge.deploy.artifact import deploy
from vlaforge.deploy.latency import bench_latency
from vlaforge.models.config import PolicyConfig
from vlaforge.models.heads.base import ActionHead
from vlaforge.registry import DEPLOY_BACKENDS, DEPLOY_RUNTIMES, HEADS
from vlaforge.runtime.policy import load_policy, load_torch_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train

DOC = Path(__file__).parents[1] / "docs/extending.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture
def registries(monkeypatch):
    """Registrations made by a test are undone after it."""
    for registry in (HEADS, DEPLOY_RUNTIMES, DEPLOY_BACKENDS):
        monkeypatch.setattr(registry, "_items", dict(registry._items))


def test_a_head_from_the_docs_trains_and_meets_the_contract(registries, tmp_path):
    exec(compile(BLOCKS[0], str(DOC), "exec"), {})
    cls = HEADS.get("tanh-regression")
    assert issubclass(cls, ActionHead) and cls.exportable and not cls.samples
    head = make_head("tanh-regression")
    cond = torch.randn(4, 3, 32)
    assert torch.equal(head.predict(cond), head.predict(cond)) and head.predict(cond).abs().max() <= 2.0
    write_dataset(tmp_path / "data", episodes=2)
    policy_dir = train(TrainConfig(dataset=str(tmp_path / "data"), output_dir=str(tmp_path / "run"), steps=2,
                                   batch_size=4, tracking="none",
                                   policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, vision_channels=[8, 8],
                                                       head="tanh-regression")), show_progress=False)
    assert load_policy(policy_dir).cfg.head == "tanh-regression"


def test_a_deploy_backend_from_the_docs_deploys_loads_and_is_timed(registries, tmp_path):
    exec(compile(BLOCKS[1], str(DOC), "exec"), {})
    write_dataset(tmp_path / "data", episodes=2)
    policy_dir = train(TrainConfig(dataset=str(tmp_path / "data"), output_dir=str(tmp_path / "run"), steps=2,
                                   batch_size=4, tracking="none",
                                   policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, vision_channels=[8, 8])),
                       show_progress=False)
    out = deploy(policy_dir, tmp_path / "fp16", "fp16-weights")
    info = json.loads((out / "deploy.json").read_text())
    assert info["runtime"] == "fp16-weights" and 0 < info["parity_max_abs"] <= 0.05
    deployed, reference = load_policy(out), load_torch_policy(policy_dir)
    assert "fp16-weights" in DEPLOY_RUNTIMES.names()
    rows = bench_latency(str(policy_dir), ["eager", "fp16-weights"], calls=2, warmup=0, threads=1)
    assert [r["runtime"] for r in rows] == ["eager", "fp16-weights"] and 0 < rows[1]["max_action_diff"] <= 0.05
    weights = dict(deployed.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in weights.values())
    assert any(not torch.equal(p, q) for p, q in zip(weights.values(), reference.model.parameters()))  # rounded
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 255, reference.image_shape, dtype=np.uint8),
           "state": rng.normal(size=reference.state_dim).astype(np.float32), "instruction": "reach the red cube"}
    np.testing.assert_allclose(deployed.act(obs), reference.act(obs), atol=2e-2)
    (out / "model.fp16.safetensors").write_bytes(b"changed")
    with pytest.raises(ValueError, match="does not match its sha256"):
        load_policy(out)
