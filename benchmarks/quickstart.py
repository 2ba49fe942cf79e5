"""Time and score `vlaforge quickstart` end to end from scratch: stage seconds and success per split.

    python benchmarks/quickstart.py [--key=value overrides for the quickstart config]

Nothing is reused: the output directory is emptied first, so every stage time and figure comes
from this one invocation (the README's headline).
"""

from __future__ import annotations

import shutil
import sys

from common import record_stage, write

from vlaforge.cli import parse
from vlaforge.quickstart import quickstart

if __name__ == "__main__":
    cfg = parse("quickstart", ["--output_dir=runs/bench_quickstart", *sys.argv[1:]])
    shutil.rmtree(cfg.output_dir, ignore_errors=True)
    s = quickstart(cfg, show_progress=False)
    assert not s["reused_stages"], "the output directory was emptied; nothing may be reused"
    for name, seconds in s["stage_seconds"].items():
        record_stage(name, seconds)
    rows = [{"stage": k, "seconds": round(v, 1)} for k, v in s["stage_seconds"].items()]
    rows.append({"stage": "total", "seconds": round(s["total_seconds"], 1)})
    for split, rate in s["success_rate"].items():
        lo, hi = s["ci95"][split]
        rows.append({"stage": f"success {split}", "seconds": f"{rate:.1%} [{lo:.1%}, {hi:.1%}]"})
    for split, per in s["per_task"].items():
        rows.append({"stage": f"per-task {split}", "seconds": ", ".join(f"{t} {r:.0%}" for t, r in per.items())})
    figures = {"total_seconds": s["total_seconds"], "success_rate": s["success_rate"], "ci95": s["ci95"],
               "per_task": s["per_task"], "stage_seconds": s["stage_seconds"],
               "episodes_per_task_collected": cfg.collect.episodes_per_task, "train_steps": cfg.train.steps,
               "batch_size": cfg.train.batch_size, "precision": cfg.train.precision,
               "eval_episodes_per_task": cfg.eval.episodes, "collect_workers": cfg.collect.workers}
    write("quickstart", figures, rows, "vlaforge quickstart (collect -> train -> eval), from scratch",
          seeds={"collect_scenes_from": cfg.collect.seed, "train": cfg.train.seed, "eval_scenes_from": cfg.eval.seed})
