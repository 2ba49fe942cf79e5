"""The ``pusht`` suite: Push-T on gym-pusht's physics with a scripted model-predictive pusher.

The suite registers without the package; making an env without it fails with the install command.
"""

from __future__ import annotations

from vlaforge.envs.base import Suite
from vlaforge.envs.config import EnvConfig
from vlaforge.envs.pusht.env import CAMERAS, SPLITS, TASKS, PushTEnv
from vlaforge.envs.pusht.expert import PushTExpert
from vlaforge.registry import SUITES

DEFAULT_MAX_STEPS = 300


def make_env(task: str, split: str, cfg: EnvConfig) -> PushTEnv:
    return PushTEnv(task, split, cfg.image_size, tuple(cfg.cameras or CAMERAS), cfg.max_steps or DEFAULT_MAX_STEPS)


SUITES.register("pusht")(
    Suite(
        name="pusht",
        tasks=TASKS,
        splits=SPLITS,
        make_env=make_env,
        make_expert=PushTExpert,
        fps=10,
        env_state_names=("target_x", "target_y", "target_z", "goal_x", "goal_y", "goal_z"),
        pixel_points=("target", "goal"),
        default_cameras=CAMERAS,
        default_max_steps=DEFAULT_MAX_STEPS,
        state_names=("agent_x", "agent_y"),
        action_names=("dx", "dy"),
    )
)

__all__ = ["PushTEnv", "PushTExpert", "make_env"]
