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
from vlaforge.eval.stats import seed_summary
from vlaforge.train.checkpoint import latest_checkpoint
from vlaforge.train.trainer import train


def quickstart(cfg: QuickstartConfig, show_progress: bool = True) -> dict:
    """Collect, train (once, or once per ``cfg.seeds``) and evaluate every split; writes and
    returns summary.json's content."""
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data"
    collect_cfg = dataclasses.replace(cfg.collect, output=str(data_dir), resume=(data_dir / "meta").exists())
    seeds = cfg.seeds or [cfg.train.seed]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {cfg.seeds}")
    runs = {s: (root / "train" / f"seed{s}", root / "eval" / f"seed{s}") if cfg.seeds else (root / "train", root / "eval")
            for s in seeds}
    train_cfgs = {s: dataclasses.replace(cfg.train, dataset=str(data_dir), output_dir=str(run), seed=s,
                                         resume=latest_checkpoint(run / "checkpoints") is not None)
                  for s, (run, _) in runs.items()}
    resolved = dataclasses.replace(cfg, collect=collect_cfg, train=train_cfgs[seeds[0]])
    save_yaml(resolved, root / "config.yaml")
    times: dict[str, float] = {}
    # Finished policies are reused; the stage times of the run that produced them are kept.
    reused = ["collect", "train"] if all((run / "policy").exists() for run, _ in runs.values()) and \
        (root / "summary.json").is_file() else []
    if reused:
        before = json.loads((root / "summary.json").read_text())["stage_seconds"]
        times = {k: before[k] for k in reused}
    else:
        t = time.perf_counter()
        collect(collect_cfg, show_progress)
        times["collect"] = time.perf_counter() - t
        t = time.perf_counter()
        for s, (run, _) in runs.items():
            if not (run / "policy").exists():
                train(train_cfgs[s], show_progress)
        times["train"] = time.perf_counter() - t

    results: dict[str, list[dict]] = {split: [] for split in cfg.splits}
    for split in cfg.splits:
        t = time.perf_counter()
        for run, out in runs.values():
            eval_cfg = dataclasses.replace(cfg.eval, policy=str(run / "policy"), split=split, output_dir=str(out / split))
            results[split].append(evaluate(eval_cfg, show_progress))
        times[f"eval_{split}"] = time.perf_counter() - t
    first = {split: r[0] for split, r in results.items()}
    summary = {
        "stage_seconds": times,
        "reused_stages": reused,
        "total_seconds": sum(times.values()),
        "seeds": seeds,
        "success_rate": {s: seed_summary(r)["mean"] for s, r in results.items()},
        "ci95": {s: r["ci95"] for s, r in first.items()} if not cfg.seeds else
                {s: seed_summary(r)["pooled_ci95"] for s, r in results.items()},
        "per_task": {s: {k: v["success_rate"] for k, v in r["per_task"].items()} for s, r in first.items()},
        "policy": str(runs[seeds[0]][0] / "policy"),
        "reports": {s: str(runs[seeds[0]][1] / s / "report.html") for s in cfg.splits},
    }
    if cfg.seeds:
        summary["over_seeds"] = {s: seed_summary(r) for s, r in results.items()}
        summary["policies"] = [str(run / "policy") for run, _ in runs.values()]
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
