"""Curation measured by success: the same noisy collection trained on raw, cleaned and relabelled.

The expert demonstrates with heavy DART noise (0.8) and ``--keep_failures``, so a share of the
episodes are failed attempts, as in play or teleoperation data. ``vlaforge data check`` reports
them, ``data clean`` drops them, ``data relabel`` keeps those that achieved another task under
that task's instruction. A policy is trained on each dataset with the same steps and evaluated
on the same scenes.

    python benchmarks/curation.py                  # the CPU run of the results (~20 min, 2 cores)

Writes benchmarks/results/curation.{json,md} and curation_qc.html (the check report).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field

from common import RESULTS, cache_root, stage, train_and_eval, write

from vlaforge.config import apply_overrides
from vlaforge.data.annotate import relabel_dataset
from vlaforge.data.collect import collect
from vlaforge.data.config import CollectConfig, DataConfig
from vlaforge.data.quality import check_dataset, clean_dataset, write_check_report
from vlaforge.envs.config import EnvConfig
from vlaforge.eval.stats import difference_interval
from vlaforge.seeds import EVAL_SEEDS


@dataclass
class Settings:
    tasks: list[str] = field(default_factory=lambda: ["reach", "push", "press_button", "open_drawer"])
    episodes_per_task: int = 15
    noise: float = 0.8
    steps: int = 1000
    episodes: int = 25
    output_dir: str = "runs/bench_curation"


def main(argv: list[str]) -> None:
    s = apply_overrides(Settings(), [a[2:] for a in argv])
    root = cache_root(s.output_dir)
    raw = root / "raw"
    done = (raw / "done").is_file()
    with stage("collect", reused=done):
        if not done:
            collect(CollectConfig(env=EnvConfig(tasks=s.tasks), episodes_per_task=s.episodes_per_task, noise=s.noise,
                                  keep_failures=True, output=str(raw), resume=(raw / "meta").exists()))
            (raw / "done").write_text("")
    with stage("check"):
        report, eps, _ = check_dataset(DataConfig(dataset=str(raw)))
        write_check_report(report, eps, root / "qc")
    for name, make in (("clean", clean_dataset), ("relabelled", relabel_dataset)):
        done = (root / name).exists()
        with stage(name, reused=done):
            if not done:
                make(DataConfig(dataset=str(raw), output=str(root / name)))
    results = {}
    for name in ("raw", "clean", "relabelled"):
        results[name] = train_and_eval(root / name, root / "runs" / name, s.steps, s.episodes)
    sizes = {name: json.loads((root / name / "meta" / "info.json").read_text())["total_episodes"] for name in results}
    rows, diffs = [], {}
    base = results["raw"]
    for name, r in results.items():
        row = {"dataset": name, "episodes_in_data": sizes[name], "success": r["success_rate"],
               "ci95": f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]", "eval_episodes": r["episodes"], "vs_raw": ""}
        if name != "raw":
            lo, hi = difference_interval(r["successes"], r["episodes"], base["successes"], base["episodes"])
            diffs[name] = {"difference": r["success_rate"] - base["success_rate"], "ci95": [lo, hi]}
            row["vs_raw"] = f"{r['success_rate'] - base['success_rate']:+.2f} [{lo:+.2f}, {hi:+.2f}]"
        rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(root / "qc" / "qc.html", RESULTS / "curation_qc.html")
    qc = {n: v["episodes"] for n, v in report["rules"].items()}
    write("curation", {"qc_flagged_by_rule": qc, "vs_raw": diffs, "per_task": {n: r["per_task"] for n, r in results.items()},
                       "settings": vars(s)}, rows, f"Raw vs cleaned vs relabelled data (DART noise {s.noise}, failures kept)",
          seeds={"collect_scenes_from": 0, "dart_noise": 0, "train": 0, "eval_scenes_from": EVAL_SEEDS})


if __name__ == "__main__":
    main(sys.argv[1:])
