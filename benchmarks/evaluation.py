"""Evaluation science on the tabletop suite: a data-scaling x augmentation ablation grid run by
``vlaforge ablate``, then an A/B test (``vlaforge compare``) of the two largest-data cells
(random-shift augmentation on vs off), paired by scene; then the augmented largest-data policy on
every split (``vlaforge generalize``) and in five-instruction chains (``vlaforge chains``).

    python benchmarks/evaluation.py                       # the CPU run of the results (~35 min, 2 cores)
    python benchmarks/evaluation.py --steps=3000 --demos=[10,30,100] --episodes=50   # larger

Re-running resumes (finished cells are reused). Writes benchmarks/results/evaluation.{json,md},
the grid's and the comparison's reports (evaluation_{ablation,compare,generalization,chains}.html) and the
data-scaling curve evaluation_scaling.png.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from common import RESULTS, cache_root, stage, write

from vlaforge.config import apply_overrides  # noqa: E402
from vlaforge.eval.ablate import ablate  # noqa: E402
from vlaforge.eval.chains import evaluate_chains  # noqa: E402
from vlaforge.eval.compare import compare  # noqa: E402
from vlaforge.eval.config import AblateConfig, ChainConfig, CompareConfig, GeneralizeConfig  # noqa: E402
from vlaforge.eval.generalization import generalize  # noqa: E402
from vlaforge.seeds import EVAL_SEEDS  # noqa: E402


@dataclass
class Settings:
    tasks: list[str] = field(default_factory=lambda: ["reach", "push", "press_button", "open_drawer"])
    demos: list[int] = field(default_factory=lambda: [5, 15, 45])
    steps: int = 1000
    episodes: int = 25
    chains: int = 50
    output_dir: str = "runs/bench_evaluation"


def main(argv: list[str]) -> None:
    s = apply_overrides(Settings(), [a[2:] for a in argv])
    grid = {
        "base": {"collect": {"env": {"tasks": s.tasks}}, "splits": ["train"],
                 "train": {"steps": s.steps, "batch_size": 32, "tracking": "none", "ckpt_every": 500},
                 "eval": {"episodes": s.episodes, "videos_per_task": 1}},
        "axes": {"demos": {"collect.episodes_per_task": s.demos}, "augmentation": {"train.image_shift": [0, 4]}},
    }
    root = cache_root(s.output_dir)
    (root / "grid.in.yaml").write_text(yaml.safe_dump(grid))
    with stage("ablate (collect, train and evaluate every cell; finished cells are reused)"):
        summary = ablate(AblateConfig(grid=str(root / "grid.in.yaml"), output_dir=str(root)))
    top = max(s.demos)
    pick = {c["values"]["augmentation"]: c["results"] for c in summary["cells"] if c["values"]["demos"] == top}
    with stage("compare"):
        ab = compare(CompareConfig(runs=[pick[4], pick[0]], output_dir=str(root / "compare")))
    # The best-fed augmented cell's policy: every split, and five-instruction chains.
    policy = str(Path(pick[4]).parents[2] / "train" / "policy")
    with stage("generalize"):
        gen = generalize(GeneralizeConfig(policy=policy, episodes=s.episodes, output_dir=str(root / "generalization")))
    with stage("chains"):
        chains = evaluate_chains(ChainConfig(policy=policy, chains=s.chains, output_dir=str(root / "chains")))
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(root / "generalization" / "report.html", RESULTS / "evaluation_generalization.html")
    shutil.copy(root / "chains" / "report.html", RESULTS / "evaluation_chains.html")
    shutil.copy(root / "report.html", RESULTS / "evaluation_ablation.html")
    shutil.copy(root / "compare" / "report.html", RESULTS / "evaluation_compare.html")
    shutil.copy(root / "scaling_demos.png", RESULTS / "evaluation_scaling.png")
    rows = [{"cell": c["cell"], "demos_per_task": c["values"]["demos"], "image_shift": c["values"]["augmentation"],
             "success": c["success_rate"], "ci95": f"[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]",
             "episodes": c["episodes"]} for c in summary["cells"]]
    figures = {"effects": summary["effects"], "compare": {k: ab[k] for k in ("runs", "difference", "difference_ci95_newcombe",
                                                                             "unpaired", "paired", "power", "verdict")},
               "generalization": gen["splits"],
               "chains": {k: chains[k] for k in ("families", "positions", "average_length", "average_length_ci95", "per_task")},
               "efficiency": {c["cell"]: json.loads(Path(c["results"]).read_text())["efficiency"] for c in summary["cells"]},
               "settings": vars(s)}
    write("evaluation", figures, rows, "Ablation grid (demos x augmentation) and A/B test, tabletop train split",
          seeds={"collect_scenes_from": 0, "train": 0, "eval_scenes_from": EVAL_SEEDS, "chains_from": ChainConfig.seed,
                 "bootstrap": CompareConfig.seed})
    print(json.dumps({n: (e["contribution"], e["contribution_ci95"]) for n, e in summary["effects"].items()}))
    print(ab["verdict"])


if __name__ == "__main__":
    main(sys.argv[1:])
