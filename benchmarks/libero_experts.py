"""Success of vlaforge's scripted LIBERO experts on the published protocol's fixed initial states.

    python benchmarks/libero_experts.py [--suites=[libero_spatial,libero_object,libero_goal,libero_10]]
                                        [--trials=50] [--workers=0]

Every task of the chosen suites is run from its first ``--trials`` fixed initial states (reset
seeds EVAL_SEEDS + i, the trials a policy is evaluated on), with the suite's step limit; one
worker process per core (``--workers=0``), one env per task. Tasks whose BDDL goal has no
scripted expert yet are listed with the predicate, not dropped: a suite's success counts them
as failures and its coverage says how many there are. Also reports env steps/s on one core
(physics + two 64 px cameras). Finished tasks are kept in the cache directory, so an interrupted
run continues. Writes benchmarks/results/libero_experts.{json,md}.
"""

from __future__ import annotations

import json
import os
import time

from common import arg, cache_root, stage, write

import vlaforge  # noqa: F401  (sets MUJOCO_GL)
from vlaforge.envs.config import EnvConfig
from vlaforge.envs.libero.tasks import TASKS
from vlaforge.eval.stats import wilson_interval
from vlaforge.files import atomic_write_json
from vlaforge.pool import map_in_workers
from vlaforge.seeds import EVAL_SEEDS


def run_task(job: tuple[str, str, int, str]) -> dict:
    """Every trial of one task: success and steps per trial, steps/s, or why there is no expert."""
    from vlaforge.envs import get_suite

    suite_name, task, trials, out = job
    suite = get_suite(suite_name.replace("_", "-"))
    env = suite.make_env(task, "train", suite.resolve(EnvConfig(suite=suite.name)))
    try:
        try:
            expert = suite.make_expert(env)
        except ValueError as e:
            result = {"task": task, "expert": False, "reason": str(e), "trials": []}
        else:
            rows, t, steps = [], time.perf_counter(), 0
            for i in range(trials):
                env.reset(seed=EVAL_SEEDS + i)
                expert.reset()
                done = False
                while not done:
                    _, _, terminated, truncated, info = env.step(expert.act())
                    steps += 1
                    done = terminated or truncated
                rows.append({"trial": i, "success": bool(info["success"]), "steps": env.steps})
            result = {"task": task, "expert": True, "trials": rows, "steps_per_s": steps / (time.perf_counter() - t)}
    finally:
        env.close()
    atomic_write_json(out, result)
    return result


def _init() -> None:
    import torch

    torch.set_num_threads(1)


def main() -> None:
    suites = arg("suites", "[libero_spatial,libero_object,libero_goal,libero_10]").strip("[]").split(",")
    trials, workers = int(arg("trials", "50")), int(arg("workers", "0"))
    for s in suites:
        if s not in TASKS:
            raise SystemExit(f"unknown LIBERO suite {s!r}; known: {', '.join(TASKS)}")
    if not 1 <= trials <= 50:
        raise SystemExit(f"--trials must be in [1, 50] (LIBERO ships 50 initial states per task), got {trials}")
    root = cache_root("runs/bench_libero_experts")
    jobs = [(s, t, trials, str(root / f"{t}.json")) for s in suites for t in TASKS[s] if not (root / f"{t}.json").is_file()]
    with stage("rollouts", reused=not jobs):
        list(map_in_workers(run_task, jobs, workers or os.cpu_count() or 1, _init, ordered=False))
    figures, rows = {"trials_per_task": trials, "suites": {}}, []
    for s in suites:
        results = [json.loads((root / f"{t}.json").read_text()) for t in TASKS[s]]
        wins = sum(r["success"] for res in results for r in res["trials"])
        n = trials * len(results)
        scripted = [res for res in results if res["expert"]]
        figures["suites"][s] = {
            "success": wins / n, "ci95": list(wilson_interval(wins, n)), "tasks": len(results),
            "tasks_with_expert": len(scripted),
            "success_where_scripted": wins / max(trials * len(scripted), 1),
            "per_task": {res["task"]: (sum(r["success"] for r in res["trials"]) / trials if res["expert"] else None)
                         for res in results},
            "no_expert": {res["task"]: res["reason"] for res in results if not res["expert"]},
            "mean_steps_success": [sum(r["steps"] for r in res["trials"] if r["success"])
                                   / max(sum(r["success"] for r in res["trials"]), 1) for res in scripted],
            "steps_per_s_one_core": [res["steps_per_s"] for res in scripted]}
        for res in results:
            ok = sum(r["success"] for r in res["trials"])
            rows.append({"suite": s, "task": res["task"],
                         "success": f"{ok}/{trials}" if res["expert"] else "no expert",
                         "note": "" if res["expert"] else res["reason"].split(" (")[0]})
    write("libero_experts", figures, rows, f"Scripted LIBERO experts on the first {trials} fixed initial states per task",
          seeds={"scenes": f"fixed initial states 0..{trials - 1} (reset seeds {EVAL_SEEDS}..{EVAL_SEEDS + trials - 1})"})


if __name__ == "__main__":
    main()
