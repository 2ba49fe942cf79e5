"""Meta-World suites: ``metaworld-mt10``, ``metaworld-mt50``, ``metaworld-ml10``, ``metaworld-ml45``.

MT suites train and evaluate on the same tasks; ML suites hold tasks out (split ``test``).
Every suite also has the split ``unseen_paraphrase`` (held-out wording of its training tasks)
and the difficulty groups ``easy``, ``medium``, ``hard``, ``very_hard`` restricted to its tasks.
The suites register without the ``metaworld`` package; making an env without it fails with
the install command.
"""

from __future__ import annotations

from vlaforge.envs.base import Suite
from vlaforge.envs.config import EnvConfig
from vlaforge.envs.metaworld.env import SPLITS, MetaWorldEnv, MetaWorldExpert
from vlaforge.envs.metaworld.tasks import DIFFICULTY, INSTRUCTIONS, TASKS
from vlaforge.registry import SUITES

# Benchmark task sets of metaworld 3.x (env_dict.MT10_V3, ML10_V3, ML45_V3), written out so that
# the suites can be listed without the package; tests check them against the package.
BENCHMARKS: dict[str, dict[str, tuple[str, ...]]] = {
    "mt10": {"train": ("reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close",
                       "button-press-topdown", "peg-insert-side", "window-open", "window-close"), "test": ()},
    "mt50": {"train": TASKS, "test": ()},
    "ml10": {"train": ("reach", "push", "pick-place", "door-open", "drawer-close", "button-press-topdown",
                       "peg-insert-side", "window-open", "sweep", "basketball"),
             "test": ("drawer-open", "door-close", "shelf-place", "sweep-into", "lever-pull")},
    "ml45": {"train": tuple(t for t in TASKS if t not in ("bin-picking", "box-close", "hand-insert", "door-lock", "door-unlock")),
             "test": ("bin-picking", "box-close", "hand-insert", "door-lock", "door-unlock")},
}


DEFAULT_CAMERAS = ("corner2",)
DEFAULT_MAX_STEPS = 500


def make_env(task: str, split: str, cfg: EnvConfig) -> MetaWorldEnv:
    return MetaWorldEnv(task, split, cfg.image_size, tuple(cfg.cameras or DEFAULT_CAMERAS), cfg.max_steps or DEFAULT_MAX_STEPS)


for _name, _sets in BENCHMARKS.items():
    _tasks = _sets["train"] + _sets["test"]
    _split_tasks = {"train": _sets["train"], "unseen_paraphrase": _sets["train"]}
    if _sets["test"]:
        _split_tasks["test"] = _sets["test"]
    for _group, _members in DIFFICULTY.items():
        if any(t in _members for t in _tasks):
            _split_tasks[_group] = tuple(t for t in _tasks if t in _members)
    SUITES.register(f"metaworld-{_name}")(
        Suite(
            name=f"metaworld-{_name}",
            tasks=_tasks,
            splits=tuple(s for s in SPLITS if s in _split_tasks),
            make_env=make_env,
            make_expert=MetaWorldExpert,
            fps=80,
            env_state_names=("target_x", "target_y", "target_z", "goal_x", "goal_y", "goal_z"),
            pixel_points=("target", "goal"),
            default_cameras=DEFAULT_CAMERAS,
            default_max_steps=DEFAULT_MAX_STEPS,
            split_tasks=_split_tasks,
        )
    )

__all__ = ["BENCHMARKS", "DIFFICULTY", "INSTRUCTIONS", "MetaWorldEnv", "MetaWorldExpert", "TASKS", "make_env"]
