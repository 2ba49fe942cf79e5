"""The built-in tabletop suite: ``vlaforge/Tabletop-<Task>-v0`` gymnasium ids."""

from __future__ import annotations

import gymnasium as gym

from vlaforge.envs.base import Suite
from vlaforge.envs.config import EnvConfig
from vlaforge.envs.tabletop.env import CONTROL_DT, TabletopEnv
from vlaforge.envs.tabletop.experts import Expert
from vlaforge.envs.tabletop.tasks import FAMILIES, SPLITS
from vlaforge.registry import SUITES


def gym_id(task: str) -> str:
    return "vlaforge/Tabletop-" + "".join(w.capitalize() for w in task.split("_")) + "-v0"


DEFAULT_CAMERAS = ("front",)
DEFAULT_MAX_STEPS = 100


def make_env(task: str, split: str, cfg: EnvConfig) -> TabletopEnv:
    return TabletopEnv(
        task=task,
        split=split,
        image_size=cfg.image_size,
        cameras=tuple(cfg.cameras or DEFAULT_CAMERAS),
        max_steps=cfg.max_steps or DEFAULT_MAX_STEPS,
        num_objects=cfg.num_objects,
    )


SUITES.register("tabletop")(
    Suite(
        name="tabletop",
        tasks=FAMILIES,
        splits=SPLITS,
        make_env=make_env,
        make_expert=Expert,
        fps=int(round(1 / CONTROL_DT)),
        env_state_names=("target_x", "target_y", "target_z", "goal_x", "goal_y", "goal_z"),
        pixel_points=("target", "goal"),
        default_cameras=DEFAULT_CAMERAS,
        default_max_steps=DEFAULT_MAX_STEPS,
    )
)

for _task in FAMILIES:
    if gym_id(_task) not in gym.registry:
        gym.register(id=gym_id(_task), entry_point=TabletopEnv, kwargs={"task": _task})

__all__ = ["TabletopEnv", "Expert", "gym_id", "make_env"]
