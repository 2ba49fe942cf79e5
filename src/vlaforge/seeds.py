"""Every seed range and per-step seed rule in one place, so no two uses of randomness collide.

Scene seeds (an env reset's seed draws the scene and the instruction):

    [0, RL_SCENES)            demonstrations: ``collect`` draws first + task * TASK_STRIDE + episode,
                              + RETRY_STRIDE per expert retry (and refuses to reach EVAL_SEEDS)
    [RL_SCENES, GROUNDING_SCENES)  safe-RL training rollouts: RL_SCENES + seed * TASK_STRIDE + episode
    [GROUNDING_SCENES, EVAL_SEEDS)  grounding scenes (data/grounding.py): GROUNDING_SCENES + task * TASK_STRIDE + i
    [EVAL_SEEDS, ...)         evaluation: EVAL_SEEDS + episode, per task, so no evaluation
                              episode replays a scene a policy was trained on

Per-step seeds make a run reproducible step by step and resumable from any checkpoint: the
training step's dropout and a teacher's sampling noise draw from ``step_seed(seed, step)``, and
side streams from ``seed + ALIGN_STREAM`` (alignment frames) and ``seed + GROUNDING_STREAM``
(grounding frames).
"""

from __future__ import annotations

EVAL_SEEDS = 10**9
RL_SCENES = 700_000_000
GROUNDING_SCENES = 900_000_000
TASK_STRIDE = 100_000  # scene seeds per task (and the most demonstrations per task)
RETRY_STRIDE = 10_000_000  # added to a scene seed per expert retry
ALIGN_STREAM = 7919  # offset of the alignment frames' stream from the batch stream
GROUNDING_STREAM = 7927  # offset of the grounding frames' stream from the batch stream
STEP_PRIME = 1_000_003


def step_seed(seed: int, step: int) -> int:
    """The seed of one training step of a run seeded ``seed`` (distinct for every pair used)."""
    return seed * STEP_PRIME + step
