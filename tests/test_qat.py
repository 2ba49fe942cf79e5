"""Quantization-aware training trains the network that int4 deployment runs."""

import json

import pytest
import torch
from helpers import write_dataset

from vlaforge.models.config import PolicyConfig
from vlaforge.runtime.policy import example_inputs, load_policy
from vlaforge.runtime.torch_methods import int4_weight
from vlaforge.train.config import ParallelConfig, TrainConfig
from vlaforge.train.qat import prepare_qat
from vlaforge.train.trainer import train

pytest.importorskip("torchao")
TINY = PolicyConfig(d_model=64, n_layers=1, n_heads=2, vision_channels=[8, 8])


def test_qat_trains_what_int4_deployment_runs(tmp_path):
    write_dataset(tmp_path / "data", episodes=3)
    out = train(TrainConfig(dataset=str(tmp_path / "data"), output_dir=str(tmp_path / "run"), steps=4, batch_size=4,
                            tracking="none", policy=TINY, qat="int4-weight", ema_decay=0.0), show_progress=False)
    policy = load_policy(out)
    assert json.loads((out / "config.json").read_text())["qat"] == "int4-weight"
    x = example_inputs(policy)
    with torch.no_grad():
        fake = prepare_qat(load_policy(out).model, "int4-weight")(*x)  # the forward QAT optimised
        real = int4_weight(policy.model)(*x)  # what `vlaforge quantize --method=int4-weight` deploys
        fp32 = policy.model(*x)
    assert (real - fake).abs().max() < 1e-4
    assert (real - fp32).abs().max() > 1e-4  # and the rounding it trained through is real


def test_qat_refuses_unknown_methods_and_sharded_training(tmp_path):
    write_dataset(tmp_path / "data", episodes=2)
    base = dict(dataset=str(tmp_path / "data"), steps=1, batch_size=4, tracking="none", policy=TINY)
    with pytest.raises(ValueError, match="unknown QAT method 'int2'"):
        train(TrainConfig(output_dir=str(tmp_path / "a"), qat="int2", **base), show_progress=False)
    with pytest.raises(ValueError, match="data parallelism only"):
        train(TrainConfig(output_dir=str(tmp_path / "b"), qat="int4-weight", parallel=ParallelConfig(tp=2), **base),
              show_progress=False)
