"""Tabletop simulation speed on one core: render-only frames/s and full env steps/s.

    python benchmarks/render_fps.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import stage, write

import vlaforge  # noqa: F401  (sets MUJOCO_GL)
from vlaforge.envs.tabletop import TabletopEnv

FRAMES = 1000


def measure(size: int) -> dict:
    """Render-only frames/s and full env steps/s (random actions) at one image size."""
    env = TabletopEnv("pick_place", image_size=size)
    env.reset(seed=0)
    env.render_views()
    t = time.perf_counter()
    for _ in range(FRAMES):
        env.render_views()
    render_fps = FRAMES / (time.perf_counter() - t)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    t, steps = time.perf_counter(), 0
    while steps < FRAMES:
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 4))
        steps += 1
        if term or trunc:
            env.reset(seed=steps)
    step_fps = steps / (time.perf_counter() - t)
    return {"image_size": size, "render_fps": round(render_fps, 1), "env_steps_per_s": round(step_fps, 1),
            "physics_substeps_per_step": env._substeps}


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for size in (64, 128):
        with stage(f"image {size}"):
            rows.append(measure(size))
    write("render_fps", {"target_render_fps_64": 200, "render_fps_64": rows[0]["render_fps"]}, rows,
          "Tabletop rendering and stepping speed (one core, EGL, shadows/reflections off)",
          seeds={"scene": 0, "random_actions": 0})


if __name__ == "__main__":
    main()
