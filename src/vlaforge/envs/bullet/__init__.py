"""The ``tabletop-bullet`` suite: the tabletop tasks in PyBullet, a cross-simulator target."""

from __future__ import annotations

from vlaforge.envs.base import Suite
from vlaforge.envs.bullet.env import BulletTabletopEnv
from vlaforge.envs.config import EnvConfig
from vlaforge.envs.tabletop import DEFAULT_CAMERAS, DEFAULT_MAX_STEPS
from vlaforge.envs.tabletop.env import CONTROL_DT
from vlaforge.envs.tabletop.experts import Expert
from vlaforge.envs.tabletop.tasks import FAMILIES, SPLITS
from vlaforge.registry import SUITES


def make_env(task: str, split: str, cfg: EnvConfig) -> BulletTabletopEnv:
    return BulletTabletopEnv(task=task, split=split, image_size=cfg.image_size,
                             cameras=tuple(cfg.cameras or DEFAULT_CAMERAS), max_steps=cfg.max_steps or DEFAULT_MAX_STEPS,
                             num_objects=cfg.num_objects)


SUITES.register("tabletop-bullet")(
    Suite(
        name="tabletop-bullet", tasks=FAMILIES, splits=SPLITS, make_env=make_env, make_expert=Expert,
        fps=int(round(1 / CONTROL_DT)), env_state_names=("target_x", "target_y", "target_z", "goal_x", "goal_y", "goal_z"),
        pixel_points=("target", "goal"), default_cameras=DEFAULT_CAMERAS, default_max_steps=DEFAULT_MAX_STEPS,
    )
)

__all__ = ["BulletTabletopEnv", "make_env"]
