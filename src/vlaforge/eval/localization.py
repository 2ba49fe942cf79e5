"""How well a policy knows where the instruction's target and goal are: the error of its auxiliary
target/goal head (models/policy.py) on its own training frames against new scenes.

A large gap between the two means the policy memorised its training scenes instead of learning
to find objects, which behaviour cloning on few demonstrations does; `--grounding_scenes` is the
remedy this measures (train/techniques.py).
"""

from __future__ import annotations

import numpy as np
import torch

from vlaforge.data.dataset import LeRobotDataset
from vlaforge.data.sampler import env_state_stats
from vlaforge.envs import policy_env
from vlaforge.runtime.policy import Policy
from vlaforge.seeds import EVAL_SEEDS


def localization_error(policy: Policy, dataset: str, scenes_per_task: int = 20) -> dict:
    """Mean xy distance (m) between predicted and true target and goal positions, on the first
    frame of every training episode (``train_frames``) and on the first frame of
    ``scenes_per_task`` evaluation scenes per task (``new_scenes``, the scenes ``vlaforge eval``
    starts from). The auxiliary head predicts in the dataset's standard units, so the dataset
    that trained the policy is needed to read its output in metres."""
    if not getattr(policy.model, "aux_dim", 0):
        raise ValueError("the policy has no auxiliary target/goal head (trained without privileged env state)")
    data = LeRobotDataset(dataset).load(verify=False)
    if data.env_state is None:
        raise ValueError(f"{dataset} has no observation.environment_state to read the predictions against")
    mean, std = env_state_stats(data.env_state)
    firsts = np.concatenate([[0], np.cumsum(data.lengths)[:-1]])
    train = [(data.images[i], data.state[i], data.tasks[data.task_index[i]], data.env_state[i]) for i in firsts]
    new = []
    for task in policy.meta["tasks"]:
        env = policy_env(policy.meta, task, "train")
        for i in range(scenes_per_task):
            obs, info = env.reset(seed=EVAL_SEEDS + i)
            new.append((obs["image"], obs["state"], info["instruction"], env.unwrapped.task_points()))
        env.close()

    def error(frames: list) -> dict:
        dist = []
        for image, state, instruction, truth in frames:
            policy.reset()
            inputs = policy.inputs({"image": image, "state": np.asarray(state, np.float32), "instruction": instruction})
            with torch.no_grad():
                aux = policy.model.aux_prediction(*inputs)[0].float().numpy() * std + mean
            dist.append([np.linalg.norm(aux[0:2] - truth[0:2]), np.linalg.norm(aux[3:5] - truth[3:5])])
        d = np.asarray(dist)
        return {"target_m": float(d[:, 0].mean()), "goal_m": float(d[:, 1].mean()), "frames": len(frames)}

    return {"train_frames": error(train), "new_scenes": error(new)}
