"""Does keeping OSQP's workspace pay? The barrier filter's QP timed per step with the workspace set
up once per constraint count and updated (what vlaforge.safety.cbf.BarrierQP does) against a fresh
set-up on every step, on the same sequence of violating actions.

    python benchmarks/cbf_qp.py [--steps=2000] [--seed=0]

States are drawn across the tabletop workspace (some near its walls), previous commands at random
and actions pushed beyond the speed limit so that every step goes to the QP. Both variants must
return the same actions (no warm start, so a step's answer depends on its inputs alone); the
largest difference is reported. Writes benchmarks/results/cbf_qp.{json,md}. Single-threaded;
run it on an idle machine.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
from common import arg, stage, write

from vlaforge.envs.tabletop.env import ROBOT
from vlaforge.safety.cbf import BarrierQP
from vlaforge.safety.config import SafetyConfig


def cases(n: int, seed: int) -> list[tuple]:
    """(action, position, opening, previous) with the action outside the speed limit."""
    rng = np.random.default_rng(seed)
    cfg = SafetyConfig()
    lo, hi = np.asarray(cfg.workspace_lo), np.asarray(cfg.workspace_hi)
    out = []
    for _ in range(n):
        p = rng.uniform(lo + 0.01, hi - 0.01)
        previous = rng.uniform(-0.5, 0.5, 4)
        action = np.concatenate([rng.choice([-1.0, 1.0], 3) * rng.uniform(0.8, 1.0, 3), rng.uniform(-1, 1, 1)])
        out.append((action.astype(np.float32), p, float(rng.uniform(0, 1)), previous.astype(np.float32)))
    return out


def timed(qp: BarrierQP, steps: list[tuple], fresh: bool) -> tuple[list[float], list[np.ndarray], dict]:
    times, actions, status = [], [], {}
    for action, p, opening, previous in steps:
        if fresh:
            qp._solvers.clear()
        t = time.perf_counter()
        safe, s = qp.filter(action, p, opening, previous)
        times.append(1e3 * (time.perf_counter() - t))
        actions.append(safe)
        status[s] = status.get(s, 0) + 1
    return times, actions, status


def main(argv: list[str]) -> None:
    n, seed = int(arg("steps", "2000", argv)), int(arg("seed", "0", argv))
    steps = cases(n, seed)
    timed(BarrierQP(SafetyConfig(), ROBOT), steps[:50], fresh=False)  # imports and first set-up, untimed
    rows, outs = [], {}
    for name, fresh in (("workspace kept, updated per step", False), ("fresh set-up every step", True)):
        with stage(name):
            ms, actions, status = timed(BarrierQP(SafetyConfig(), ROBOT), steps, fresh)
        outs[name] = np.stack(actions)
        rows.append({"variant": name, "p50 ms": statistics.median(ms), "p99 ms": float(np.percentile(ms, 99)),
                     "mean ms": statistics.fmean(ms), "steps": n, "status": status})
    diff = float(np.abs(outs[rows[0]["variant"]] - outs[rows[1]["variant"]]).max())
    figures = {"speedup_p50": rows[1]["p50 ms"] / rows[0]["p50 ms"], "max_action_difference": diff,
               "rows": rows}
    for r in rows:
        r["status"] = ", ".join(f"{k} {v}" for k, v in sorted(r["status"].items()))
    write("cbf_qp", figures, rows, "Barrier-filter QP per step: OSQP workspace kept vs set up every step",
          seeds={"cases": seed})


if __name__ == "__main__":
    main(sys.argv[1:])
