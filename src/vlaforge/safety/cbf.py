"""Discrete-time control barrier functions for an end-effector-delta robot, as one small QP.

The action a (4,) commands a displacement d = a[:3] * max_delta from the current position p
and a gripper opening. Each safe set is {h(p) >= 0}; the filter requires

    h(p + d) >= (1 - gamma) h(p)

so a step may use at most the fraction gamma of the remaining margin. For the workspace box
h is linear (exact); for a keep-out sphere h = |p - c|^2 - r^2 is convex, so its linearisation
h(p) + 2 (p - c) . d is a lower bound on h(p + d) and the linear constraint is conservative.
The servo reaches p + k d with k in [0, 1] (it lags, critically damped), and every constraint
holds for k = 0 and k = 1, so it holds along the way. Speed and acceleration limits and the
gripper force limit are bounds on a. The QP

    min |a - a_policy|^2   s.t.   the constraints above, -1 <= a <= 1

is solved by OSQP; an action that already satisfies every constraint is returned untouched, and
an infeasible QP returns the safe stop (no motion, the gripper held).
"""

from __future__ import annotations

import numpy as np

from vlaforge.envs.base import RobotModel
from vlaforge.safety.config import SafetyConfig


def check_safety(cfg: SafetyConfig) -> None:
    """Raise ValueError naming the first limit that cannot be used."""
    lo, hi = np.asarray(cfg.workspace_lo, float), np.asarray(cfg.workspace_hi, float)
    if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo + 2 * cfg.margin < hi):
        raise ValueError(f"safety workspace must be two 3-vectors with lo + 2 margin < hi, got {cfg.workspace_lo} "
                         f"and {cfg.workspace_hi}")
    for sphere in cfg.keep_out:
        if len(sphere) != 4 or sphere[3] <= 0:
            raise ValueError(f"keep_out entries are spheres [x, y, z, radius > 0], got {sphere}")
    for key in ("max_speed", "max_accel", "max_grip_force", "margin"):
        if not getattr(cfg, key) > 0 and not (key == "margin" and cfg.margin == 0):
            raise ValueError(f"safety {key} must be > 0, got {getattr(cfg, key)}")
    if not 0 < cfg.gamma <= 1:
        raise ValueError(f"safety gamma must be in (0, 1], got {cfg.gamma}")


def constraints(cfg: SafetyConfig, robot: RobotModel, p: np.ndarray, opening: float,
                previous: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows G, lower l, upper u with l <= G a <= u (identity rows first: the per-action bounds)."""
    m = robot.max_delta
    lo = np.asarray(cfg.workspace_lo) + cfg.margin
    hi = np.asarray(cfg.workspace_hi) - cfg.margin
    speed = min(1.0, cfg.max_speed * robot.dt / m)
    accel = cfg.max_accel * robot.dt * robot.dt / m
    lower = np.maximum.reduce([np.full(3, -1.0), np.full(3, -speed), previous[:3] - accel,
                               -cfg.gamma * (p - lo) / m])
    upper = np.minimum.reduce([np.full(3, 1.0), np.full(3, speed), previous[:3] + accel, cfg.gamma * (hi - p) / m])
    # Gripper: closing further than opening - F/k would squeeze harder than the force limit.
    squeeze = cfg.max_grip_force / robot.finger_gain / robot.finger_open
    grip_hi = min(1.0, 1.0 - 2.0 * max(0.0, opening - squeeze))
    rows, lows, ups = [np.eye(4)], [np.r_[lower, -1.0]], [np.r_[upper, grip_hi]]
    for x, y, z, r in cfg.keep_out:
        offset = p - np.array([x, y, z])
        h = offset @ offset - (r + cfg.margin) ** 2
        rows.append(np.r_[2 * offset * m, 0.0][None])
        lows.append(np.array([-cfg.gamma * h]))
        ups.append(np.array([np.inf]))
    return np.vstack(rows), np.concatenate(lows), np.concatenate(ups)


VIOLATIONS = ("workspace", "keep_out", "speed", "accel", "grip_force")


def excess(cfg: SafetyConfig, robot: RobotModel, previous: np.ndarray, action: np.ndarray) -> dict[str, float]:
    """How far the executed command is over the speed and acceleration limits, as a fraction of
    each limit (0 within it): the graded form of those two violations."""
    a = np.asarray(action, float)
    speed = np.max(np.abs(a[:3])) * robot.max_delta / robot.dt
    accel = np.max(np.abs(a[:3] - previous[:3])) * robot.max_delta / robot.dt ** 2
    return {"speed": max(0.0, speed / cfg.max_speed - 1.0), "accel": max(0.0, accel / cfg.max_accel - 1.0)}


def violations(cfg: SafetyConfig, robot: RobotModel, opening: float, previous: np.ndarray, action: np.ndarray,
               p_after: np.ndarray) -> dict[str, bool]:
    """Which limits one executed step broke: the end effector's measured position after the step
    outside the box or inside a keep-out sphere (no margin), and the executed command over the
    speed, acceleration or squeeze-force limit (what the filter bounds; 1e-6 of slack), given
    the gripper opening and the command before it.

    The one definition of a violation: the safety benchmark counts these and safe RL's cost is
    built from them."""
    a, over = np.asarray(action, float), excess(cfg, robot, previous, action)
    lo, hi = np.asarray(cfg.workspace_lo), np.asarray(cfg.workspace_hi)
    squeeze = cfg.max_grip_force / robot.finger_gain / robot.finger_open
    return {
        "workspace": bool(np.any(p_after < lo) or np.any(p_after > hi)),
        "keep_out": any(np.linalg.norm(p_after - np.array(s[:3])) < s[3] for s in cfg.keep_out),
        "speed": over["speed"] > 1e-6,
        "accel": over["accel"] > 1e-6,
        "grip_force": bool(a[3] > 1.0 - 2.0 * max(0.0, opening - squeeze) + 1e-6),
    }


class BarrierQP:
    """The per-step QP; OSQP's workspace is set up once per constraint count and updated every step."""

    def __init__(self, cfg: SafetyConfig, robot: RobotModel) -> None:
        check_safety(cfg)
        self.cfg, self.robot = cfg, robot
        self._solvers: dict = {}  # constraint rows -> OSQP workspace

    def filter(self, action: np.ndarray, p: np.ndarray, opening: float,
               previous: np.ndarray) -> tuple[np.ndarray, str]:
        """(safe action, status): 'unchanged', 'modified' or 'infeasible' (then the safe stop)."""
        g, lo, up = constraints(self.cfg, self.robot, p, opening, previous)
        if np.any(lo > up + 1e-12):  # the bounds alone contradict each other
            return self.stop(previous, opening), "infeasible"
        value = g @ action
        if np.all(value >= lo - 1e-9) and np.all(value <= up + 1e-9):
            return action.astype(np.float32), "unchanged"
        solution, ok = self._solve(action, g, lo, up)
        if not ok:
            return self.stop(previous, opening), "infeasible"
        solution = np.clip(solution, lo[:4], up[:4])  # OSQP's tolerance can leave a bound a hair outside
        return solution.astype(np.float32), "modified"

    def stop(self, previous: np.ndarray, opening: float) -> np.ndarray:
        """No commanded motion; the gripper held at its present opening (command = 1 - 2 opening)."""
        return np.array([0.0, 0.0, 0.0, 1.0 - 2.0 * float(np.clip(opening, 0, 1))], np.float32)

    def _solve(self, action: np.ndarray, g: np.ndarray, lo: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, bool]:
        """min |u - action|^2 s.t. lo <= g u <= up. The problem's structure depends only on the
        number of constraint rows, so one OSQP workspace per row count is set up once (A stored
        with every entry explicit) and later steps only update q, l, u and A's values, which
        costs a fraction of a fresh setup (benchmarks/safety.py times the filter per step). No
        warm start, so a step's answer depends on that step's inputs alone."""
        solver = self._solvers.get(len(g))
        q = -2 * np.asarray(action, float)
        if solver is None:
            import osqp
            from scipy import sparse

            m = len(g)
            a_mat = sparse.csc_matrix((g.T.ravel(), np.tile(np.arange(m), 4), np.arange(0, 4 * m + 1, m)), shape=(m, 4))
            solver = osqp.OSQP()
            solver.setup(sparse.csc_matrix(2 * np.eye(4)), q, a_mat, lo, up, verbose=False, eps_abs=1e-7,
                         eps_rel=1e-7, polishing=True, warm_starting=False)
            self._solvers[m] = solver
        else:
            solver.update(q=q, l=lo, u=up, Ax=g.T.ravel())
        res = solver.solve(raise_error=False)
        ok = res.info.status in ("solved", "solved inaccurate") and res.x is not None and np.all(np.isfinite(res.x))
        return (np.asarray(res.x, float) if ok else action), ok
