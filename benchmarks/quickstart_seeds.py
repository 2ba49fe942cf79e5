"""The quickstart recipe over several training seeds on one collected dataset: how much of a
single run's success is the draw of the initial weights and batches.

    python benchmarks/quickstart_seeds.py [--seeds=3] [--key=value overrides for the quickstart config]

Collects the quickstart's data once, then trains one policy per seed (``train.seed``) and
evaluates each on the same scenes of every split. Writes
benchmarks/results/quickstart_seeds.{json,md}.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys

from common import arg, cache_root, collect_once, stage, write

from vlaforge.cli import parse
from vlaforge.eval.rollout import evaluate
from vlaforge.train.checkpoint import latest_checkpoint
from vlaforge.train.trainer import train


def main(argv: list[str]) -> None:
    n = int(arg("seeds", "3", argv))
    if n < 2:
        raise SystemExit(f"--seeds must be >= 2 to measure a spread, got {n}")
    cfg = parse("quickstart", [a for a in argv if not a.startswith("--seeds=")])
    root = cache_root("runs/bench_quickstart_seeds")
    data = collect_once(cfg.collect, root / "data")
    runs = []
    for seed in range(n):
        run = root / f"seed{seed}"
        done = (run / "policy").exists()
        with stage(f"train seed {seed}", reused=done):
            if not done:
                train(dataclasses.replace(cfg.train, dataset=str(data), output_dir=str(run), seed=seed,
                                          resume=latest_checkpoint(run / "checkpoints") is not None), False)
        rates, cis = {}, {}
        for split in cfg.splits:
            with stage(f"eval seed {seed} {split}"):
                r = evaluate(dataclasses.replace(cfg.eval, policy=str(run / "policy"), split=split,
                                                 output_dir=str(run / "eval" / split)), False)
            rates[split], cis[split] = r["success_rate"], r["ci95"]
        runs.append({"seed": seed, "success_rate": rates, "ci95": cis})
    mean = {s: statistics.fmean(r["success_rate"][s] for r in runs) for s in cfg.splits}
    sd = {s: statistics.stdev(r["success_rate"][s] for r in runs) for s in cfg.splits}
    rows = [{"seed": r["seed"], **{s: f"{100 * r['success_rate'][s]:.1f}%" for s in cfg.splits}} for r in runs]
    rows.append({"seed": "mean (sd)", **{s: f"{100 * mean[s]:.1f}% ({100 * sd[s]:.1f})" for s in cfg.splits}})
    figures = {"runs": runs, "mean": mean, "sd": sd, "train_steps": cfg.train.steps,
               "episodes_per_task_collected": cfg.collect.episodes_per_task, "eval_episodes_per_task": cfg.eval.episodes}
    write("quickstart_seeds", figures, rows, f"The quickstart recipe over {n} training seeds (same data, same scenes)",
          seeds={"collect_scenes_from": cfg.collect.seed, "train": list(range(n)), "eval_scenes_from": cfg.eval.seed})


if __name__ == "__main__":
    main(sys.argv[1:])
