"""``SafetyFilter``: a gymnasium wrapper that passes every action through the barrier QP and a
NaN/inf guard before the robot sees it, and logs each intervention.

Works around any env whose ``unwrapped`` exposes ``ee_pos()``, ``gripper_opening()`` and the
action scale of the tabletop convention (EE deltas of ``MAX_DELTA`` per unit, 20 Hz), and so
around any policy: the policy acts on the wrapped env as before.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

from vlaforge.envs.base import RobotModel, robot_env
from vlaforge.safety.cbf import BarrierQP
from vlaforge.safety.config import SafetyConfig


class SafetyFilter(gym.Wrapper):
    """Filters actions through the barrier QP; ``events`` holds every intervention of the episode."""

    def __init__(self, env: gym.Env, cfg: SafetyConfig | None = None, robot: RobotModel | None = None) -> None:
        super().__init__(env)
        self.qp = BarrierQP(cfg or SafetyConfig(), robot or robot_env(env).robot)
        self.events: list[dict] = []
        self.filter_ms: list[float] = []
        self._previous = np.zeros(4, np.float32)
        self._step = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.events, self.filter_ms, self._step = [], [], 0
        self._previous = np.zeros(4, np.float32)
        return obs, info

    def _log(self, kind: str, original: np.ndarray, safe: np.ndarray) -> None:
        self.events.append({"step": self._step, "kind": kind, "original": np.asarray(original, float).tolist(),
                            "filtered": safe.astype(float).tolist()})

    def safe_action(self, action: np.ndarray) -> np.ndarray:
        """The action the robot may execute instead of ``action`` (logged when it differs)."""
        t = time.perf_counter()
        base = self.env.unwrapped
        p, opening = base.ee_pos(), base.gripper_opening()
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (4,) or not np.all(np.isfinite(a)):
            safe = self.qp.stop(self._previous, opening)
            self._log("invalid_action", np.nan_to_num(a, nan=np.nan), safe)
        else:
            safe, status = self.qp.filter(np.clip(a, -1, 1), p, opening, self._previous)
            if status != "unchanged":
                self._log(status, a, safe)
        self.filter_ms.append(1000 * (time.perf_counter() - t))
        return safe

    def step(self, action):
        safe = self.safe_action(action)
        obs, reward, terminated, truncated, info = self.env.step(safe)
        self._previous = safe
        self._step += 1
        info["safety"] = {"filtered": bool(self.events and self.events[-1]["step"] == self._step - 1),
                          "action": safe}
        return obs, reward, terminated, truncated, info
