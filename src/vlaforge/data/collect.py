"""Roll scripted experts in parallel worker processes and write a LeRobot v3.0 dataset.

Workers simulate, render and PNG-encode; the parent only writes, one episode at a time, so an
interrupted collection leaves every finished episode on disk (``--resume`` continues it).
Only successful expert episodes are kept. With ``noise > 0`` the executed action is perturbed
while the expert's clean action is recorded (DART), which teaches the policy to recover.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vlaforge.config import save_yaml
from vlaforge.data import video
from vlaforge.data.config import CollectConfig
from vlaforge.data.dataset import DatasetWriter, EpisodeFrames, encode_png, make_features
from vlaforge.data.manifest import write_manifest
from vlaforge.envs.randomization.wrapper import job_domain, worker_domain_env
from vlaforge.pool import single_thread
from vlaforge.seeds import EVAL_SEEDS, RETRY_STRIDE, TASK_STRIDE

RETRIES = 5
# The columns collect adds to each episode's metadata row (all rows carry all, null where unset).
EPISODE_COLUMNS = {"vlaforge/task": pa.string(), "vlaforge/seed": pa.int64(), "vlaforge/success": pa.bool_(),
                   "vlaforge/achieved": pa.string(), "vlaforge/domain": pa.string()}


def scene_seed(first: int, task_index: int, episode: int) -> int:
    """The scene seed of a task's ``episode``-th demonstration (retries add ``RETRY_STRIDE``)."""
    return first + task_index * TASK_STRIDE + episode


def read_scenes(path: str, tasks: list[str]) -> list[tuple[str, int]]:
    """The (task, seed) scenes of a selection file written by ``vlaforge active``."""
    try:
        scenes = [(str(s["task"]), int(s["seed"])) for s in json.loads(Path(path).read_text())["scenes"]]
    except FileNotFoundError:
        raise FileNotFoundError(f"scene selection {path} does not exist") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"scene selection {path} is unreadable (need {{'scenes': [{{'task', 'seed'}}]}}): {e}") from None
    unknown = sorted({t for t, _ in scenes} - set(tasks))
    if unknown or not scenes:
        raise ValueError(f"scene selection {path} names tasks {unknown} outside --env.tasks {tasks}" if unknown
                         else f"scene selection {path} holds no scenes")
    return scenes


def run_expert_episode(
    suite_name: str, env_cfg: dict, split: str, task: str, seed: int, noise: float, post_success_steps: int = 0,
    domain: dict | None = None, keep_failures: bool = False, video_codec: str = "",
) -> dict | None:
    """One expert episode (retrying new scenes if the expert fails); the cameras encoded here,
    in the worker, as each frame's PNG bytes or (``video_codec``) one MP4 per camera.

    In a randomized ``domain`` the expert still acts on the true simulator state, so
    demonstrations stay correct while what the policy will see (and how actions land) varies.

    The expert keeps acting, without noise, for ``post_success_steps`` steps after the success
    step: a success that completes on a release (stacking) otherwise leaves a single frame of
    the opening gripper in the data, too few for a policy to learn when to let go.

    With ``keep_failures`` the first attempt is returned whatever its outcome, with what it
    achieved instead (tabletop: ``tasks.achieved``) for hindsight relabelling.
    """
    from vlaforge.envs import get_suite

    suite = get_suite(suite_name)
    env = worker_domain_env(suite_name, task, split, env_cfg, domain)
    sim = env.unwrapped
    expert = suite.make_expert(sim)
    record_points = bool(suite.env_state_columns(env_cfg["cameras"]))
    for attempt in range(1 if keep_failures else RETRIES):
        s = seed + attempt * RETRY_STRIDE
        rng = np.random.default_rng(s)
        obs, reset_info = env.reset(seed=s)
        expert.reset()
        held_at_start = _achieved(sim)
        images, states, actions, env_states = [], [], [], []
        success, after = False, 0
        for _ in range(sim.max_steps + post_success_steps):
            action = np.asarray(expert.act(), dtype=np.float32)
            images.append(obs["image"])
            states.append(obs["state"])
            actions.append(action)
            if record_points:
                env_states.append(sim.task_points())
            executed = action.copy()
            if noise > 0 and not success:  # on the translation (the first three, or fewer, dimensions)
                moved = min(3, len(executed))
                executed[:moved] += rng.normal(0.0, noise, moved).astype(np.float32)
            obs, _, _, truncated, info = env.step(np.clip(executed, -1, 1))
            success = success or bool(info["success"])
            after += success
            if (truncated and not success) or after > post_success_steps:
                break
        if success or keep_failures:
            imgs = np.stack(images)
            return {
                "success": success,
                "achieved": [t for t in _achieved(sim) if t not in held_at_start],
                "instruction": info["instruction"],
                "images": imgs,
                "encoded": [video.encode(imgs[:, v], suite.fps, video_codec) if video_codec else [encode_png(f) for f in imgs[:, v]]
                            for v in range(imgs.shape[1])],
                "state": np.stack(states),
                "action": np.stack(actions),
                "env_state": np.stack(env_states) if env_states else None,
                "domain": reset_info.get("domain"),
            }
    return None


def _achieved(sim) -> list[str]:
    """The instructions that hold in the simulator's current state (tabletop), else none."""
    if not hasattr(sim, "episode") or not hasattr(sim, "state"):
        return []
    from vlaforge.envs.tabletop.tasks import achieved

    return achieved(sim.episode, sim.state())


def _check_resume(out: Path, run: dict) -> None:
    """Refuse to resume a collection whose suite, split, tasks, env or domain differ from the
    dataset's (its episodes would mix two definitions under one info.json)."""
    info = out / "meta/info.json"
    if not info.is_file():
        return
    try:
        recorded = json.loads(info.read_text()).get("vlaforge", {})
    except (json.JSONDecodeError, AttributeError):
        return  # LeRobotDataset names the corrupt file when the writer opens it
    changed = [k for k in run if k in recorded and json.loads(json.dumps(run[k])) != recorded[k]]
    if changed:
        raise ValueError(f"cannot resume {out}: its {', '.join(changed)} differ from this run's "
                         f"(recorded in {info}); collect into a new --output instead (nothing was changed)")


def _job(args: tuple) -> dict | None:
    return run_expert_episode(*args)


def collect(cfg: CollectConfig, show_progress: bool = True) -> Path:
    """Collect ``episodes_per_task`` successful expert episodes for each task."""
    from vlaforge.envs import get_suite

    suite = get_suite(cfg.env.suite)
    cfg = replace(cfg, env=suite.resolve(cfg.env))
    tasks = suite.check(cfg.env.tasks, cfg.split)
    if not 1 <= cfg.episodes_per_task <= TASK_STRIDE:
        raise ValueError(f"episodes_per_task must be in [1, {TASK_STRIDE}]")
    video.check_codec(cfg.video_codec)
    if cfg.workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = one per core), got {cfg.workers}")
    if not (math.isfinite(cfg.noise) and cfg.noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0 (std of the executed-action noise), got {cfg.noise}")
    if cfg.scenes:
        scenes = read_scenes(cfg.scenes, tasks)
    else:
        scenes = [(task, scene_seed(cfg.seed, t, j)) for t, task in enumerate(tasks) for j in range(cfg.episodes_per_task)]
    first, last = min(s for _, s in scenes), max(s for _, s in scenes) + (RETRIES - 1) * RETRY_STRIDE
    if first < 0 or last >= EVAL_SEEDS:
        raise ValueError(f"collection seeds {first}..{last} must lie in [0, {EVAL_SEEDS}), below the evaluation seeds")
    domain = job_domain(cfg.domain)
    out = Path(cfg.output)
    features = make_features(cfg.env.cameras, cfg.env.image_size, list(suite.state_names), list(suite.action_names),
                             suite.env_state_columns(cfg.env.cameras), cfg.video_codec if cfg.video else "", suite.fps)
    extra = {"vlaforge": {"suite": suite.name, "split": cfg.split, "tasks": tasks, "env": asdict(cfg.env) | {"tasks": tasks},
                          "domain": domain}}
    if cfg.resume:
        _check_resume(out, extra["vlaforge"])
    writer = DatasetWriter(out, features, suite.fps, resume=cfg.resume, extra_info=extra, extra_columns=EPISODE_COLUMNS)
    save_yaml(cfg, out / "collect_config.yaml")
    done_seeds = {(e.get("vlaforge/task"), e.get("vlaforge/seed")) for e in writer.episodes}
    jobs = [(suite.name, asdict(cfg.env), cfg.split, task, seed, cfg.noise, cfg.post_success_steps, domain,
             cfg.keep_failures, cfg.video_codec if cfg.video else "")
            for task, seed in scenes if (task, seed) not in done_seeds]
    failed = 0
    progress = Progress(
        TextColumn("[bold]collect"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not show_progress
    )
    with progress:
        bar = progress.add_task("collect", total=len(jobs))
        results = cfg.map(_job, jobs, single_thread)
        for (_, _, _, task, seed, *_), result in zip(jobs, results):
            if result is None:
                failed += 1
            else:
                writer.add_episode(
                    EpisodeFrames(result["images"], result["state"], result["action"], result["instruction"],
                                  result["env_state"]),
                    encoded_images=result["encoded"],
                    extra={"vlaforge/task": task, "vlaforge/seed": seed, "vlaforge/success": result["success"],
                           "vlaforge/achieved": json.dumps(result["achieved"]),
                           "vlaforge/domain": json.dumps(result["domain"]) if domain else None},
                )
            progress.advance(bar)
    write_manifest(out)
    if failed:
        print(f"warning: the expert failed {RETRIES} scenes in a row for {failed} jobs; those were skipped")
    return out

