"""Fail-safes around a policy's ``act``: an inference-latency watchdog, an out-of-distribution
check, a latched emergency stop, and a retreat-and-retry recovery, every intervention logged.

The supervisor sits between the observation and the policy (the barrier filter sits between
the action and the robot; use both). On a slow inference it returns the hold chunk instead of
waiting; on an OOD observation it retreats (gripper up and open) for ``recovery_steps`` steps
and then lets the policy retry; after ``max_recoveries`` in one episode, or on ``estop()``, it
latches the emergency stop: hold still until ``release()``.
"""

from __future__ import annotations

import concurrent.futures
import time

import numpy as np

from vlaforge.safety.ood import OODDetector

HOLD = np.array([0.0, 0.0, 0.0, -1.0], np.float32)
RETREAT = np.array([0.0, 0.0, 1.0, -1.0], np.float32)  # straight up, gripper open


class Supervisor:
    def __init__(self, policy, budget_ms: float | None = None, ood: OODDetector | None = None,
                 recovery_steps: int = 5, max_recoveries: int = 3) -> None:
        if budget_ms is not None and budget_ms <= 0:
            raise ValueError(f"budget_ms must be > 0, got {budget_ms}")
        if recovery_steps < 1 or max_recoveries < 0:
            raise ValueError("recovery_steps must be >= 1 and max_recoveries >= 0")
        self.policy, self.budget_ms, self.ood = policy, budget_ms, ood
        self.recovery_steps, self.max_recoveries = recovery_steps, max_recoveries
        self.events: list[dict] = []
        self.stopped = False
        self._recoveries, self._calls = 0, 0
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1) if budget_ms else None
        self._late: concurrent.futures.Future | None = None

    def reset(self, seed: int = 0) -> None:
        self.policy.reset(seed)
        self._recoveries, self._calls, self.stopped = 0, 0, False

    def estop(self, reason: str = "operator") -> None:
        """Latch the emergency stop."""
        self.stopped = True
        self._log("estop", reason)

    def release(self) -> None:
        self.stopped = False
        self._log("release", "")

    def _log(self, kind: str, detail) -> None:
        self.events.append({"call": self._calls, "kind": kind, "detail": detail, "time": time.time()})

    def _chunk(self, row: np.ndarray, n: int) -> np.ndarray:
        return np.repeat(row[None], n, axis=0)

    def act(self, obs: dict) -> np.ndarray:
        """The policy's chunk, or a hold / retreat chunk when a fail-safe steps in."""
        self._calls += 1
        n = getattr(getattr(self.policy, "cfg", None), "chunk_size", 8)
        if self.stopped:
            return self._chunk(HOLD, n)
        if self.ood is not None:
            score = self.ood.score(self.policy, obs)
            if score > 1.0:
                self._recoveries += 1
                self._log("ood", round(score, 3))
                if self._recoveries > self.max_recoveries:
                    self.estop(f"{self._recoveries} out-of-distribution observations this episode")
                    return self._chunk(HOLD, n)
                return self._chunk(RETREAT, self.recovery_steps)
        if self._pool is None:
            return self.policy.act(obs)
        if self._late is not None and not self._late.done():
            self._log("watchdog", "previous inference still running")
            return self._chunk(HOLD, n)
        future = self._pool.submit(self.policy.act, obs)
        try:
            return future.result(timeout=self.budget_ms / 1000)
        except concurrent.futures.TimeoutError:
            self._late = future
            self._log("watchdog", f"inference exceeded {self.budget_ms:g} ms")
            return self._chunk(HOLD, n)
