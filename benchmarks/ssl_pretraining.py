"""Self-supervised pretraining of the vision encoder in the low-data regime (tabletop suite).

An unlabelled pool of frames (expert episodes in the plain and in the visually randomized
simulator, actions discarded) pretrains the encoder with each method; behaviour cloning then
starts from it on 5, 10 and 25 demonstrations per task, against the same cloning from scratch.
The grid runs through ``vlaforge ablate`` (cells share datasets, re-running resumes).

    python benchmarks/ssl_pretraining.py          # the CPU run of the results (~70 min, 2 cores)
    python benchmarks/ssl_pretraining.py --methods=[mae,moco] --pretrain_steps=3000 --demos=[5,25]

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
from common import RESULTS, cache_root, stage, write

from vlaforge.config import apply_overrides
from vlaforge.data.collect import collect
from vlaforge.data.config import CollectConfig
from vlaforge.envs.config import DomainConfig, EnvConfig
from vlaforge.eval.ablate import ablate
from vlaforge.eval.config import AblateConfig
from vlaforge.eval.stats import difference_interval
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
    output_dir: str = "runs/bench_ssl"


def main(argv: list[str]) -> None:
    s = apply_overrides(Settings(), [a[2:] for a in argv])
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
        "base": {"collect": {"env": {"tasks": s.tasks}}, "splits": ["train"],
                 "train": {"steps": s.steps, "batch_size": 32, "tracking": "none", "ckpt_every": 500},
                 "eval": {"episodes": s.episodes, "videos_per_task": 1}},
        "axes": {"demos": {"collect.episodes_per_task": s.demos}, "encoder": {"train.init_encoder": ["", *encoders.values()]}},
    }
    (root / "grid.in.yaml").write_text(yaml.safe_dump(grid))
    with stage("ablate (collect, train and evaluate every cell; finished cells are reused)"):
        summary = ablate(AblateConfig(grid=str(root / "grid.in.yaml"), output_dir=str(root)))
    name = {"": "scratch"} | {path: method for method, path in encoders.items()}
    cell = {(c["values"]["demos"], name[c["values"]["encoder"]]): c for c in summary["cells"]}
    rows, gains = [], {}
    for demos in s.demos:
        base = cell[(demos, "scratch")]
        for enc in ["scratch", *s.methods]:
            c = cell[(demos, enc)]
            row = {"demos_per_task": demos, "encoder": enc, "success": c["success_rate"],
                   "ci95": f"[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]", "episodes": c["episodes"]}
            if enc != "scratch":
                lo, hi = difference_interval(c["successes"], c["episodes"], base["successes"], base["episodes"])
                gains[f"{enc}@{demos}"] = {"gain": c["success_rate"] - base["success_rate"], "gain_ci95": [lo, hi]}
                row["gain_vs_scratch"] = f"{c['success_rate'] - base['success_rate']:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            else:
                row["gain_vs_scratch"] = ""
            rows.append(row)
    pre = {m: json.loads((Path(p) / "pretrain.json").read_text()) for m, p in encoders.items()}
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(root / "report.html", RESULTS / "ssl.html")
    write("ssl", {"gains": gains, "pretraining": pre, "settings": vars(s)}, rows,
          "Self-supervised encoder pretraining, then behaviour cloning (tabletop, train split)",
          seeds={"pool_scenes_from": POOL_SEED, "pretrain": 0, "collect_scenes_from": 0, "train": 0,
                 "eval_scenes_from": EVAL_SEEDS})


if __name__ == "__main__":
    main(sys.argv[1:])
