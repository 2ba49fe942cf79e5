"""The Meta-World multi-task protocol: one policy for all tasks of a suite, collected from the
package's scripted policies, evaluated per task, per difficulty group and on average, beside
published results.

    python benchmarks/metaworld.py                 # GPU configuration: MT50, 50 demos, 50 trials/task
    python benchmarks/metaworld.py --cpu           # reduced CPU configuration: MT10, 20 demos, 10 trials
    python benchmarks/metaworld.py --collect.env.suite=metaworld-mt10 --train.steps=20000  # any quickstart key

Writes benchmarks/results/metaworld_<suite>[_cpu].json and .md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from common import write
from vlaforge.cli import parse
from vlaforge.envs.metaworld import DIFFICULTY
from vlaforge.eval.stats import wilson_interval
from vlaforge.quickstart import quickstart

# Published MT50 averages (success %, and per difficulty where reported) and their protocols.
PUBLISHED = [
    ("Evo-1 (0.77B)", 80.6, None, "Evo-1 paper, MT50"),
    ("SmolVLA (0.45B)", 57.3, {"easy": 82.5, "medium": 41.8, "hard": 45.0, "very_hard": 60.0}, "SmolVLA paper, MT50"),
    ("pi0 (3.3B)", 50.5, None, "as reported in the SmolVLA paper"),
    ("TinyVLA-H", 31.6, None, "as reported in the SmolVLA paper"),
    ("Diffusion Policy", 10.5, None, "as reported in the SmolVLA paper"),
]


def main() -> None:
    args = sys.argv[1:]
    cpu = "--cpu" in args
    args = [a for a in args if a != "--cpu"]
    defaults = ["--collect.env.suite=metaworld-mt50", "--collect.episodes_per_task=50", "--eval.episodes=50",
                "--train.steps=30000", "--splits=[train]"]
    if cpu:
        defaults = ["--collect.env.suite=metaworld-mt10", "--collect.episodes_per_task=20", "--eval.episodes=10",
                    "--train.steps=3000", "--splits=[train]"]
    cfg = parse("quickstart", [*defaults, *args])
    name = "metaworld_" + cfg.collect.env.suite.split("-", 1)[1] + ("_cpu" if cpu else "")
    if cfg.output_dir == "runs/quickstart":
        cfg.output_dir = f"runs/bench_{name}"
    summary = quickstart(cfg, show_progress=False)
    results = json.loads((Path(cfg.output_dir) / "eval" / "train" / "results.json").read_text())
    per_task = results["per_task"]
    rows = []
    groups = {}
    for group, members in DIFFICULTY.items():
        tasks = [t for t in members if t in per_task]
        if not tasks:
            continue
        wins = sum(per_task[t]["successes"] for t in tasks)
        n = sum(per_task[t]["episodes"] for t in tasks)
        lo, hi = wilson_interval(wins, n)
        groups[group] = {"tasks": len(tasks), "success_rate": wins / n, "ci95": [lo, hi]}
        rows.append({"what": f"ours: {group} ({len(tasks)} tasks)", "success %": f"{100 * wins / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"})
    lo, hi = results["ci95"]
    task_mean = sum(v["success_rate"] for v in per_task.values()) / len(per_task)
    rows.insert(0, {"what": f"ours: average over {len(per_task)} tasks", "success %": f"{100 * task_mean:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"})
    for model, avg, by_group, source in PUBLISHED:
        detail = "" if by_group is None else " (" + ", ".join(f"{g} {v}" for g, v in by_group.items()) + ")"
        rows.append({"what": f"{model}, MT50, {source}", "success %": f"{avg}{detail}"})
    for task, v in sorted(per_task.items()):
        rows.append({"what": f"ours: {task}", "success %": f"{100 * v['success_rate']:.0f} ({v['successes']}/{v['episodes']})"})
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    figures = {
        "suite": cfg.collect.env.suite, "average_success": task_mean, "pooled_ci95": results["ci95"],
        "by_difficulty": groups, "per_task": {t: v["success_rate"] for t, v in per_task.items()},
        "protocol": {"demos_per_task": cfg.collect.episodes_per_task, "trials_per_task": cfg.eval.episodes,
                     "positions": "randomised per episode from the benchmark's ranges (seeded)",
                     "image": f"{cfg.collect.env.image_size}px corner2", "max_steps": 500,
                     "train_steps": cfg.train.steps, "batch_size": cfg.train.batch_size, "device": device,
                     "stage_seconds": summary["stage_seconds"]},
        "published_mt50": {m: {"average": a, "by_difficulty": g, "source": s} for m, a, g, s in PUBLISHED},
    }
    write(name, figures, rows, f"Meta-World {cfg.collect.env.suite}: multi-task success beside published MT50 results")


if __name__ == "__main__":
    main()
