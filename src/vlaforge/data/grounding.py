"""Grounding scenes: simulated frames labelled with where the instruction's target and goal are,
without any demonstration.

A policy trained on a few demonstrations per task places the named object far better on its
training scenes than on new ones (the small cell's ``target error`` figures,
benchmarks/results/small_cell.json, measured by eval/localization.py): it memorises the scenes
instead of learning to find objects. Labels for *where* things are cost nothing in simulation, so the
grounding losses (target/goal heatmaps and world positions, models/policy.py) can be trained on
many more scenes than there are demonstrations, the way VLAs co-train on grounding data from
the web (RT-2, Brohan et al. 2023; pi0.5, Physical Intelligence 2025). No expert runs: each
scene is a reset of the task's env, then a few uniformly random actions so that the gripper is
seen away from its start pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlaforge.pool import map_in_workers, single_thread
from vlaforge.seeds import GROUNDING_SCENES, TASK_STRIDE


@dataclass
class GroundingFrames:
    """``N`` labelled frames: images uint8 (N, V, H, W, 3), proprio state (N, S), the instruction
    of each, and the env's privileged task points (N, E) (``task_points``: target and goal xyz,
    then their image coordinates per camera)."""

    images: np.ndarray
    state: np.ndarray
    instructions: list[str]
    task_points: np.ndarray


def render_scenes(make_env, tasks: list[str], per_task: int, max_random_steps: int = 8,
                  workers: int = 1) -> GroundingFrames:
    """``per_task`` scenes of every task, drawn from the grounding seed range (seeds.py) so that
    they are neither demonstration nor evaluation scenes; ``make_env(task)`` builds the task's env
    (train split, the dataset's settings; picklable when ``workers`` > 1). Every scene is seeded
    on its own, so the same arguments give the same frames whatever the number of workers."""
    if not 1 <= per_task <= TASK_STRIDE or max_random_steps < 0 or workers < 1:
        raise ValueError(f"per_task must be in [1, {TASK_STRIDE}], max_random_steps >= 0 and workers >= 1, got "
                         f"{per_task}, {max_random_steps} and {workers}")
    # Each task's scenes in `workers` slices, so that every worker gets a share of every task.
    size = -(-per_task // workers)
    jobs = [(make_env, t, task, range(i, min(i + size, per_task)), max_random_steps)
            for t, task in enumerate(tasks) for i in range(0, per_task, size)]
    parts = list(map_in_workers(_render_part, jobs, workers, single_thread))
    return GroundingFrames(np.concatenate([p.images for p in parts]), np.concatenate([p.state for p in parts]),
                           [s for p in parts for s in p.instructions], np.concatenate([p.task_points for p in parts]))


def _render_part(job: tuple) -> GroundingFrames:
    """The scenes ``indices`` of task number ``t`` (one job of ``render_scenes``)."""
    make_env, t, task, indices, max_random_steps = job
    env = make_env(task)
    sim = env.unwrapped
    if not hasattr(sim, "task_points"):
        raise ValueError(f"grounding scenes need an env with privileged task points; {type(sim).__name__} "
                         f"({task}) has none")
    images, states, instructions, points = [], [], [], []
    for i in indices:
        seed = GROUNDING_SCENES + t * TASK_STRIDE + i
        obs, info = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        for _ in range(int(rng.integers(0, max_random_steps + 1))):
            action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        images.append(obs["image"])
        states.append(np.asarray(obs["state"], np.float32))
        instructions.append(info["instruction"])
        points.append(sim.task_points())
    env.close()
    return GroundingFrames(np.stack(images), np.stack(states), instructions, np.stack(points).astype(np.float32))
