"""Knowledge distillation: a student learns the action chunks a teacher policy predicts.

The typical use is speed: a DiT or flow teacher, which denoises for several steps per chunk,
distilled into a regression student that needs one forward pass. The teacher labels every
training batch on the fly (its sampling noise drawn from a per-step seed, so a run is
reproducible); ``distill_weight`` mixes its targets with the demonstrations'.
"""

from __future__ import annotations

import torch
from torch import nn

from vlaforge.models.config import PolicyConfig
from vlaforge.runtime.policy import Policy


def check_teacher(teacher: Policy, spec: dict, weight: float, student: PolicyConfig) -> None:
    """The teacher must see the inputs the student sees and predict the actions it predicts."""
    have = teacher.meta["spec"]
    if teacher.cfg.n_obs_steps > student.n_obs_steps:
        raise ValueError(f"the teacher reads {teacher.cfg.n_obs_steps} frames of history, the student only "
                         f"{student.n_obs_steps}: give the student --policy.n_obs_steps >= the teacher's")
    if teacher.cfg.chunk_size < student.chunk_size:
        raise ValueError(f"the teacher predicts {teacher.cfg.chunk_size} actions per chunk, the student "
                         f"{student.chunk_size}")
    for key in ("image_size", "cameras", "state_dim", "action_dim"):
        if spec[key] != have[key]:
            raise ValueError(f"dataset {key} {spec[key]} differs from the teacher's {have[key]}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distill_weight must be in [0, 1], got {weight}")


@torch.no_grad()
def with_teacher_targets(teacher: Policy, batch: dict, device: torch.device, seed: int) -> dict:
    """``batch`` (moved to ``device``) plus the teacher's normalised action chunk for it."""
    batch = {k: v.to(device) for k, v in batch.items()}
    gen = torch.Generator(device).manual_seed(seed)
    n = teacher.cfg.n_obs_steps
    target = teacher.model(batch["image"][:, -n:], batch["state"][:, -n:], batch["tokens"], gen)
    chunk = batch["action"].shape[1]
    return batch | {"teacher_action": target[:, :chunk].float()}


def distillation_loss(model: nn.Module, batch: dict, weight: float) -> torch.Tensor:
    """The student's loss against the teacher's chunk (every slot valid), mixed with the
    demonstration loss: ``weight * teacher + (1 - weight) * demonstrations``."""
    taught = batch | {"action": batch["teacher_action"], "action_valid": torch.ones_like(batch["action_valid"])}
    loss = model.loss(taught)
    if weight < 1.0:
        loss = weight * loss + (1.0 - weight) * model.loss(batch)
    return loss
