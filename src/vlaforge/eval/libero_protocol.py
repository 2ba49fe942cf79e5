"""LIBERO's standard protocol in one resumable command: ``vlaforge bench libero``.

The protocol the field reports (Liu et al. 2023, "LIBERO"; the OpenVLA, OpenVLA-OFT and openpi
evaluations): for each of the four suites (Spatial, Object, Goal, Long = ``libero-10``), 50
demonstrations of every task, a policy trained on them, and 50 trials per task from the task's
50 fixed initial states (500 per suite) under the suite's step limit; success per task and per
suite with Wilson intervals, and the plain mean of the four suite rates.

What vlaforge changes, and says so in every result: the demonstrations come from its scripted
experts (no human demonstrations can be downloaded here). A task whose BDDL goal has no script
gets no demonstrations and is still evaluated, so it counts as failures rather than
disappearing. A run with fewer demos or trials, a subset of tasks, other scenes or step limits,
or not all four suites is labelled ``reduced`` with the reasons.

Stages, each resumable (an interrupted run continues where it stopped; a re-run whose collection
or training settings differ from those a finished or interrupted stage was made with is
refused): which tasks have an expert -> collect -> train (one policy per seed) -> evaluate each
split. The wall time of every stage accumulates in ``stages.json`` across invocations, so a
protocol spread over several sessions reports its whole cost. Outputs: ``libero.json`` and
``libero.md`` (the table beside the published numbers).
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from vlaforge.config import save_yaml
from vlaforge.eval.config import LiberoBenchConfig
from vlaforge.eval.stats import paired, seed_summary, wilson_interval
from vlaforge.files import atomic_write_json, atomic_write_text
from vlaforge.seeds import EVAL_SEEDS
from vlaforge.train.tracking import git_commit, system_info

STANDARD_SUITES = ("libero-spatial", "libero-object", "libero-goal", "libero-10")
LANGUAGE_SPLITS = ("blank", "unseen_paraphrase")  # libero-goal: one scene, ten goals: the words decide
# Published four-suite averages (%) as quoted in vlaforge's LIBERO issue from their sources; every
# one trained on LIBERO's human demonstrations and evaluated on GPUs.
PUBLISHED = [
    {"policy": "pi0.5", "average": 96.85, "source": "openpi", "notes": "VLM backbone, robot pretraining"},
    {"policy": "pi0.5", "average": 97.5, "source": "LeRobot", "notes": "VLM backbone, robot pretraining"},
    {"policy": "OpenVLA-OFT", "average": 97.1, "source": "Kim et al. 2025", "notes": "7B, parallel decoding of chunks"},
    {"policy": "GR00T N1.7", "average": 96.5, "source": "NVIDIA", "notes": "VLM backbone, robot pretraining"},
    {"policy": "pi0-FAST", "average": 82.5, "source": "openpi", "notes": "VLM backbone, FAST action tokens"},
    {"policy": "OpenVLA", "average": 76.5, "source": "Kim et al. 2024", "notes": "7B, Open X pretraining; +-0.6"},
    {"policy": "Octo", "average": 75.1, "source": "Kim et al. 2024", "notes": "93M, Open X pretraining"},
    {"policy": "Diffusion Policy", "average": 72.4, "source": "Kim et al. 2024", "notes": "trained from scratch"},
]


# Settings of the nested sections that the protocol sets itself, and the option that says it.
OWNED = {"collect.env.suite": "--suites", "collect.env.tasks": "--tasks", "collect.episodes_per_task": "--demos",
         "collect.output": "--output_dir", "collect.resume": "a re-run", "train.dataset": "--output_dir",
         "train.output_dir": "--output_dir", "train.seed": "--seeds", "train.resume": "a re-run",
         "eval.policy": "--output_dir", "eval.split": "--language", "eval.tasks": "--tasks",
         "eval.episodes": "--trials", "eval.output_dir": "--output_dir", "eval.resume": "a re-run"}


def _get(cfg: object, dotted: str) -> object:
    for key in dotted.split("."):
        cfg = getattr(cfg, key)
    return cfg


def check(cfg: LiberoBenchConfig) -> list[str]:
    """Refuse settings the protocol cannot run (one line naming the key); returns the reasons the
    run differs from the standard protocol (empty: standard)."""
    from vlaforge.envs import get_suite
    from vlaforge.seeds import TASK_STRIDE

    default = LiberoBenchConfig()
    for key, instead in OWNED.items():
        if _get(cfg, key) != _get(default, key):
            raise ValueError(f"--{key} is set by the protocol itself; use {instead}")

    if not cfg.suites:
        raise ValueError(f"suites must name at least one LIBERO suite, e.g. {', '.join(STANDARD_SUITES)}")
    for name in cfg.suites:
        if not name.startswith("libero-"):
            raise ValueError(f"suites: {name!r} is not a LIBERO suite; known: {', '.join(STANDARD_SUITES)}, libero-90")
        get_suite(name)
    if len(set(cfg.suites)) != len(cfg.suites):
        raise ValueError(f"suites must be distinct, got {cfg.suites}")
    known = {t for name in cfg.suites for t in get_suite(name).tasks}
    for t in cfg.tasks:
        if t not in known:
            raise KeyError(f"tasks: {t!r} is in none of the suites {', '.join(cfg.suites)}")
    if not 1 <= cfg.demos <= TASK_STRIDE:
        raise ValueError(f"demos must be in [1, {TASK_STRIDE}], got {cfg.demos}")
    if not 1 <= cfg.trials <= 50:
        raise ValueError(f"trials must be in [1, 50] (LIBERO ships 50 initial states per task), got {cfg.trials}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"seeds must be distinct training seeds, at least one, got {cfg.seeds}")
    reasons = []
    if cfg.demos != 50:
        reasons.append(f"{cfg.demos} demos per task (standard: 50)")
    if cfg.trials != 50:
        reasons.append(f"{cfg.trials} trials per task (standard: 50)")
    if cfg.tasks:
        reasons.append(f"only the tasks {', '.join(cfg.tasks)}")
    if cfg.eval.seed != EVAL_SEEDS:
        reasons.append(f"eval.seed {cfg.eval.seed}: scenes from the placement sampler, not the fixed initial states")
    if cfg.eval.max_steps or cfg.collect.env.max_steps:
        reasons.append("a step limit other than the suite's")
    if set(STANDARD_SUITES) - set(cfg.suites):
        reasons.append(f"suites {', '.join(cfg.suites)} (the average needs {', '.join(STANDARD_SUITES)})")
    return reasons


class Stages:
    """Wall seconds per stage, accumulated across invocations in ``stages.json`` (written after
    every stage, so an interrupted invocation keeps what it had finished)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}
        self.reused: list[str] = []

    @contextmanager
    def stage(self, name: str, done: bool):
        """Run the body unless ``done`` (then it counts as reused); its time adds to ``name``."""
        if done:
            self.reused.append(name)
            yield False
            return
        t = time.perf_counter()
        try:
            yield True
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
            atomic_write_json(self.path, self.seconds)


def experts(suite_name: str, tasks: list[str], env_cfg, path: Path, known: dict[str, str]) -> dict[str, str]:
    """task -> "" when its scripted expert exists, else the reason; ``known`` holds what ``path``
    cached, and every new answer is added to both."""
    from vlaforge.envs import get_suite

    suite = get_suite(suite_name)
    for task in tasks:
        if task in known:
            continue
        env = suite.make_env(task, "train", suite.resolve(dataclasses.replace(env_cfg, suite=suite_name)))
        try:
            suite.make_expert(env)
            known[task] = ""
        except ValueError as e:
            known[task] = str(e)
        finally:
            env.close()
        atomic_write_json(path, known)
    return {t: known[t] for t in tasks}


# Collection settings that change where or how fast episodes are written, not which.
COLLECT_NOT_DEFINING = ("output", "resume", "workers", "backend", "ray_address")


def refuse_changed_collection(data: Path, intended) -> None:
    """A collection (finished or interrupted) is reused only under the settings that made it: its
    ``collect_config.yaml`` against ``intended`` (a CollectConfig), one line naming what differs."""
    from vlaforge.config import load_yaml, setting_changes, to_dict
    from vlaforge.data.config import CollectConfig
    from vlaforge.envs import get_suite
    from vlaforge.train.tracking import flatten

    saved = data / "collect_config.yaml"
    if not saved.is_file():
        return
    intended = dataclasses.replace(intended, env=get_suite(intended.env.suite).resolve(intended.env))
    old, new = ({k: v for k, v in flatten(to_dict(c)).items() if not k.startswith(COLLECT_NOT_DEFINING)}
                for c in (load_yaml(CollectConfig, saved), intended))
    changes = setting_changes(old, new)
    if changes:
        raise ValueError(f"{data} was collected with other settings ({'; '.join(changes)}); re-run with its own "
                         f"settings or use a new --output_dir (nothing was changed)")


def refuse_changed_training(run_dir: Path, intended) -> None:
    """A policy (finished or checkpointed) is reused only under the training settings that made it."""
    from vlaforge.config import load_yaml
    from vlaforge.train.config import TrainConfig
    from vlaforge.train.trainer import run_changes

    saved = run_dir / "config.yaml"
    if saved.is_file() and (changes := run_changes(load_yaml(TrainConfig, saved), intended)):
        raise ValueError(f"{run_dir} was trained with other settings ({'; '.join(changes)}); re-run with its own "
                         f"settings or use a new --output_dir (nothing was changed)")


def run(cfg: LiberoBenchConfig, show_progress: bool = True) -> dict:
    """Every stage of every suite (resuming finished work), then libero.json and libero.md."""
    from vlaforge.data.collect import collect
    from vlaforge.data.dataset import LeRobotDataset
    from vlaforge.envs import get_suite
    from vlaforge.eval.rollout import JOURNAL, evaluate
    from vlaforge.train.checkpoint import latest_checkpoint
    from vlaforge.train.trainer import train

    reasons = check(cfg)
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "config.yaml").is_file():  # a refused re-run leaves the finished run's settings in place
        save_yaml(cfg, root / "config.yaml")
    stages = Stages(root / "stages.json")
    suites = {}
    for name in cfg.suites:
        suite, base = get_suite(name), root / name
        tasks = [t for t in suite.tasks if t in cfg.tasks] if cfg.tasks else list(suite.tasks)
        if not tasks:
            continue
        cache = base / "experts.json"
        known = json.loads(cache.read_text()) if cache.is_file() else {}
        with stages.stage(f"{name}: experts", set(tasks) <= set(known)):
            scripts = experts(name, tasks, cfg.collect.env, cache, known)
        scripted = [t for t in tasks if not scripts[t]]
        data = base / "data"
        env = dataclasses.replace(cfg.collect.env, suite=name, tasks=scripted)
        collect_cfg = dataclasses.replace(cfg.collect, env=env, episodes_per_task=cfg.demos, output=str(data),
                                          resume=(data / "meta").exists())
        if scripted:
            refuse_changed_collection(data, collect_cfg)
        with stages.stage(f"{name}: collect", not scripted or (data / "done").is_file()) as running:
            if running:
                collect(collect_cfg, show_progress)
                atomic_write_text(data / "done", "")
        demos = {t: 0 for t in tasks}
        if scripted:
            for e in LeRobotDataset(data).episodes:
                demos[e["vlaforge/task"]] += 1
        splits = ["train", *(LANGUAGE_SPLITS if cfg.language and name == "libero-goal" else ())]
        results: dict[str, list[dict]] = {s: [] for s in splits}
        for seed in cfg.seeds if scripted else ():
            run_dir = base / "train" / f"seed{seed}"
            train_cfg = dataclasses.replace(cfg.train, dataset=str(data), output_dir=str(run_dir), seed=seed,
                                            resume=latest_checkpoint(run_dir / "checkpoints") is not None)
            refuse_changed_training(run_dir, train_cfg)
            with stages.stage(f"{name}: train seed {seed}", (run_dir / "policy").exists()) as running:
                if running:
                    train(train_cfg, show_progress)
            for split in splits:
                out = base / "eval" / f"seed{seed}" / split
                with stages.stage(f"{name}: eval seed {seed} {split}", False):
                    results[split].append(evaluate(dataclasses.replace(
                        cfg.eval, policy=str(run_dir / "policy"), split=split, tasks=tasks, episodes=cfg.trials,
                        output_dir=str(out), resume=(out / JOURNAL).is_file()), show_progress))
        suites[name] = suite_figures(tasks, scripts, demos, results, cfg.trials, len(cfg.seeds))
        if scripted:
            suites[name]["policy_parameters"] = parameters(base / "train" / f"seed{cfg.seeds[0]}" / "policy")
    summary = summarize(suites, reasons, stages, cfg)
    save_yaml(cfg, root / "config.yaml")
    atomic_write_json(root / "libero.json", summary)
    atomic_write_text(root / "libero.md", markdown(summary))
    return summary


def suite_figures(tasks: list[str], scripts: dict[str, str], demos: dict[str, int], results: dict[str, list[dict]],
                  trials: int, seeds: int) -> dict:
    """One suite: per task (pooled over seeds) success, Wilson interval and steps to success,
    demos and why there is no expert; the suite's rate per seed, mean and pooled interval; the
    language checks paired scene by scene with the train split. A suite without any scripted
    task has no policy: every trial counts as a failure."""
    train = results.get("train") or []
    per_task = {}
    for t in tasks:
        rows = [r["per_task"][t] for r in train]
        k, n = sum(r["successes"] for r in rows), sum(r["episodes"] for r in rows) or trials * seeds
        steps = [d["length"] for r in train for d in r["episodes_detail"] if d["task"] == t and d["success"]]
        per_task[t] = {"success_rate": k / n, "ci95": list(wilson_interval(k, n)), "successes": k, "trials": n,
                       "steps_to_success": float(np.mean(steps)) if steps else None, "demos": demos[t],
                       "expert": not scripts[t], **({"no_expert": scripts[t]} if scripts[t] else {})}
    if train:
        summary = seed_summary(train)
    else:
        n = trials * len(tasks) * seeds
        summary = {"per_seed": [0.0] * seeds, "mean": 0.0, "sd": 0.0, "pooled": 0.0,
                   "pooled_ci95": list(wilson_interval(0, n)), "episodes": n}
    out = {"success_rate": summary["mean"], "sd": summary["sd"], "per_seed": summary["per_seed"],
           "ci95": summary["pooled_ci95"], "trials": summary["episodes"], "tasks": per_task,
           "tasks_with_expert": sum(not s for s in scripts.values()),
           "steps_to_success": _mean([r["efficiency"]["steps_to_success"] for r in train])}
    language = {s: {"success_rate": seed_summary(rs)["mean"], "vs_train": paired(train, rs)}
                for s, rs in results.items() if s != "train" and rs}
    if language:
        out["language"] = language
    return out


def parameters(policy_dir: Path) -> int:
    """Weights in a policy directory's model.safetensors (read from the header, no tensor loaded)."""
    from safetensors import safe_open

    with safe_open(str(policy_dir / "model.safetensors"), "np") as f:
        return int(sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys()))


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def summarize(suites: dict[str, dict], reasons: list[str], stages: Stages, cfg: LiberoBenchConfig) -> dict:
    """libero.json: the protocol's label, each suite, the four-suite average (only when all four
    ran), the published table and what differs from it, and the stage times."""
    average = (sum(suites[s]["success_rate"] for s in STANDARD_SUITES) / len(STANDARD_SUITES)
               if all(s in suites for s in STANDARD_SUITES) else None)
    return {
        "protocol": "reduced" if reasons else "standard",
        "differs_from_standard": reasons,
        "suites": suites,
        "average": average,
        "published": PUBLISHED,
        "differences_from_published": [
            "demonstrations from vlaforge's scripted experts, not LIBERO's human teleoperation; tasks without a "
            "script have none and count as failures",
            f"a policy of {_millions(suites)} trained from scratch for {cfg.train.steps} steps per suite "
            f"(head {cfg.train.policy.head}), with no robot or vision-language pretraining, on the machine in `machine`",
            f"{len(cfg.seeds)} training seed(s) per suite; published figures are mostly one run",
        ],
        "seeds": {"train": list(cfg.seeds), "collect_scenes_from": cfg.collect.seed, "eval_scenes_from": cfg.eval.seed},
        "stage_seconds": stages.seconds,
        "reused_stages": stages.reused,
        "machine": system_info(),
        "code": git_commit(),
    }


def _millions(suites: dict[str, dict]) -> str:
    sizes = sorted({s["policy_parameters"] for s in suites.values() if "policy_parameters" in s})
    return " / ".join(f"{n / 1e6:.1f}M" for n in sizes) + " parameters" if sizes else "no trained policy"


def markdown(summary: dict) -> str:
    """The suite table beside the published averages."""
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}"  # noqa: E731
    label = summary["protocol"] + ("" if not summary["differs_from_standard"] else
                                   " (" + "; ".join(summary["differs_from_standard"]) + ")")
    lines = [f"# LIBERO, {label}", "", "| suite | success % | 95% CI | tasks with an expert | steps to success |",
             "|---|---|---|---|---|"]
    for name, s in summary["suites"].items():
        lines.append(f"| {name} | {pct(s['success_rate'])} | [{pct(s['ci95'][0])}, {pct(s['ci95'][1])}] | "
                     f"{s['tasks_with_expert']}/{len(s['tasks'])} | "
                     f"{'n/a' if s['steps_to_success'] is None else round(s['steps_to_success'])} |")
    lines.append(f"| **average** | {pct(summary['average'])} | | | |")
    for name, s in summary["suites"].items():
        for split, c in s.get("language", {}).items():
            lo, hi = c["vs_train"]["paired_bootstrap_ci95"]
            lines.append(f"\n{name}, `{split}` instructions: {pct(c['success_rate'])}% "
                         f"(train minus this: {100 * c['vs_train']['difference']:+.1f} points, paired 95% CI "
                         f"[{100 * lo:+.1f}, {100 * hi:+.1f}])")
    lines += ["", "| published | average % | source | notes |", "|---|---|---|---|"]
    lines += [f"| {p['policy']} | {p['average']} | {p['source']} | {p['notes']} |" for p in summary["published"]]
    lines += ["", "What differs from the published runs:", *[f"- {d}" for d in summary["differences_from_published"]]]
    return "\n".join(lines) + "\n"
