"""Success and length of Meta-World's scripted policies through vlaforge's adapter, per task.

    python benchmarks/metaworld_experts.py [--seeds=10] [--max_steps=200]

Positions are redrawn per seed as the adapter does for collection and evaluation; one worker
process per core. Also reports adapter steps/s (physics + 64 px render) on one core.
"""

from __future__ import annotations

import argparse
import os
import time

from common import stage, write

import vlaforge  # noqa: F401  (sets MUJOCO_GL)
from vlaforge.envs.config import EnvConfig
from vlaforge.envs.metaworld import DIFFICULTY, TASKS
from vlaforge.pool import map_in_workers

_ENVS: dict = {}


def run(job: tuple[str, int, int]) -> tuple[str, bool, int, float]:
    from vlaforge.envs import get_suite

    task, seed, max_steps = job
    suite = get_suite("metaworld-mt50")
    if task not in _ENVS:
        _ENVS[task] = suite.make_env(task, "train", EnvConfig(suite=suite.name, max_steps=max_steps))
    env = _ENVS[task]
    expert = suite.make_expert(env)
    env.reset(seed=seed)
    t, steps, done = time.perf_counter(), 0, False
    while not done:
        _, _, terminated, truncated, info = env.step(expert.act())
        steps += 1
        done = terminated or truncated
    return task, bool(info["success"]), steps, steps / (time.perf_counter() - t)


def _init() -> None:
    import torch

    torch.set_num_threads(1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--max_steps", type=int, default=500)
    args = ap.parse_args()
    jobs = [(t, 1000 + s, args.max_steps) for t in TASKS for s in range(args.seeds)]
    with stage("rollouts"):
        results = list(map_in_workers(run, jobs, os.cpu_count() or 1, _init))
    group = {t: g for g, members in DIFFICULTY.items() for t in members}
    rows = []
    for task in TASKS:
        mine = [r for r in results if r[0] == task]
        ok = [r for r in mine if r[1]]
        rows.append({"task": task, "difficulty": group[task], "success": f"{len(ok)}/{len(mine)}",
                     "mean_steps_success": round(sum(r[2] for r in ok) / max(len(ok), 1), 1),
                     "steps_per_s": round(sum(r[3] for r in mine) / len(mine), 1)})
    total = sum(r[1] for r in results)
    figures = {"episodes": len(results), "successes": total, "success_rate": total / len(results),
               "max_steps": args.max_steps, "seeds_per_task": args.seeds,
               "mean_steps_per_s_one_core": sum(r[3] for r in results) / len(results)}
    write("metaworld_experts", figures, rows,
          f"Meta-World scripted policies through the adapter ({args.seeds} seeds/task, {args.max_steps} steps)",
          seeds={"scenes": f"1000..{999 + args.seeds} per task"})
