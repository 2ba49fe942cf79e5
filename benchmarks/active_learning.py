"""Active learning against random selection at equal demonstration budgets (tabletop suite).

Every strategy starts from the same seed set (``initial`` demonstrations per task) and the same
policy; each round it chooses ``per_round`` new scenes from a candidate pool with
``vlaforge active``, the expert demonstrates them (``vlaforge collect --scenes``), and the policy is
retrained from scratch on everything so far with the same settings. All policies are trained
with dropout 0.1, so MC dropout is available to every strategy and the random baseline is the
same architecture.

    python benchmarks/active_learning.py --strategies=[random,uncertainty,both,diversity,both-cap4]   # the results (~70 min)
    python benchmarks/active_learning.py --strategies=[random,uncertainty,both,diversity,both-cap4]

Re-running resumes. Writes benchmarks/results/active_learning.{json,md} and active_learning.png
(success against demonstrations, 95% intervals).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import RESULTS, cache_root, stage, train_and_eval, write  # noqa: E402

from vlaforge.config import apply_overrides  # noqa: E402
from vlaforge.data.collect import collect  # noqa: E402
from vlaforge.data.config import CollectConfig  # noqa: E402
from vlaforge.envs.config import EnvConfig  # noqa: E402
from vlaforge.eval.active import select  # noqa: E402
from vlaforge.eval.config import ActiveConfig  # noqa: E402
from vlaforge.eval.stats import difference_interval  # noqa: E402
from vlaforge.models.config import PolicyConfig  # noqa: E402
from vlaforge.seeds import EVAL_SEEDS  # noqa: E402

DROPOUT = PolicyConfig(dropout=0.1)  # every strategy's policy, so MC dropout is available to all


@dataclass
class Settings:
    tasks: list[str] = field(default_factory=lambda: ["reach", "push", "press_button", "open_drawer"])
    strategies: list[str] = field(default_factory=lambda: ["random", "uncertainty", "both"])
    initial: int = 3  # demonstrations per task in the seed set
    per_round: int = 12  # scenes chosen per round (3 per task on average)
    rounds: int = 2
    pool_per_task: int = 25
    steps: int = 1000
    episodes: int = 25
    output_dir: str = "runs/bench_active"


def _grow(s: Settings, env: EnvConfig, name: str, r: int, data: Path, policy: Path, step: Path, grown: Path) -> None:
    """Round ``r`` of strategy ``name``: select scenes with the current policy, copy the data so
    far and let the expert demonstrate the selection into ``grown``."""
    strategy, _, cap = name.partition("-cap")  # e.g. both-cap4: at most 4 scenes per task and round
    selection = select(ActiveConfig(policy=str(policy), dataset=str(data), strategy=strategy, select=s.per_round,
                                    max_per_task=int(cap or 0), pool_per_task=s.pool_per_task, seed=r,
                                    output=str(step / "selection.json")))
    shutil.rmtree(grown, ignore_errors=True)
    shutil.copytree(data, grown, ignore=shutil.ignore_patterns("done"))
    collect(CollectConfig(env=env, scenes=str(step / "selection.json"), output=str(grown), resume=True))
    (grown / "done").write_text(json.dumps(selection["selected_per_task"]))


def main(argv: list[str]) -> None:
    s = apply_overrides(Settings(), [a[2:] for a in argv])
    root = cache_root(s.output_dir)
    env = EnvConfig(tasks=s.tasks)
    seed_data = root / "seed" / "data"
    done = (seed_data / "done").is_file()
    with stage("collect seed set", reused=done):
        if not done:
            collect(CollectConfig(env=env, episodes_per_task=s.initial, output=str(seed_data),
                                  resume=(seed_data / "meta").exists()))
            (seed_data / "done").write_text("")
    start = train_and_eval(seed_data, root / "seed" / "run", s.steps, s.episodes, policy=DROPOUT)
    curves = {name: [(len(s.tasks) * s.initial, start)] for name in s.strategies}
    for name in s.strategies:
        data, policy = seed_data, root / "seed" / "run" / "policy"
        for r in range(1, s.rounds + 1):
            step = root / name / f"round{r}"
            grown = step / "data"
            done = (grown / "done").is_file()
            with stage(f"select and collect {name} round {r}", reused=done):
                if not done:
                    _grow(s, env, name, r, data, policy, step, grown)
            result = train_and_eval(grown, step / "run", s.steps, s.episodes, policy=DROPOUT)
            demos = len(s.tasks) * s.initial + r * s.per_round
            curves[name].append((demos, result))
            data, policy = grown, step / "run" / "policy"
    rows, figures = [], {"vs_random": {}, "selected_per_task": {}}
    for name, points in curves.items():
        for r, (demos, res) in enumerate(points):
            row = {"strategy": name, "round": r, "demos": demos, "success": res["success_rate"],
                   "ci95": f"[{res['ci95'][0]:.2f}, {res['ci95'][1]:.2f}]", "episodes": res["episodes"], "vs_random": ""}
            base = curves["random"][r][1] if "random" in curves else None
            if base is not None and name != "random" and r > 0:
                lo, hi = difference_interval(res["successes"], res["episodes"], base["successes"], base["episodes"])
                diff = res["success_rate"] - base["success_rate"]
                figures["vs_random"][f"{name}@{demos}"] = {"difference": diff, "ci95": [lo, hi]}
                row["vs_random"] = f"{diff:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            if r > 0:
                figures["selected_per_task"][f"{name}@round{r}"] = json.loads(
                    (root / name / f"round{r}" / "data" / "done").read_text())
            rows.append(row)
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=110)
    for name, points in curves.items():
        xs = [d for d, _ in points]
        ys = [p["success_rate"] for _, p in points]
        err = [[y - p["ci95"][0] for y, (_, p) in zip(ys, points)], [p["ci95"][1] - y for y, (_, p) in zip(ys, points)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xlabel("demonstrations (all tasks)")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.05)
    ax.legend()
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / "active_learning.png")
    figures["settings"] = vars(s)
    write("active_learning", figures, rows, "Active learning vs random selection at equal demonstration budgets (tabletop)",
          seeds={"collect_scenes_from": 0, "pool_scenes_from": ActiveConfig.pool_seed, "selection": "round number",
                 "train": 0, "eval_scenes_from": EVAL_SEEDS})


if __name__ == "__main__":
    main(sys.argv[1:])
