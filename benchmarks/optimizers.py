"""Every registered optimizer trains the default policy on the same tabletop data: training loss
against steps and against wall time, one table and one plot.

    python benchmarks/optimizers.py [--steps=400]

Writes benchmarks/results/optimizers.{json,md,png}.
"""

from __future__ import annotations

import json
import shutil
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import RESULTS, cache_root, stage, write  # noqa: E402

from vlaforge.data.collect import collect  # noqa: E402
from vlaforge.data.config import CollectConfig  # noqa: E402
from vlaforge.envs.config import EnvConfig  # noqa: E402
from vlaforge.registry import OPTIMIZERS  # noqa: E402
from vlaforge.train.config import OptimConfig, TrainConfig  # noqa: E402
from vlaforge.train.trainer import train  # noqa: E402

# Peak learning rates: AdamW's default, the rules of thumb of each method's paper for the others.
LR = {"adamw": 1e-3, "radam": 1e-3, "lion": 1e-4, "sophia": 1e-3, "kfac": 0.05, "lbfgs": 0.5}


def main() -> None:
    steps = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--steps=")), 400)
    root = cache_root("runs/bench_optimizers")
    data = root / "data"
    with stage("collect", reused=(data / "meta").exists()):
        collect(CollectConfig(env=EnvConfig(tasks=["reach", "push", "pick_place"]), episodes_per_task=30,
                              output=str(data), resume=(data / "meta").exists()), show_progress=False)
    curves, rows = {}, []
    for name in OPTIMIZERS.names():
        n = steps if name != "lbfgs" else steps // 8  # each L-BFGS step runs up to 20 evaluations
        run = root / name
        done = (run / "policy").exists()
        with stage(f"train {name}", reused=done):
            if not done:
                shutil.rmtree(run, ignore_errors=True)
                train(TrainConfig(dataset=str(data), output_dir=str(run), steps=n, batch_size=32, log_every=10,
                                  ckpt_every=n, tracking="none", threads=2,
                                  optim=OptimConfig(name=name, lr=LR[name], warmup_steps=min(50, n // 10))), False)
        log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        wall, elapsed = [], 0.0
        for prev, cur in zip([{"step": 0}] + log, log):
            elapsed += (cur["step"] - prev["step"]) * 32 / cur["samples_per_s"]
            wall.append(elapsed)
        curves[name] = {"step": [m["step"] for m in log], "loss": [m["loss"] for m in log], "seconds": wall}
        final = sum(m["loss"] for m in log[-3:]) / len(log[-3:])
        rows.append({"optimizer": name, "lr": LR[name], "steps": n, "final loss (mean of last 3 logs)": round(final, 4),
                     "train seconds": round(wall[-1], 1), "ms/step": round(1000 * wall[-1] / n, 1)})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in curves.items():
        ax1.plot(c["step"], c["loss"], label=name)
        ax2.plot(c["seconds"], c["loss"], label=name)
    for ax, x in ((ax1, "optimizer steps"), (ax2, "training seconds (2 CPU cores)")):
        ax.set_xlabel(x)
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    ax1.legend()
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / "optimizers.png", dpi=110)
    write("optimizers", {"curves": curves, "batch_size": 32, "data": "tabletop reach/push/pick_place, 30 demos each"},
          rows, "Optimizers on the same tabletop data (default policy, batch 32, bf16)",
          seeds={"collect_scenes_from": 0, "train": 0})


if __name__ == "__main__":
    main()
