"""Active learning against random selection at equal demonstration budgets (tabletop suite).

Every strategy starts from the same seed set (``initial`` demonstrations per task) and the same
policy; each round it chooses ``per_round`` new scenes from a candidate pool with
``vlaforge active``, the expert demonstrates them (``vlaforge collect --scenes``), and the policy is
retrained from scratch on everything so far with the same settings: the quickstart's recipe
(grounding co-training, peak lr 3e-3, the pretrained subword text encoder) with dropout 0.1, so
MC dropout is available to every strategy and the random baseline is the same architecture. Each
training seed (``--seeds=N``: 0 .. N-1, default 3) runs its own chain: its policies choose its
scenes, and its random baseline draws its own (selection seed 100 x training seed + round). The
seed set and the candidate pool are shared. Each strategy is compared with random at every round,
paired by training seed and evaluation scene: the t interval over the per-seed differences, the
pooled paired bootstrap and McNemar's exact test.

    python benchmarks/active_learning.py --strategies=[random,uncertainty,both,diversity,both-cap4]  # results: ~3.5 h
    python benchmarks/active_learning.py --strategies=[random,both-cap4] --seeds=2

Re-running resumes. Writes benchmarks/results/active_learning.{json,md} and active_learning.png
(mean success against demonstrations, with the sd over seeds).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import RESULTS, cache_root, paired_text, seeded_text, stage, train_and_eval, write  # noqa: E402

from vlaforge.config import apply_overrides  # noqa: E402
from vlaforge.data.collect import collect  # noqa: E402
from vlaforge.data.config import CollectConfig  # noqa: E402
from vlaforge.envs.config import EnvConfig  # noqa: E402
from vlaforge.eval.active import select  # noqa: E402
from vlaforge.eval.config import ActiveConfig, QuickstartConfig  # noqa: E402
from vlaforge.eval.stats import paired, seed_summary  # noqa: E402
from vlaforge.seeds import EVAL_SEEDS  # noqa: E402

# Every strategy's training: the quickstart's recipe, with dropout so that MC dropout is available to all.
_QUICKSTART = QuickstartConfig().train
RECIPE = dataclasses.replace(_QUICKSTART, policy=dataclasses.replace(_QUICKSTART.policy, dropout=0.1))


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
    seeds: int = 3  # training seeds 0 .. seeds-1, one chain each
    output_dir: str = "runs/bench_active"


def _grow(s: Settings, env: EnvConfig, name: str, r: int, seed: int, data: Path, policy: Path, step: Path,
          grown: Path) -> None:
    """Round ``r`` of strategy ``name`` in training seed ``seed``'s chain: select scenes with the
    current policy, copy the data so far and let the expert demonstrate the selection into ``grown``."""
    strategy, _, cap = name.partition("-cap")  # e.g. both-cap4: at most 4 scenes per task and round
    selection = select(ActiveConfig(policy=str(policy), dataset=str(data), strategy=strategy, select=s.per_round,
                                    max_per_task=int(cap or 0), pool_per_task=s.pool_per_task, seed=100 * seed + r,
                                    output=str(step / "selection.json")))
    shutil.rmtree(grown, ignore_errors=True)
    shutil.copytree(data, grown, ignore=shutil.ignore_patterns("done"))
    collect(CollectConfig(env=env, scenes=str(step / "selection.json"), output=str(grown), resume=True))
    (grown / "done").write_text(json.dumps(selection["selected_per_task"]))


def main(argv: list[str]) -> None:
    s = apply_overrides(Settings(), [a[2:] for a in argv])
    if s.seeds < 1:
        raise SystemExit(f"--seeds must be >= 1 (training seeds 0 .. N-1), got {s.seeds}")
    seeds = list(range(s.seeds))
    root = cache_root(s.output_dir)
    env = EnvConfig(tasks=s.tasks)
    seed_data = root / "seed" / "data"
    done = (seed_data / "done").is_file()
    with stage("collect seed set", reused=done):
        if not done:
            collect(CollectConfig(env=env, episodes_per_task=s.initial, output=str(seed_data),
                                  resume=(seed_data / "meta").exists()))
            (seed_data / "done").write_text("")
    budgets = [len(s.tasks) * s.initial + r * s.per_round for r in range(s.rounds + 1)]
    # results[name][round] holds one evaluation per training seed, in seed order
    results: dict[str, list[list[dict]]] = {name: [[] for _ in budgets] for name in s.strategies}
    selected: dict[str, dict] = {}
    for seed in seeds:
        start_run = root / f"train{seed}" / "seed" / "run"
        start = train_and_eval(seed_data, start_run, s.steps, s.episodes, base=RECIPE, seed=seed)
        for name in s.strategies:
            results[name][0].append(start)
            data, policy = seed_data, start_run / "policy"
            for r in range(1, s.rounds + 1):
                step = root / f"train{seed}" / name / f"round{r}"
                grown = step / "data"
                done = (grown / "done").is_file()
                with stage(f"select and collect {name} round {r} seed {seed}", reused=done):
                    if not done:
                        _grow(s, env, name, r, seed, data, policy, step, grown)
                selected[f"{name}@round{r}@seed{seed}"] = json.loads((grown / "done").read_text())
                results[name][r].append(train_and_eval(grown, step / "run", s.steps, s.episodes, base=RECIPE,
                                                       seed=seed))
                data, policy = grown, step / "run" / "policy"
    curves = {name: [{"demos": d} | seed_summary(runs) for d, runs in zip(budgets, rounds)]
              for name, rounds in results.items()}
    vs_random = {f"{name}@{budgets[r]}": paired(results[name][r], results["random"][r])
                 for name in s.strategies if name != "random" and "random" in results for r in range(1, s.rounds + 1)}
    rows = []
    for name, points in curves.items():
        for r, p in enumerate(points):
            c = vs_random.get(f"{name}@{p['demos']}")
            rows.append({"strategy": name, "round": r, "demos": p["demos"],
                         "success": seeded_text(p),
                         "per seed": " / ".join(f"{100 * x:.0f}" for x in p["per_seed"]),
                         "vs_random": paired_text(c) if c else ""})
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=110)
    for name, points in curves.items():
        ax.errorbar([p["demos"] for p in points], [p["mean"] for p in points], yerr=[p["sd"] for p in points],
                    marker="o", capsize=3, label=name)
    ax.set_xlabel("demonstrations (all tasks)")
    ax.set_ylabel(f"success rate (mean, sd over {s.seeds} seeds)")
    ax.set_ylim(0, 1.05)
    ax.legend()
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / "active_learning.png")
    figures = {"curves": curves, "vs_random": vs_random, "selected_per_task": selected, "settings": vars(s)}
    write("active_learning", figures, rows,
          f"Active learning vs random selection at equal demonstration budgets (tabletop, {s.seeds} training seeds)",
          seeds={"collect_scenes_from": 0, "pool_scenes_from": ActiveConfig.pool_seed,
                 "selection": "100 x training seed + round", "train": seeds, "eval_scenes_from": EVAL_SEEDS})


if __name__ == "__main__":
    main(sys.argv[1:])
