"""Synthetic-data knobs measured on and off: DART noise injection in the expert's executed
actions (``collect.noise``) and colour-jitter augmentation (``train.color_jitter``), as a 2 x 2
grid run by ``vlaforge ablate`` at a fixed demonstration and step budget (tabletop suite).

Random-shift augmentation and the number of procedurally generated scenes were measured in
``benchmarks/evaluation.py`` (results/evaluation.md); this grid adds the other two knobs.

    python benchmarks/synthetic.py                       # the CPU run of the results (~20 min, 2 cores)
    python benchmarks/synthetic.py --demos=25 --steps=3000

Writes benchmarks/results/synthetic.{json,md} and synthetic.html.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field

import yaml
from common import RESULTS, cache_root, stage, write

from vlaforge.config import apply_overrides
from vlaforge.eval.ablate import ablate
from vlaforge.eval.config import AblateConfig
from vlaforge.seeds import EVAL_SEEDS


@dataclass
class Settings:
    tasks: list[str] = field(default_factory=lambda: ["reach", "push", "press_button", "open_drawer"])
    demos: int = 10
    steps: int = 1000
    episodes: int = 25
    output_dir: str = "runs/bench_synthetic"


def main(argv: list[str]) -> None:
    s = apply_overrides(Settings(), [a[2:] for a in argv])
    grid = {
        "base": {"collect": {"env": {"tasks": s.tasks}, "episodes_per_task": s.demos}, "splits": ["train"],
                 "train": {"steps": s.steps, "batch_size": 32, "tracking": "none", "ckpt_every": 500},
                 "eval": {"episodes": s.episodes, "videos_per_task": 1}},
        "axes": {"dart_noise": {"collect.noise": [0.0, 0.3]}, "color_jitter": {"train.color_jitter": [0.0, 0.3]}},
    }
    root = cache_root(s.output_dir)
    (root / "grid.in.yaml").write_text(yaml.safe_dump(grid))
    with stage("ablate (collect, train and evaluate every cell; finished cells are reused)"):
        summary = ablate(AblateConfig(grid=str(root / "grid.in.yaml"), output_dir=str(root)))
    rows = [{"dart_noise": c["values"]["dart_noise"], "color_jitter": c["values"]["color_jitter"],
             "success": c["success_rate"], "ci95": f"[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]", "episodes": c["episodes"]}
            for c in summary["cells"]]
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(root / "report.html", RESULTS / "synthetic.html")
    write("synthetic", {"effects": summary["effects"], "settings": vars(s)}, rows,
          f"DART noise x colour jitter, {s.demos} demos per task, {s.steps} steps (tabletop, train split)",
          seeds={"collect_scenes_from": 0, "train": 0, "eval_scenes_from": EVAL_SEEDS})


if __name__ == "__main__":
    main(sys.argv[1:])
