"""The quickstart recipe over several training seeds on one collected dataset: how much of a
single run's success is the draw of the initial weights and batches, and, per training recipe
(arm), whether a change beats that draw.

    python benchmarks/quickstart_seeds.py [--seeds=3] [--arms=[default]] [--key=value quickstart overrides]

With ``--splits=[train,unseen,unseen_paraphrase]`` each arm also reports its paraphrase gap (train
minus reworded instructions on the same scenes, paired).

Collects the quickstart's data once, then trains one policy per arm and seed (``train.seed``)
and evaluates each on the same scenes of every split. Reported per arm: every seed's success per
split, mean and sd, the wall time of training, and whether the issue's target is met (train >=
95%, unseen >= 90%, sd <= 3 points); every arm against the first, paired by seed and scene
(``common.paired``). Writes benchmarks/results/quickstart_seeds.{json,md}. Run it on an idle
machine: training time is a figure.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys

from common import arg, cache_root, collect_once, stage, train_once, write

from vlaforge.cli import parse
from vlaforge.eval.rollout import evaluate
from vlaforge.eval.stats import paired, seed_summary
from vlaforge.train.trainer import train

# One recipe change per arm, as quickstart overrides on top of its defaults (grounding on 250
# scenes per task, lr 3e-3, the wordllama text encoder); `plain` is the trainer's own defaults,
# what the quickstart used before any of those (the `default` arm of results recorded before them).
ARMS: dict[str, list[str]] = {
    "default": [],
    "plain": ["--train.grounding_scenes=0", "--train.optim.lr=1e-3", "--train.policy.text_encoder=words"],
    "grounding-only": ["--train.optim.lr=1e-3"],
    "words": ["--train.policy.text_encoder=words"],
    "steps2500": ["--train.steps=2500"],
    # Half and three quarters of the fusion depth: the four blocks take 48 of the 70 ms forward
    # pass (profile_step.json at 9f590a0).
    "layers2": ["--train.policy.n_layers=2"],
    "layers3": ["--train.policy.n_layers=3"],
    # Three quarters of the batch at the same steps and peak lr: the step's matmuls shrink with
    # it; whether 25% fewer samples cost success is what the arm measures.
    "batch48": ["--train.batch_size=48"],
    # Vision keypoint tokens per image: 33 of the 59 fusion tokens at 32 keypoints. Training took
    # 592 s at 32, 515 s at 16 and 449 s at 8 (medians; quickstart_seeds.json at c71cf2f).
    "keypoints16": ["--train.policy.keypoints=16"],
    "keypoints8": ["--train.policy.keypoints=8"],
}
TARGET = {"train": 0.95, "unseen": 0.90, "sd": 0.03}


def main(argv: list[str]) -> None:
    n = int(arg("seeds", "3", argv))
    arms = arg("arms", "[default]", argv).strip("[]").split(",")
    if n < 2:
        raise SystemExit(f"--seeds must be >= 2 to measure a spread, got {n}")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm {unknown[0]!r}; allowed: {', '.join(ARMS)}")
    common = [a for a in argv if not a.startswith(("--seeds=", "--arms="))]
    base = parse("quickstart", common)
    root = cache_root("runs/bench_quickstart_seeds")
    data = collect_once(base.collect, root / "data")
    results = {a: {s: [] for s in base.splits} for a in arms}
    seconds: dict[str, list[float]] = {a: [] for a in arms}
    for seed in range(n):
        for name in arms:
            cfg = parse("quickstart", [*common, *ARMS[name]])
            run = root / name / f"seed{seed}"
            seconds[name].append(train_once(run, lambda resume: train(dataclasses.replace(
                cfg.train, dataset=str(data), output_dir=str(run), seed=seed, resume=resume), False),
                f"train {name} seed {seed}"))
            for split in cfg.splits:
                with stage(f"eval {name} seed {seed} {split}"):
                    eval_cfg = dataclasses.replace(cfg.eval, policy=str(run / "policy"), split=split,
                                                   output_dir=str(run / "eval" / split))
                    results[name][split].append(evaluate(eval_cfg, False))
            print(f"{name} seed {seed}: " + ", ".join(f"{s} {results[name][s][-1]['success_rate']:.1%}"
                                                      for s in cfg.splits), flush=True)
    figures = {"arms": {}, "comparisons": {}, "target": TARGET, "train_steps": base.train.steps,
               "episodes_per_task_collected": base.collect.episodes_per_task,
               "eval_episodes_per_task": base.eval.episodes}
    for name in arms:
        summary = {s: seed_summary(results[name][s]) for s in base.splits}
        mean, sd = ({s: x[key] for s, x in summary.items()} for key in ("mean", "sd"))
        figures["arms"][name] = {
            "overrides": ARMS[name] + common, "per_seed": {s: x["per_seed"] for s, x in summary.items()},
            "mean": mean, "sd": sd, "train_seconds": seconds[name],
            "per_task_mean": {s: x["per_task_mean"] for s, x in summary.items()},
            "meets_target": all(mean.get(s, 0.0) >= TARGET[s] and sd.get(s, 1.0) <= TARGET["sd"]
                                for s in ("train", "unseen")),
        }
        if "unseen_paraphrase" in base.splits:  # the same scenes as train, the instructions reworded
            figures["arms"][name]["paraphrase_gap"] = paired(results[name]["train"], results[name]["unseen_paraphrase"])
    for name in arms[1:]:
        figures["comparisons"][f"{name} - {arms[0]}"] = {s: paired(results[name][s], results[arms[0]][s])
                                                         for s in base.splits}
    arm = figures["arms"]
    rows = [{"arm": a, "seed": str(i), **{s: f"{100 * arm[a]['per_seed'][s][i]:.1f}%" for s in base.splits},
             "train s": f"{seconds[a][i]:.0f}"} for a in arms for i in range(n)]
    rows += [{"arm": a, "seed": "mean (sd)",
              **{s: f"{100 * arm[a]['mean'][s]:.1f}% ({100 * arm[a]['sd'][s]:.1f})" for s in base.splits},
              "train s": f"{statistics.fmean(seconds[a]):.0f}"} for a in arms]
    rows += [{"arm": k, "seed": "paired", "train s": "",
              **{s: "{:+.1f} seed-t [{:+.1f}, {:+.1f}]".format(100 * c[s]["difference"],
                                                               *(100 * x for x in c[s]["seed_t_ci95"]))
                 for s in base.splits}} for k, c in figures["comparisons"].items()]
    rows += [{"arm": a, "seed": "train - unseen_paraphrase", **{s: "" for s in base.splits}, "train s": "",
              "unseen_paraphrase": "{:+.1f} seed-t [{:+.1f}, {:+.1f}], pooled [{:+.1f}, {:+.1f}]".format(
                  100 * g["difference"], *(100 * x for x in (*g["seed_t_ci95"], *g["paired_bootstrap_ci95"])))}
             for a in arms if (g := arm[a].get("paraphrase_gap"))]
    write("quickstart_seeds", figures, rows, f"The quickstart recipe over {n} training seeds (same data, same scenes)",
          seeds={"collect_scenes_from": base.collect.seed, "train": list(range(n)), "eval_scenes_from": base.eval.seed})


if __name__ == "__main__":
    main(sys.argv[1:])
