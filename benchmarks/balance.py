"""Task-balanced sampling on an imbalanced collection (tabletop suite).

Two tasks get ``many`` demonstrations, two get ``few`` (written through ``collect --scenes``);
a policy is trained with uniform frame sampling and with ``--balance=task`` at the same steps
and evaluated on every task.

    python benchmarks/balance.py                  # the CPU run of the results (~8 min, 2 cores)

Writes benchmarks/results/balance.{json,md}.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from common import cache_root, stage, train_and_eval, write

from vlaforge.config import apply_overrides
from vlaforge.data.collect import collect, scene_seed
from vlaforge.data.config import CollectConfig
from vlaforge.envs.config import EnvConfig
from vlaforge.eval.stats import difference_interval
from vlaforge.seeds import EVAL_SEEDS


@dataclass
class Settings:
    tasks: list[str] = field(default_factory=lambda: ["reach", "open_drawer", "press_button", "push"])
    many: int = 20  # demonstrations of each of the first two tasks
    few: int = 3  # of each of the others
    steps: int = 1000
    episodes: int = 25
    output_dir: str = "runs/bench_balance"


def main(argv: list[str]) -> None:
    s = apply_overrides(Settings(), [a[2:] for a in argv])
    root = cache_root(s.output_dir)
    data = root / "data"
    done = (data / "done").is_file()
    with stage("collect", reused=done):
        if not done:
            counts = [s.many, s.many] + [s.few] * (len(s.tasks) - 2)
            scenes = [{"task": t, "seed": scene_seed(0, i, j)}
                      for i, (t, n) in enumerate(zip(s.tasks, counts)) for j in range(n)]
            (root / "scenes.json").write_text(json.dumps({"scenes": scenes}))
            collect(CollectConfig(env=EnvConfig(tasks=s.tasks), scenes=str(root / "scenes.json"), output=str(data),
                                  resume=(data / "meta").exists()))
            (data / "done").write_text("")
    results = {}
    for balance in ("none", "task"):
        results[balance] = train_and_eval(data, root / balance, s.steps, s.episodes, balance=balance)
    rows = []
    for task in s.tasks:
        a, b = results["none"]["per_task"][task], results["task"]["per_task"][task]
        lo, hi = difference_interval(b["successes"], b["episodes"], a["successes"], a["episodes"])
        rows.append({"task": task, "demos": s.many if s.tasks.index(task) < 2 else s.few, "uniform": a["success_rate"],
                     "balanced": b["success_rate"], "difference": f"{b['success_rate'] - a['success_rate']:+.2f} [{lo:+.2f}, {hi:+.2f}]"})
    a, b = results["none"], results["task"]
    lo, hi = difference_interval(b["successes"], b["episodes"], a["successes"], a["episodes"])
    rows.append({"task": "all", "demos": 2 * s.many + (len(s.tasks) - 2) * s.few, "uniform": a["success_rate"],
                 "balanced": b["success_rate"], "difference": f"{b['success_rate'] - a['success_rate']:+.2f} [{lo:+.2f}, {hi:+.2f}]"})
    write("balance", {"settings": vars(s), "ci95": {k: r["ci95"] for k, r in results.items()}}, rows,
          f"Uniform vs task-balanced sampling, {s.many} demos of two tasks and {s.few} of the others",
          seeds={"collect_scenes": "scene_seed(0, task, i)", "train": 0, "eval_scenes_from": EVAL_SEEDS})


if __name__ == "__main__":
    main(sys.argv[1:])
