"""collect -> train -> eval on the built-in suite, in one resumable command.

Re-running picks up where a previous run stopped: finished episodes are kept, a finished
policy is reused, an interrupted training resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from vlaforge.config import save_yaml
from vlaforge.data.collect import collect
from vlaforge.eval.config import QuickstartConfig
from vlaforge.eval.rollout import evaluate
from vlaforge.train.checkpoint import latest_checkpoint
from vlaforge.train.trainer import train


def quickstart(cfg: QuickstartConfig, show_progress: bool = True) -> dict:
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    data_dir, run_dir = root / "data", root / "train"
    collect_cfg = dataclasses.replace(cfg.collect, output=str(data_dir), resume=(data_dir / "meta").exists())
    train_cfg = dataclasses.replace(
        cfg.train, dataset=str(data_dir), output_dir=str(run_dir),
        resume=latest_checkpoint(run_dir / "checkpoints") is not None,
    )
    resolved = dataclasses.replace(cfg, collect=collect_cfg, train=train_cfg)
    save_yaml(resolved, root / "config.yaml")
    times: dict[str, float] = {}
    policy_dir = run_dir / "policy"
    # A finished policy is reused; the stage times of the run that produced it are kept.
    reused = ["collect", "train"] if policy_dir.exists() and (root / "summary.json").is_file() else []
    if reused:
        before = json.loads((root / "summary.json").read_text())["stage_seconds"]
        times = {k: before[k] for k in reused}
    else:
        t = time.perf_counter()
        collect(collect_cfg, show_progress)
        times["collect"] = time.perf_counter() - t
        t = time.perf_counter()
        if not policy_dir.exists():
            policy_dir = train(train_cfg, show_progress)
        times["train"] = time.perf_counter() - t

    results = {}
    for split in cfg.splits:
        t = time.perf_counter()
        eval_cfg = dataclasses.replace(cfg.eval, policy=str(policy_dir), split=split, output_dir=str(root / "eval" / split))
        results[split] = evaluate(eval_cfg, show_progress)
        times[f"eval_{split}"] = time.perf_counter() - t
    summary = {
        "stage_seconds": times,
        "reused_stages": reused,
        "total_seconds": sum(times.values()),
        "success_rate": {s: r["success_rate"] for s, r in results.items()},
        "ci95": {s: r["ci95"] for s, r in results.items()},
        "per_task": {s: {k: v["success_rate"] for k, v in r["per_task"].items()} for s, r in results.items()},
        "policy": str(policy_dir),
        "reports": {s: str(root / "eval" / s / "report.html") for s in results},
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
