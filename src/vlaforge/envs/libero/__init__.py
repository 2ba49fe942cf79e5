"""LIBERO suites: ``libero-spatial``, ``libero-object``, ``libero-goal``, ``libero-10`` (LIBERO-Long)
and ``libero-90``, on hf-libero's BDDL tasks and fixed initial states (env.py) with scripted
experts (expert.py). The suites register without the package; making an env without it fails
with the install command.
"""

from __future__ import annotations

from vlaforge.envs.base import Suite
from vlaforge.envs.config import EnvConfig
from vlaforge.envs.libero.env import ACTION_NAMES, SPLITS, STATE_NAMES, LiberoEnv
from vlaforge.envs.libero.expert import LiberoExpert
from vlaforge.envs.libero.tasks import MAX_STEPS, TASKS
from vlaforge.registry import SUITES

DEFAULT_CAMERAS = ("agentview", "robot0_eye_in_hand")


def make_env(task: str, split: str, cfg: EnvConfig) -> LiberoEnv:
    return LiberoEnv(task, split, cfg.image_size, tuple(cfg.cameras or DEFAULT_CAMERAS), cfg.max_steps)


for _suite, _tasks in TASKS.items():
    _name = _suite.replace("_", "-")
    SUITES.register(_name)(
        Suite(
            name=_name,
            tasks=_tasks,
            splits=SPLITS if _suite == "libero_goal" else tuple(s for s in SPLITS if s != "unseen_paraphrase"),
            make_env=make_env,
            make_expert=LiberoExpert,
            fps=20,
            env_state_names=("target_x", "target_y", "target_z", "goal_x", "goal_y", "goal_z"),
            pixel_points=("target", "goal"),
            default_cameras=DEFAULT_CAMERAS,
            default_max_steps=MAX_STEPS[_suite],
            state_names=STATE_NAMES,
            action_names=ACTION_NAMES,
        )
    )

__all__ = ["LiberoEnv", "LiberoExpert", "TASKS", "make_env"]
