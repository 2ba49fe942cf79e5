"""The small experiment cell: how good a policy three minutes of training on 2 cores buys, per
training recipe, over several seeds.

    python benchmarks/small_cell.py [--seeds=3] [--arms=[default,shift4,batch32,lr3e-3]] [--steps=1100]
                                    [--episodes=25] [train overrides for every arm]
    python benchmarks/small_cell.py --arms=[grounding+lr3e-3,grounding+lr3e-3+horizon2,grounding+lr3e-3+horizon1] \
                                    --name=small_cell_horizon

The cell is 4 tabletop tasks (reach, push, pick_place, press_button) with 25 scripted demos per
task, collected once. Each arm is a training recipe (the trainer's defaults plus the overrides in
``ARMS``) trained once per seed on that data and evaluated on the same train-split scenes
(``--episodes`` per task); an arm that changes only how the policy runs (how many actions of a
chunk execute before the next query) evaluates another arm's policies. ``--name`` names the
results file (default small_cell), so a second set of arms does not replace the first. Reported per arm: every seed's success, mean, sd, the pooled Wilson
interval, the mean success per task, the wall time of training and how far off the policy's
auxiliary head places the target on its training frames and on new scenes
(eval/localization.py); and each arm against the first, paired by seed and scene (pooled
bootstrap, McNemar, per-seed t interval). The target the cell is built for is
>= 85% success with sd <= 5 points in <= 3 minutes of training. Writes
benchmarks/results/small_cell.{json,md}. Run it on an idle machine: training time is a figure.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys

from common import arg, cache_root, collect_once, paired_text, seeded_text, small_cell, stage, train_once, write

from vlaforge.cli import parse
from vlaforge.config import to_dict
from vlaforge.eval.config import EvalConfig, QuickstartConfig
from vlaforge.eval.localization import localization_error
from vlaforge.eval.rollout import evaluate
from vlaforge.eval.stats import paired, seed_summary
from vlaforge.runtime.policy import load_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.tracking import flatten
from vlaforge.train.trainer import train


@dataclasses.dataclass(frozen=True)
class Arm:
    """One lever on top of the trainer's defaults: train overrides, the multiple of the cell's
    step budget, and evaluation settings. An arm that only changes how the policy is run
    (``eval``) names the arm whose trained policies it evaluates (``trained_as``)."""

    train: tuple[str, ...] = ()
    multiple: int = 1
    eval: tuple[tuple[str, int], ...] = ()
    trained_as: str = ""


GROUNDING_LR = ("--grounding_scenes=250", "--optim.lr=3e-3")


def quickstart_recipe() -> tuple[str, ...]:
    """The quickstart's training recipe as overrides of the trainer's defaults, read from
    QuickstartConfig so that the `quickstart` arm follows the recipe as it changes."""
    base, recipe = flatten(to_dict(TrainConfig())), flatten(to_dict(QuickstartConfig().train))
    return tuple(f"--{key}={value}" for key, value in recipe.items() if base.get(key) != value)


# batch32 halves the batch and doubles the steps, about the same wall time as default; grounding
# co-trains the target/goal losses on 250 rendered scenes per task (data/grounding.py), rendered
# inside the timed training; the horizon arms execute 2 or 1 actions of each 8-action chunk
# before asking again (default: half the chunk, 4), the same trained policies.
ARMS: dict[str, Arm] = {
    "default": Arm(),
    "shift4": Arm(("--image_shift=4",)),
    "batch32": Arm(("--batch_size=32",), 2),
    "lr3e-3": Arm(("--optim.lr=3e-3",)),
    "grounding": Arm(("--grounding_scenes=250",)),
    "grounding+lr3e-3": Arm(GROUNDING_LR),
    "grounding+lr3e-3+horizon2": Arm(GROUNDING_LR, eval=(("action_horizon", 2),), trained_as="grounding+lr3e-3"),
    "grounding+lr3e-3+horizon1": Arm(GROUNDING_LR, eval=(("action_horizon", 1),), trained_as="grounding+lr3e-3"),
    # The quickstart's recipe in full (its pretrained subword text encoder too), and the cell's
    # ceiling at three times the step budget: whether the cell is bound by time or by its 25 demos.
    "quickstart": Arm(quickstart_recipe()),
    "grounding+lr3e-3+steps3x": Arm(GROUNDING_LR, 3),
}


def arm(name: str) -> Arm:
    if name not in ARMS:
        raise SystemExit(f"unknown arm {name!r}; allowed: {', '.join(ARMS)}")
    return ARMS[name]


def arm_overrides(name: str, steps: int) -> list[str]:
    """The arm's train overrides, its step count included."""
    return [f"--steps={arm(name).multiple * steps}", *arm(name).train]


def main(argv: list[str]) -> None:
    n, steps, episodes = int(arg("seeds", "3", argv)), int(arg("steps", "1100", argv)), int(arg("episodes", "25", argv))
    arms = arg("arms", "[" + ",".join(ARMS) + "]", argv).strip("[]").split(",")
    if n < 2:
        raise SystemExit(f"--seeds must be >= 2 (sd and intervals need them), got {n}")
    results_name = arg("name", "small_cell", argv)
    common = [a for a in argv if not a.startswith(("--seeds=", "--arms=", "--steps=", "--episodes=", "--name="))]
    root = cache_root("runs/bench_small_cell")
    cell = small_cell()
    data = collect_once(cell, root / "data")
    results: dict[str, list[dict]] = {a: [] for a in arms}
    seconds: dict[str, list[float]] = {a: [] for a in arms}
    located: dict[str, list[dict]] = {a: [] for a in arms}
    trained: dict[tuple[str, int], float] = {}  # (training arm, seed) -> its training seconds
    where: dict[tuple[str, int], dict] = {}  # (training arm, seed) -> its localization error
    for seed in range(n):
        for name in arms:
            source = arm(name).trained_as or name
            run = root / source / f"seed{seed}"
            cfg = parse("train", [*arm_overrides(source, steps), *common])
            if (source, seed) not in trained:
                trained[source, seed] = train_once(run, lambda resume: train(dataclasses.replace(
                    cfg, dataset=str(data), output_dir=str(run), seed=seed, tracking="none", resume=resume), False),
                    f"train {source} seed {seed}")
            seconds[name].append(trained[source, seed])
            with stage(f"eval {name} seed {seed}"):
                r = evaluate(EvalConfig(policy=str(run / "policy"), split="train", episodes=episodes, videos_per_task=0,
                                        output_dir=str(run / f"eval_{name}"), **dict(arm(name).eval)), False)
            if (source, seed) not in where:
                with stage(f"localization {source} seed {seed}"):
                    where[source, seed] = localization_error(load_policy(run / "policy"), str(data))
            located[name].append(where[source, seed])
            results[name].append(r)
            print(f"{name} seed {seed}: {r['success_rate']:.1%} after {seconds[name][-1]:.0f} s", flush=True)
    figures = {"tasks": cell.env.tasks, "demos_per_task": cell.episodes_per_task, "eval_episodes_per_task": episodes, "steps": steps,
               "target": {"success": 0.85, "sd": 0.05, "train_seconds": 180}, "arms": {}, "comparisons": {}}
    for name in arms:
        s = seed_summary(results[name])
        figures["arms"][name] = s | {"overrides": arm_overrides(name, steps) + common, "train_seconds": seconds[name],
                                     "eval": dict(arm(name).eval), "trained_as": arm(name).trained_as or name,
                                     "localization": located[name],
                                     "target_error_m": {k: statistics.fmean(x[k]["target_m"] for x in located[name])
                                                        for k in ("train_frames", "new_scenes")},
                                     "meets_target": s["mean"] >= 0.85 and s["sd"] <= 0.05
                                     and max(seconds[name]) <= 180}
    for name in arms[1:]:
        figures["comparisons"][f"{name} - {arms[0]}"] = paired(results[name], results[arms[0]])
    rows = [{"arm": a, "seed": str(i), "success": f"{100 * r['success_rate']:.1f}%",
             "train s": f"{seconds[a][i]:.0f}"} for a in arms for i, r in enumerate(results[a])]
    rows += [{"arm": a, "seed": "mean (sd)", "success": seeded_text(figures["arms"][a]),
              "train s": f"{statistics.fmean(seconds[a]):.0f}"} for a in arms]
    rows += [{"arm": k, "seed": "paired", "success": paired_text(c), "train s": ""}
             for k, c in figures["comparisons"].items()]
    write(results_name, figures, rows, f"Small experiment cell (4 tasks x 25 demos) over {n} training seeds",
          seeds={"collect": cell.seed, "train": list(range(n)), "eval_scenes_from": EvalConfig().seed})


if __name__ == "__main__":
    main(sys.argv[1:])
