"""Self-supervised pretraining of the vision encoder in the low-data regime (tabletop suite).

An unlabelled pool of frames (expert episodes in the plain and in the visually randomized
simulator, actions discarded) pretrains the encoder with each method; behaviour cloning then
starts from it on 5, 10 and 25 demonstrations per task, against the same cloning from scratch,
once per training seed (``--seeds=N``: 0 .. N-1, default 3; the encoders are pretrained once, with seed
0). Each encoder is compared with scratch paired by training seed and evaluation scene: the t
interval over the per-seed differences, the pooled paired bootstrap and McNemar's exact test.
The grid runs through ``vlaforge ablate`` (cells share datasets, re-running resumes).

    python benchmarks/ssl_pretraining.py          # the results: 45 cells, about 3 h on 2 cores
    python benchmarks/ssl_pretraining.py --methods=[mae,moco] --pretrain_steps=3000 --demos=[5,25] --seeds=2

Writes benchmarks/results/ssl.{json,md} and ssl.html (the grid's report). The script is not
called ssl.py: in this directory that name would shadow the standard library's ssl module for
every benchmark that imports torch before ``common``.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from common import RESULTS, cache_root, paired_text, seeded_text, stage, write

from vlaforge.config import apply_overrides
from vlaforge.data.collect import collect
from vlaforge.data.config import CollectConfig
from vlaforge.envs.config import DomainConfig, EnvConfig
from vlaforge.eval.ablate import ablate
from vlaforge.eval.config import AblateConfig
from vlaforge.eval.stats import paired, seed_summary
from vlaforge.seeds import EVAL_SEEDS
from vlaforge.train.config import PretrainConfig
from vlaforge.train.pretrain import pretrain

POOL_SEED = 50_000  # unlabelled pool scenes, apart from the demonstrations' seeds


@dataclass
class Settings:
    tasks: list[str] = field(default_factory=lambda: ["reach", "push", "press_button", "open_drawer"])
    demos: list[int] = field(default_factory=lambda: [5, 10, 25])
    methods: list[str] = field(default_factory=lambda: ["mae", "simclr", "moco", "predictive"])
    pool_per_task: int = 20  # unlabelled episodes per task and domain (plain, dr-visual)
    pretrain_steps: int = 1500
    steps: int = 1000
    episodes: int = 25
    seeds: int = 3  # every cell is trained with seeds 0 .. seeds-1
    output_dir: str = "runs/bench_ssl"


def main(argv: list[str]) -> None:
    s = apply_overrides(Settings(), [a[2:] for a in argv])
    if s.seeds < 1:
        raise SystemExit(f"--seeds must be >= 1 (training seeds 0 .. N-1), got {s.seeds}")
    if not s.demos:
        raise SystemExit("--demos needs at least one count of demonstrations per task, e.g. --demos=[5,10,25]")
    seeds = list(range(s.seeds))
    root = cache_root(s.output_dir)
    pools = []
    for preset in ("", "dr-visual"):
        out = root / "pool" / (preset or "plain")
        done = (out / "done").is_file()
        with stage(f"collect pool {preset or 'plain'}", reused=done):
            if not done:
                collect(CollectConfig(env=EnvConfig(tasks=s.tasks), episodes_per_task=s.pool_per_task, seed=POOL_SEED,
                                      output=str(out), resume=(out / "meta").exists(), domain=DomainConfig(preset=preset)))
                (out / "done").write_text("")
        pools.append(str(out))
    encoders = {}
    for method in s.methods:
        run = root / "pretrain" / method
        done = (run / "pretrain.json").is_file()
        with stage(f"pretrain {method}", reused=done):
            if not done:
                pretrain(PretrainConfig(datasets=pools, method=method, output_dir=str(run), steps=s.pretrain_steps,
                                        resume=(run / "checkpoints").exists()))
        encoders[method] = str(run)
    grid = {
        "base": {"collect": {"env": {"tasks": s.tasks}, "episodes_per_task": s.demos[0]}, "splits": ["train"],
                 "train": {"steps": s.steps, "batch_size": 32, "tracking": "none", "ckpt_every": 500},
                 "eval": {"episodes": s.episodes, "videos_per_task": 1}},
    }
    # An ablate axis takes two values or more; a single one stays in the base.
    axes = {"demos": ("collect.episodes_per_task", s.demos), "encoder": ("train.init_encoder", ["", *encoders.values()]),
            "seed": ("train.seed", seeds)}
    grid["axes"] = {axis: {key: values} for axis, (key, values) in axes.items() if len(values) > 1}
    (root / "grid.in.yaml").write_text(yaml.safe_dump(grid))
    with stage("ablate (collect, train and evaluate every cell; finished cells are reused)"):
        summary = ablate(AblateConfig(grid=str(root / "grid.in.yaml"), output_dir=str(root)))
    name = {"": "scratch"} | {path: method for method, path in encoders.items()}
    by_seed: dict[tuple[int, str], dict[int, dict]] = {}
    for c in summary["cells"]:
        key = (c["values"].get("demos", s.demos[0]), name[c["values"]["encoder"]])
        by_seed.setdefault(key, {})[c["values"].get("seed", 0)] = json.loads(Path(c["results"]).read_text())
    runs = {key: [results[seed] for seed in seeds] for key, results in by_seed.items()}  # paired by position
    rows, cells, gains = [], {}, {}
    for demos in s.demos:
        for enc in ["scratch", *s.methods]:
            c = cells[f"{enc}@{demos}"] = seed_summary(runs[demos, enc])
            row = {"demos_per_task": demos, "encoder": enc, "success": seeded_text(c),
                   "per seed": " / ".join(f"{100 * x:.0f}" for x in c["per_seed"]), "gain_vs_scratch": ""}
            if enc != "scratch":
                gains[f"{enc}@{demos}"] = paired(runs[demos, enc], runs[demos, "scratch"])
                row["gain_vs_scratch"] = paired_text(gains[f"{enc}@{demos}"])
            rows.append(row)
    pre = {m: json.loads((Path(p) / "pretrain.json").read_text()) for m, p in encoders.items()}
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(root / "report.html", RESULTS / "ssl.html")
    write("ssl", {"cells": cells, "gains": gains, "pretraining": pre, "settings": vars(s)}, rows,
          f"Self-supervised encoder pretraining, then behaviour cloning (tabletop, train split, {s.seeds} "
          "training seeds)",
          seeds={"pool_scenes_from": POOL_SEED, "pretrain": 0, "collect_scenes_from": 0, "train": seeds,
                 "eval_scenes_from": EVAL_SEEDS})


if __name__ == "__main__":
    main(sys.argv[1:])
