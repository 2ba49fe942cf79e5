"""A fixed-rate control loop around a policy: action chunking, temporal ensembling and
asynchronous inference, with every deadline miss counted.

The env is stepped once per period (1 / rate_hz of wall-clock time). A new chunk is requested
once ``horizon`` actions of the current one have been executed. In synchronous mode the policy
is queried inline, so a query slower than the period makes that tick late (a deadline miss). In
asynchronous mode a background thread computes the next chunk from the latest observation
while the current one keeps executing; actions for ticks that passed during inference are
skipped. A tick with no action available is a deadline miss: the robot holds still
(``hold_action``).

Temporal ensembling (ACT, Zhao et al. 2023) averages every stored chunk's prediction for the
current tick with weights exp(-m * i), i = 0 for the oldest chunk. Real-time chunking (RTC,
Black et al. 2025; sampling heads only) instead generates the next chunk to continue the
current one: the actions that will execute while it is computed (the delay, estimated from the
last queries' latency) are frozen and the rest of the overlap guided (``Policy.act_inpainted``).

Smoothness is measured where it suffers, at the ticks where a new chunk takes over: the action
jump |a_t - a_{t-1}| and the action jerk |a_t - 2 a_{t-1} + a_{t-2}| over the arm dimensions
(all but the last, the gripper), against the same at the other ticks.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from vlaforge.runtime.policy import on_policy_thread, policy_thread

HOLD_ACTION = np.array([0.0, 0.0, 0.0, -1.0], dtype=np.float32)


@dataclass
class LoopStats:
    """What one episode under the controller looked like."""

    steps: int = 0
    success: bool = False
    queries: int = 0
    deadline_misses: int = 0  # ticks with no action ready (async) or a late tick (sync)
    overruns: int = 0  # ticks whose own work (env step + action selection) exceeded the period
    inference_ms: list[float] = field(default_factory=list)
    skipped_actions: int = 0  # chunk actions for ticks that passed while they were computed
    actions: list[np.ndarray] = field(default_factory=list)  # the executed actions, one per tick
    switches: list[int] = field(default_factory=list)  # ticks at which a new chunk took over

    def summary(self) -> dict:
        inf = self.inference_ms or [0.0]
        return {"steps": self.steps, "success": self.success, "queries": self.queries,
                "deadline_misses": self.deadline_misses, "miss_rate": self.deadline_misses / max(self.steps, 1),
                "overruns": self.overruns, "skipped_actions": self.skipped_actions,
                "inference_ms_p50": float(np.median(inf)), "inference_ms_p99": float(np.percentile(inf, 99)),
                **smoothness(np.asarray(self.actions), self.switches)}


def smoothness(actions: np.ndarray, switches: list[int]) -> dict:
    """Mean action jump and jerk (arm dimensions) at the ticks where a new chunk took over and at
    the others; NaN where there is no such tick. ``actions`` (T, A)."""
    out = {}
    if actions.ndim != 2 or len(actions) < 3:
        return {f"{m}_{w}": float("nan") for m in ("jump", "jerk") for w in ("at_switch", "elsewhere")}
    arm = actions[:, :-1].astype(np.float64)
    jump = np.linalg.norm(np.diff(arm, axis=0), axis=1)  # jump[t - 1] is |a_t - a_{t-1}|
    jerk = np.linalg.norm(np.diff(arm, n=2, axis=0), axis=1)  # jerk[t - 2] is |a_t - 2 a_{t-1} + a_{t-2}|
    at = np.zeros(len(arm), bool)
    at[[t for t in switches if 0 < t < len(arm)]] = True
    for name, values, first in (("jump", jump, 1), ("jerk", jerk, 2)):
        mask = at[first:]
        out[f"{name}_at_switch"] = float(values[mask].mean()) if mask.any() else float("nan")
        out[f"{name}_elsewhere"] = float(values[~mask].mean()) if (~mask).any() else float("nan")
    return out


class RealTimeController:
    """Runs ``policy`` (anything with ``reset()`` and ``act(obs) -> (K, A)``) at ``rate_hz``."""

    def __init__(self, policy, rate_hz: float = 20.0, horizon: int = 4, asynchronous: bool = True,
                 ensemble: float | None = None, hold_action: np.ndarray = HOLD_ACTION, rtc: bool = False) -> None:
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if ensemble is not None and ensemble < 0:
            raise ValueError(f"the ensembling weight m must be >= 0, got {ensemble}")
        if rtc and ensemble is not None:
            raise ValueError("real-time chunking and temporal ensembling are alternatives: choose one")
        self.policy, self.period, self.horizon = policy, 1.0 / rate_hz, horizon
        self.asynchronous, self.ensemble, self.hold = asynchronous, ensemble, np.asarray(hold_action, np.float32)
        self.rtc = rtc

    # --- action selection -----------------------------------------------------------------
    def _select(self, chunks: list[tuple[int, np.ndarray]], tick: int) -> np.ndarray | None:
        """The action for ``tick`` from the chunks (start tick, actions) that cover it."""
        covering = [(start, a[tick - start]) for start, a in chunks if 0 <= tick - start < len(a)]
        if not covering:
            return None
        if self.ensemble is None:
            return covering[-1][1]
        weights = np.exp(-self.ensemble * np.arange(len(covering)))
        stacked = np.stack([a for _, a in covering])
        return (weights[:, None] * stacked).sum(0) / weights.sum()

    def _query(self, obs: dict, stats: LoopStats, committed: np.ndarray | None = None, delay: int = 0) -> np.ndarray:
        """One query of the policy, timed; it runs on the process's policy thread, whether the
        loop waits for it (sync) or not (async): torch on two threads slows both."""
        t = time.perf_counter()
        if committed is not None and len(committed):
            chunk = np.asarray(self.policy.act_inpainted(obs, committed, delay), dtype=np.float32)
        else:
            chunk = np.asarray(self.policy.act(obs), dtype=np.float32)
        stats.inference_ms.append(1000 * (time.perf_counter() - t))
        stats.queries += 1
        return chunk

    # --- the loop ---------------------------------------------------------------------------
    def run_episode(self, env, seed: int, max_steps: int | None = None) -> LoopStats:
        """One episode of ``env`` from ``seed`` under real-time control."""
        obs, info = env.reset(seed=seed)
        on_policy_thread(self.policy.reset, seed)
        limit = max_steps or getattr(env.unwrapped, "max_steps", 100)
        stats = LoopStats()
        chunks: list[tuple[int, np.ndarray]] = []
        lock = threading.Lock()
        pending: list[Future] = []

        def infer(observation: dict, tick: int, committed: np.ndarray | None = None, delay: int = 0) -> None:
            chunk = self._query(observation, stats, committed, delay)
            with lock:
                chunks.append((tick, chunk))
                del chunks[:-8]  # older chunks no longer cover any future tick of interest

        deadline = time.perf_counter()
        used = None
        for tick in range(limit):
            with lock:
                newest = chunks[-1] if chunks else None
            due = self.ensemble is not None or newest is None or tick - newest[0] >= self.horizon
            if due and not (pending and not pending[0].done()):
                args = (obs, tick)
                if self.rtc and newest is not None:
                    # Ticks that will pass before the new chunk arrives, from the slowest recent query.
                    delay = max(1, math.ceil(max(stats.inference_ms[-3:]) / (1000 * self.period))) \
                        if self.asynchronous else 0
                    args = (obs, tick, newest[1][tick - newest[0]:], delay)
                if self.asynchronous:
                    if pending:
                        pending[0].result()  # done: raises what the last query raised
                    pending[:] = [policy_thread().submit(infer, *args)]
                else:
                    on_policy_thread(infer, *args)
                    if stats.inference_ms[-1] > 1000 * self.period:
                        stats.deadline_misses += 1  # this tick's action was ready only after its deadline
            with lock:
                action = self._select(chunks, tick)
                fresh = chunks[-1] if chunks else None
            if fresh is not None and fresh is not used:
                stats.skipped_actions += tick - fresh[0]
                stats.switches.append(tick)
                used = fresh
            if action is None:
                stats.deadline_misses += 1
                action = self.hold
            stats.actions.append(np.asarray(action, np.float32))
            work_start = time.perf_counter()
            obs, _, terminated, truncated, info = env.step(action)
            stats.steps += 1
            deadline += self.period
            now = time.perf_counter()
            if now - work_start > self.period:
                stats.overruns += 1
            if terminated or truncated:
                stats.success = bool(info.get("success", False))
                break
            if now < deadline:
                time.sleep(deadline - now)
            else:
                deadline = now  # late: re-anchor instead of bursting to catch up
        for query in pending:
            query.result()
        return stats


class DelayedPolicy:
    """``policy`` with ``delay_s`` added to every query: a slower computer, for testing deadlines."""

    def __init__(self, policy, delay_s: float) -> None:
        self.policy, self.delay_s = policy, delay_s

    def reset(self, seed: int = 0) -> None:
        self.policy.reset(seed)

    def act(self, obs: dict) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.policy.act(obs)

    def act_inpainted(self, obs: dict, committed: np.ndarray, delay: int) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.policy.act_inpainted(obs, committed, delay)


def run_control(cfg) -> dict:
    """``cfg.episodes`` real-time episodes per task in the policy's suite; a ControlConfig."""
    from vlaforge.envs import get_suite, policy_env
    from vlaforge.runtime.policy import load_policy

    if not cfg.policy:
        raise ValueError("control needs --policy=DIR")
    if cfg.episodes < 1 or cfg.extra_latency_ms < 0:
        raise ValueError("episodes must be >= 1 and extra_latency_ms >= 0")
    policy = on_policy_thread(load_policy, cfg.policy)  # all of the policy's torch work on one thread
    suite = get_suite(policy.meta["suite"])
    tasks = suite.check(cfg.tasks or policy.meta["tasks"], cfg.split)
    agent = DelayedPolicy(policy, cfg.extra_latency_ms / 1000) if cfg.extra_latency_ms else policy
    ctl = RealTimeController(agent, cfg.rate_hz, cfg.horizon, cfg.asynchronous, cfg.ensemble if cfg.ensemble >= 0 else None,
                             rtc=cfg.rtc)
    episodes = []
    for task in tasks:
        env = policy_env(policy.meta, task, cfg.split)
        for i in range(cfg.episodes):
            episodes.append({"task": task, "seed": cfg.seed + i, **ctl.run_episode(env, cfg.seed + i).summary()})
        env.close()
    total = max(sum(e["steps"] for e in episodes), 1)
    return {"policy": cfg.policy, "rate_hz": cfg.rate_hz, "horizon": cfg.horizon, "asynchronous": cfg.asynchronous,
            "ensemble": cfg.ensemble if cfg.ensemble >= 0 else None, "rtc": cfg.rtc,
            "extra_latency_ms": cfg.extra_latency_ms,
            "success_rate": sum(e["success"] for e in episodes) / len(episodes),
            "deadline_miss_rate": sum(e["deadline_misses"] for e in episodes) / total,
            "inference_ms_p50": float(np.median([e["inference_ms_p50"] for e in episodes])),
            **{k: _nanmean([e[k] for e in episodes]) for k in SMOOTHNESS}, "episodes": episodes}


SMOOTHNESS = ("jump_at_switch", "jump_elsewhere", "jerk_at_switch", "jerk_elsewhere")


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
