"""Closed-loop evaluation in parallel worker processes, written as eval/results.json + report.html.

Each worker loads the policy once and runs whole episodes; seeds are ``seed + episode`` per task,
so a result can be reproduced episode by episode. The policy predicts a chunk of actions and the
first ``action_horizon`` of them are executed before it is queried again (receding horizon).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vlaforge.config import save_yaml
from vlaforge.eval.config import EvalConfig
from vlaforge.eval.stats import beta_posterior_interval, clopper_pearson_interval, wilson_interval
from vlaforge.files import atomic_write_text, read_jsonl, tmp_path
from vlaforge.runtime.episode import EpisodeJob, StepHook, run_chunks
from vlaforge.seeds import EVAL_SEEDS

_STATE: dict = {}


def load_worker_policy(policy_dir: str) -> None:
    """Worker initializer: one torch thread and the policy, loaded once per worker process."""
    import torch

    from vlaforge.runtime.policy import load_policy

    torch.set_num_threads(1)
    _STATE["policy"] = load_policy(policy_dir)


def worker_policy():
    """The policy ``load_worker_policy`` loaded into this worker."""
    return _STATE["policy"]


def run_episode(job: EpisodeJob) -> dict:
    """One episode's outcome (success, length, efficiency, frames when ``job.record``).

    Videos show the simulator's camera at 128 px (visual randomization included, sensor
    corruption not: that is applied to the policy's 64 px input only)."""
    from vlaforge.envs import get_suite
    from vlaforge.envs.randomization.wrapper import worker_domain_env

    policy = worker_policy()
    env = worker_domain_env(job.suite, job.task, job.split, job.env_cfg, job.domain)
    sim = env.unwrapped
    obs, info = env.reset(seed=job.seed)
    drawn = info.get("domain")
    policy.reset(job.seed)
    meter = _Efficiency(obs, sim if job.record else None)
    t0 = time.perf_counter()
    end = run_chunks(env, obs, lambda o: policy.act(o)[:job.horizon], [meter])
    return {
        "task": job.task,
        "seed": job.seed,
        "instruction": end.info["instruction"],
        "success": end.success,
        "length": end.steps,
        # Efficiency: simulated seconds at the suite's control rate, wall seconds of this
        # episode (policy + simulation), measured end-effector path (m), actuator work (J; NaN
        # where the simulator reports none).
        "sim_seconds": end.steps / get_suite(job.suite).fps,
        "wall_seconds": time.perf_counter() - t0,
        "path_length": meter.path,
        "energy": meter.energy,
        "frames": np.stack(meter.frames) if job.record else None,
        **({"domain": drawn} if drawn else {}),
    }


class _Efficiency(StepHook):
    """End-effector path length (m, from the proprio position), actuator work (J, NaN where the
    simulator reports none) and, with a simulator to render, the 128 px frames of the rollout."""

    def __init__(self, obs: dict, sim=None) -> None:
        self.ee = np.asarray(obs["state"][:3], dtype=np.float64)
        self.path, self.energy, self.sim = 0.0, 0.0, sim
        self.frames = [sim.render_views(128)[0]] if sim is not None else []

    def after(self, action: np.ndarray, obs: dict, reward: float, info: dict) -> None:
        moved = np.asarray(obs["state"][:3], dtype=np.float64)
        self.path, self.ee = self.path + float(np.linalg.norm(moved - self.ee)), moved
        self.energy += float(info.get("energy", np.nan))
        if self.sim is not None:
            self.frames.append(self.sim.render_views(128)[0])


def _default_tasks(suite, split: str, trained: list[str]) -> list[str]:
    """The policy's tasks within a split that names its own tasks (a difficulty group), or all of
    the split's tasks when the policy was trained on none of them (held-out tasks, zero-shot)."""
    if split not in suite.split_tasks:
        return list(trained)
    named = suite.split_tasks[split]
    return [t for t in named if t in trained] or list(named)


def evaluate(cfg: EvalConfig, show_progress: bool = True) -> dict:
    """Roll the policy out and write results.json and report.html; returns the results dict."""
    from vlaforge.envs import get_suite
    from vlaforge.envs.randomization import job_domain
    from vlaforge.eval.report import render_eval_report
    from vlaforge.files import atomic_write_json
    from vlaforge.runtime.policy import load_policy

    if not cfg.policy:
        raise ValueError("eval needs --policy=DIR (a policy directory)")
    if cfg.episodes < 1:
        raise ValueError("episodes must be >= 1")
    if cfg.perturb:
        raise ValueError("--perturb sweeps run through vlaforge.eval.robustness.sweep (`vlaforge eval` calls it)")
    if cfg.seed < EVAL_SEEDS:
        warnings.warn(f"evaluation seed {cfg.seed} is below {EVAL_SEEDS}: episodes may replay training scenes", stacklevel=2)
    policy = load_policy(cfg.policy)
    meta = policy.meta
    if not meta.get("suite") or not meta.get("env"):
        raise ValueError(f"policy {cfg.policy} does not record the suite it was trained on")
    suite = get_suite(cfg.suite or meta["suite"])
    tasks = suite.check(cfg.tasks or _default_tasks(suite, cfg.split, meta["tasks"]), cfg.split)
    env_cfg = dict(meta["env"])
    if cfg.max_steps:
        env_cfg["max_steps"] = cfg.max_steps
    horizon = cfg.horizon(policy.cfg.chunk_size)
    domain = job_domain(cfg.domain)
    out = Path(cfg.output_dir) if cfg.output_dir else Path(cfg.policy).parent / "eval" / cfg.split
    run = {"policy": policy_fingerprint(Path(cfg.policy)), "suite": suite.name, "split": cfg.split, "env": env_cfg,
           "action_horizon": horizon, "domain": domain}
    records = open_journal(out / JOURNAL, run, cfg.resume)
    save_yaml(cfg, out / "config.yaml")
    done = {(r["task"], r["seed"]) for r in records}
    jobs = [
        EpisodeJob(suite.name, env_cfg, cfg.split, task, cfg.seed + i, horizon, i < cfg.videos_per_task, domain)
        for task in tasks
        for i in range(cfg.episodes)
        if (task, cfg.seed + i) not in done
    ]
    wanted = {(task, cfg.seed + i) for task in tasks for i in range(cfg.episodes)}
    records = [r for r in records if (r["task"], r["seed"]) in wanted]
    t0 = time.perf_counter()
    progress = Progress(
        TextColumn(f"[bold]eval {cfg.split}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), disable=not show_progress,
    )
    with progress:
        bar = progress.add_task("eval", total=len(wanted), completed=len(records), status="")
        with (out / JOURNAL).open("a") as journal:
            for rec in cfg.map(run_episode, jobs, load_worker_policy, (cfg.policy,), ordered=False):
                write_video(rec, out)
                journal.write(json.dumps(rec) + "\n")
                journal.flush()
                os.fsync(journal.fileno())
                records.append(rec)
                rate = sum(r["success"] for r in records) / len(records)
                progress.update(bar, advance=1, status=f"success {rate:.0%}")
    wall = time.perf_counter() - t0
    records.sort(key=lambda r: (tasks.index(r["task"]), r["seed"]))
    results = summarize(records, tasks, suite.name, cfg.split, cfg.policy, cfg.seed, wall)
    results["domain"] = {"name": cfg.domain.preset or ("source" if domain is None else "custom"), "ranges": domain}
    results["trained_in"] = meta["suite"]
    results["resumed_episodes"] = len(wanted) - len(jobs)
    render_eval_report(results, out)
    atomic_write_json(out / "results.json", results)
    return results


JOURNAL = "episodes.jsonl"


def policy_fingerprint(policy_dir: Path) -> str:
    """sha256 over the policy's config.json (which records its weights' and normaliser's sha256)
    and deploy.json if any: a retrained or re-exported policy is another policy."""
    from vlaforge.files import sha256_file

    return "".join(sha256_file(policy_dir / n)[:16] for n in ("config.json", "deploy.json") if (policy_dir / n).is_file())


def open_journal(path: Path, run: dict, resume: bool) -> list[dict]:
    """Start ``path`` (first line: what defines the evaluation) or, with ``resume``, read back
    its finished episodes; a resume of another evaluation is refused with the differences, a
    torn last line (killed mid-write) dropped. A fresh start removes the previous results.json
    first, so config.yaml never sits beside results of another run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not resume or not path.is_file():
        if resume:
            warnings.warn(f"--resume: {path} does not exist, evaluating from the start", stacklevel=3)
        (path.parent / "results.json").unlink(missing_ok=True)
        atomic_write_text(path, json.dumps({"run": run}) + "\n")
        return []
    rows = read_jsonl(path, "the evaluation", "run without --resume to start over")
    if not rows or not isinstance(rows[0], dict) or not isinstance(rows[0].get("run"), dict):
        raise ValueError(f"{path} is not an evaluation journal; run without --resume to start over")
    header, records = rows[0]["run"], rows[1:]
    changed = [f"{k}: {header.get(k)!r} -> {run[k]!r}" for k in run if json.dumps(header.get(k)) != json.dumps(run[k])]
    if changed:
        raise ValueError(f"--resume would mix two evaluations in {path.parent} ({'; '.join(changed)}); "
                         "run without --resume to start over, or choose another --output_dir")
    atomic_write_text(path, "".join(json.dumps(x) + "\n" for x in [{"run": header}, *records]))
    return records


def write_video(record: dict, out: Path) -> None:
    """Write the record's rollout GIF under ``out/videos`` (atomically) and drop its frames."""
    frames = record.pop("frames", None)
    if frames is None:
        return
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    gif = videos / f"{record['task']}_{record['seed']}.gif"
    imageio.mimsave(tmp_path(gif), list(frames), format="GIF", duration=0.05, loop=0)
    os.replace(tmp_path(gif), gif)


def brief(results: dict) -> dict:
    """The figures a comparison across evaluations keeps of one results.json (files written
    before ``successes`` was recorded get it from their per-task counts)."""
    per_task = results["per_task"]
    return {key: results[key] for key in ("success_rate", "ci95", "episodes")} | {
        "successes": results["successes"] if "successes" in results
        else sum(v["successes"] for v in per_task.values()),
        "per_task": {t: v["success_rate"] for t, v in per_task.items()}}


EFFICIENCY = ("sim_seconds", "wall_seconds", "path_length", "energy")


def efficiency(records: list[dict]) -> dict:
    """How economically the successes were reached: mean steps, simulated and wall seconds to
    success, end-effector path (m) and actuator work (J) over the successful episodes (None
    when there are none), and the same path and work over all episodes."""
    wins = [r for r in records if r["success"]]
    mean = lambda rs, k: float(np.mean([r[k] for r in rs])) if rs and k in rs[0] else None  # noqa: E731
    out = {"successful_episodes": len(wins), "steps_to_success": mean(wins, "length")}
    for key in EFFICIENCY:
        out[f"{key}_to_success"] = mean(wins, key)
    return out | {"path_length_all": mean(records, "path_length"), "energy_all": mean(records, "energy")}


def summarize(records: list[dict], tasks: list[str], suite: str, split: str, policy: str, seed: int, wall: float) -> dict:
    """The results.json schema of DESIGN.md: Wilson 95% intervals, and overall also the exact
    (Clopper-Pearson) interval and the Beta-posterior credible interval."""
    per_task = {}
    for task in tasks:
        rs = [r for r in records if r["task"] == task]
        k = sum(r["success"] for r in rs)
        per_task[task] = {
            "episodes": len(rs),
            "successes": k,
            "success_rate": k / len(rs),
            "ci95": list(wilson_interval(k, len(rs))),
            "mean_episode_length": float(np.mean([r["length"] for r in rs])),
            "efficiency": efficiency(rs),
        }
    k = sum(r["success"] for r in records)
    return {
        "suite": suite,
        "split": split,
        "episodes": len(records),
        "successes": k,
        "success_rate": k / len(records),
        "ci95": list(wilson_interval(k, len(records))),
        "ci95_exact": list(clopper_pearson_interval(k, len(records))),  # Clopper-Pearson: never under 95% coverage
        "posterior95": list(beta_posterior_interval(k, len(records))),  # uniform Beta prior
        "per_task": per_task,
        "mean_episode_length": float(np.mean([r["length"] for r in records])),
        "efficiency": efficiency(records),
        "wall_seconds": wall,
        "policy": str(policy),
        "seed": seed,
        "episodes_detail": [
            {key: r[key] for key in ("task", "seed", "instruction", "success", "length", *EFFICIENCY, "domain")
             if key in r}
            for r in records
        ],
    }

