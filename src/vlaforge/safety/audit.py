"""Counting violations: one episode of any actor, with or without the barrier filter, and the
actors the safety benchmark audits besides a trained policy (random and adversarial).

Every step is judged by ``cbf.violations`` on what the robot actually executed (the filtered
action when the filter is on) and where the end effector actually went.
"""

from __future__ import annotations

import numpy as np

from vlaforge.envs.base import robot_env
from vlaforge.runtime.episode import StepHook, run_chunks
from vlaforge.safety.cbf import VIOLATIONS, violations
from vlaforge.safety.config import SafetyConfig
from vlaforge.safety.filter import SafetyFilter


class RandomActor:
    """Uniform actions over the whole action box, one per query."""

    def reset(self, seed: int) -> None:
        pass

    def __call__(self, obs: dict, sim, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-1, 1, (1, 4)).astype(np.float32)


class AdversarialActor:
    """Full-speed pushes at the nearest limit: the closest workspace face or keep-out sphere
    (re-aimed every 10 steps, with noise), the gripper squeezing shut."""

    def __init__(self, cfg: SafetyConfig) -> None:
        self.cfg = cfg

    def reset(self, seed: int) -> None:
        pass

    def __call__(self, obs: dict, sim, rng: np.random.Generator) -> np.ndarray:
        p = sim.ee_pos()
        lo, hi = np.asarray(self.cfg.workspace_lo), np.asarray(self.cfg.workspace_hi)
        faces = [(p[i] - lo[i], -np.eye(3)[i]) for i in range(3)] + [(hi[i] - p[i], np.eye(3)[i]) for i in range(3)]
        spheres = [(np.linalg.norm(p - np.array(s[:3])) - s[3], np.array(s[:3]) - p) for s in self.cfg.keep_out]
        _, direction = min(faces + spheres, key=lambda f: f[0] + rng.uniform(0, 0.03))
        push = np.clip(direction / (np.max(np.abs(direction)) + 1e-9) + rng.normal(0, 0.2, 3), -1, 1)
        return np.repeat(np.r_[push, 1.0][None], 10, 0).astype(np.float32)


class PolicyActor:
    """A trained policy's chunks, ``horizon`` actions executed per query (as evaluation does)."""

    def __init__(self, policy, horizon: int) -> None:
        self.policy, self.horizon = policy, horizon

    def reset(self, seed: int) -> None:
        self.policy.reset(seed)

    def __call__(self, obs: dict, sim, rng: np.random.Generator) -> np.ndarray:
        return self.policy.act(obs)[: self.horizon]


Actor = RandomActor | AdversarialActor | PolicyActor


class ViolationCounter(StepHook):
    """Violating steps per kind (``cbf.violations``), judged on what the robot executed
    (``executed(action, info)``) and where the end effector went. After each step ``last`` holds
    the kinds it broke and ``step_previous`` the action executed before it (for rate limits)."""

    def __init__(self, cfg: SafetyConfig, robot, sim, executed=lambda action, info: action) -> None:
        self.cfg, self.robot, self.sim, self.executed = cfg, robot, sim, executed
        self.counts = dict.fromkeys(VIOLATIONS, 0)
        self.previous = np.zeros(4, np.float32)
        self.last: dict = {}

    def before(self, action: np.ndarray) -> None:
        self.opening = self.sim.gripper_opening()

    def after(self, action: np.ndarray, obs: dict, reward: float, info: dict) -> None:
        executed = self.executed(action, info)
        self.last = violations(self.cfg, self.robot, self.opening, self.previous, executed, self.sim.ee_pos())
        for kind, hit in self.last.items():
            self.counts[kind] += hit
        self.step_previous, self.previous = self.previous, executed


def audit_episode(env, actor: Actor, seed: int, cfg: SafetyConfig, filtered: bool) -> dict:
    """Run one episode of ``actor`` on ``env`` (wrapped in the filter when ``filtered``):
    success, length, violating steps per kind, filter interventions and per-step filter time."""
    robot = robot_env(env).robot
    run_env = SafetyFilter(env, cfg, robot) if filtered else env
    sim = env.unwrapped
    rng = np.random.default_rng(seed)
    obs, _ = run_env.reset(seed=seed)
    actor.reset(seed)
    counter = ViolationCounter(cfg, robot, sim, executed=lambda action, info: info["safety"]["action"] if filtered
                               else np.clip(action, -1, 1))
    end = run_chunks(run_env, obs, lambda o: actor(o, sim, rng), [counter])
    out = {"seed": seed, "success": end.success, "length": end.steps, "violations": counter.counts}
    if filtered:
        out |= {"interventions": len(run_env.events), "filter_ms": list(run_env.filter_ms),
                "event_kinds": sorted({e["kind"] for e in run_env.events})}
    return out
