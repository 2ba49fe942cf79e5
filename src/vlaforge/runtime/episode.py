"""One chunked-execution loop for every closed-loop episode (evaluation, chains, safety audit,
safe RL, active learning): a policy proposes a chunk of actions, the first ``horizon`` are
executed (receding horizon), then it is asked again, until the episode ends.

What differs between callers is only what they record per step, so the loop takes hooks: a
``StepHook`` sees the state before each step (``before``) and the transition after it
(``after``). Termination is the env's ``terminated`` / ``truncated``, or ``budget`` steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


class StepHook:
    """Per-step bookkeeping; override what you need."""

    def before(self, action: np.ndarray) -> None:
        """Called with the action about to be executed (the env still in the pre-step state)."""

    def after(self, action: np.ndarray, obs: dict, reward: float, info: dict) -> None:
        """Called with the executed action and the step's result."""


@dataclass(frozen=True)
class EpisodeJob:
    """One closed-loop episode for a worker: the env to build and the scene, named fields rather
    than a tuple unpacked by position (jobs cross process boundaries pickled)."""

    suite: str
    env_cfg: dict
    split: str
    task: str
    seed: int
    horizon: int
    record: bool = False  # keep the rendered frames (rollout GIFs)
    domain: dict | None = None  # drawn randomization ranges, None = the nominal simulator


@dataclass
class Outcome:
    success: bool
    steps: int
    obs: dict  # the last observation
    info: dict = field(default_factory=dict)  # the last step's info
    ended: bool = False  # terminated or truncated (False: stopped by the budget)


def run_chunks(env, obs: dict, chunk: Callable[[dict], Iterable[np.ndarray]], hooks: Sequence[StepHook] = (),
               budget: int | None = None, stop_on_truncation: bool = True) -> Outcome:
    """Execute ``chunk(obs)``'s actions on ``env`` from ``obs`` until the episode ends (or ``budget``
    steps); ``chunk`` returns the actions to execute before it is called again (already cut to
    the horizon). Success is the last step's ``info["success"]``."""
    steps, info = 0, {}
    while True:
        for action in chunk(obs):
            for h in hooks:
                h.before(action)
            obs, reward, terminated, truncated, info = env.step(action)
            steps += 1
            for h in hooks:
                h.after(action, obs, float(reward), info)
            ended = terminated or (truncated and stop_on_truncation)
            if ended or (budget is not None and steps >= budget):
                return Outcome(bool(info.get("success", False)), steps, obs, info, bool(ended))
