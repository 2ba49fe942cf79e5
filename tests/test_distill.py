"""Distillation: the student learns the teacher's chunks rather than the demonstrations'."""

import json

import numpy as np
import pytest
import torch
from helpers import write_dataset

from vlaforge.cli import main
from vlaforge.data.dataset import LeRobotDataset
from vlaforge.data.sampler import ChunkSampler
from vlaforge.models.config import PolicyConfig
from vlaforge.runtime.policy import load_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train

TINY = PolicyConfig(d_model=32, n_layers=1, n_heads=2, vision_channels=[8, 8])


def _gap(student, teacher, data_dir) -> tuple[float, float]:
    """Mean |student - teacher| and |student - demonstrations| over training samples (normalised)."""
    data = LeRobotDataset(data_dir).load()
    c = student.cfg
    batch = ChunkSampler(data, student.normalizer, student.tokenizer, 1, c.chunk_size, c.max_text_tokens).sample(
        64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        s = student.model(batch["image"], batch["state"], batch["tokens"])
        t = teacher.model(batch["image"], batch["state"], batch["tokens"], torch.Generator().manual_seed(0))
    return float((s - t).abs().mean()), float((s - batch["action"]).abs().mean())


def test_student_learns_the_teacher_not_the_demonstrations(tmp_path):
    # The teacher learned the opposite behaviour on the same observations (actions negated).
    write_dataset(tmp_path / "data", episodes=6)
    write_dataset(tmp_path / "mirror", episodes=6, action_fn=lambda a: -a)
    teacher_dir = train(TrainConfig(dataset=str(tmp_path / "mirror"), output_dir=str(tmp_path / "teacher"), steps=60,
                                    batch_size=16, tracking="none", policy=TINY, seed=3), show_progress=False)
    teacher = load_policy(teacher_dir)
    gaps = {}
    for weight in (1.0, 0.0):  # weight 0 = the demonstrations alone: the control
        cfg = TrainConfig(dataset=str(tmp_path / "data"), output_dir=str(tmp_path / f"student{weight}"), steps=60,
                          batch_size=16, tracking="none", policy=TINY, teacher=str(teacher_dir), distill_weight=weight)
        gaps[weight] = _gap(load_policy(train(cfg, show_progress=False)), teacher, tmp_path / "data")
    assert gaps[1.0][0] < 0.5 * gaps[0.0][0]  # distilled: far closer to the teacher than the control
    assert gaps[1.0][0] < gaps[1.0][1]  # and closer to the teacher than to the demonstrations
    student = load_policy(tmp_path / "student1.0/policy")
    meta = json.loads((tmp_path / "student1.0/policy/config.json").read_text())
    assert meta["distilled_from"]["teacher"] == str(teacher_dir)
    assert np.allclose(student.normalizer.action_mean, teacher.normalizer.action_mean)


def test_distillation_errors(tmp_path, capsys):
    write_dataset(tmp_path / "data", episodes=2)
    teacher = train(TrainConfig(dataset=str(tmp_path / "data"), output_dir=str(tmp_path / "t"), steps=1, batch_size=4,
                                tracking="none", policy=PolicyConfig(**{**TINY.__dict__, "n_obs_steps": 2})), False)
    with pytest.raises(ValueError, match="frames of history"):
        train(TrainConfig(dataset=str(tmp_path / "data"), output_dir=str(tmp_path / "s"), steps=1, tracking="none",
                          policy=TINY, teacher=str(teacher)), show_progress=False)
    with pytest.raises(ValueError, match="exclude each other"):
        train(TrainConfig(dataset=str(tmp_path / "data"), output_dir=str(tmp_path / "s2"), steps=1, tracking="none",
                          init_from=str(teacher), teacher=str(teacher)), show_progress=False)
    assert main(["distill", f"--dataset={tmp_path / 'data'}", f"--output_dir={tmp_path / 's3'}"]) == 2
    assert "--teacher" in capsys.readouterr().err
