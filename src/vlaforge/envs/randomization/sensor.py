"""Sensor and timing imperfections as gymnasium wrappers: they change what the policy sees and
when its actions take effect, never the simulation itself."""

from __future__ import annotations

import math
from collections import deque

import gymnasium as gym
import numpy as np

from vlaforge.envs.config import SensorRandomization
from vlaforge.envs.randomization.ranges import episode_rng, uniform

SENSOR_SALT, LATENCY_SALT = 0x5E45, 0x1A7E


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of uint8 (..., H, W, C) images, edges replicated."""
    if sigma <= 0:
        return images
    r = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = images.astype(np.float32)
    for axis in (-3, -2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def shift_image(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Shift (..., H, W, C) images right by ``dx`` and down by ``dy`` pixels, edges replicated."""
    if dx == 0 and dy == 0:
        return images
    h, w = images.shape[-3], images.shape[-2]
    pad = [(0, 0)] * (images.ndim - 3) + [(abs(dy), abs(dy)), (abs(dx), abs(dx)), (0, 0)]
    padded = np.pad(images, pad, mode="edge")
    y0, x0 = abs(dy) - dy, abs(dx) - dx
    return padded[..., y0 : y0 + h, x0 : x0 + w, :]


class SensorNoise(gym.Wrapper):
    """Image noise, blur, calibration offset and dropped frames; proprio noise. Drawn per episode
    from the reset seed, so an episode's corruption is reproducible."""

    def __init__(self, env: gym.Env, cfg: SensorRandomization) -> None:
        super().__init__(env)
        self.cfg = cfg
        self._rng: np.random.Generator | None = None
        self.params: dict = {}
        self._last_image: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._rng = rng = episode_rng(seed, SENSOR_SALT, self._rng)
        c = self.cfg
        self.params = {
            "image_noise": uniform(rng, c.image_noise),
            "blur": uniform(rng, c.blur),
            "proprio_noise": uniform(rng, c.proprio_noise),
            "drop_frames": uniform(rng, c.drop_frames),
            "camera_offset": [int(round(v)) for v in uniform(rng, c.camera_offset, 2)],
        }
        info["domain"] = {**info.get("domain", {}), "sensor": dict(self.params)}
        self._last_image = None
        return self._corrupt(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._corrupt(obs), reward, terminated, truncated, info

    def _corrupt(self, obs: dict) -> dict:
        p, rng = self.params, self._rng
        obs = dict(obs)
        if self._last_image is not None and p["drop_frames"] > 0 and rng.random() < p["drop_frames"]:
            obs["image"] = self._last_image
        else:
            image = shift_image(obs["image"], *p["camera_offset"])
            image = gaussian_blur(image, p["blur"])
            if p["image_noise"] > 0:
                noisy = image + rng.normal(0.0, p["image_noise"], image.shape)
                image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
            obs["image"] = self._last_image = image
        if p["proprio_noise"] > 0:
            state = obs["state"] + rng.normal(0.0, p["proprio_noise"], obs["state"].shape)
            obs["state"] = state.astype(np.float32)
        return obs


class ActionLatency(gym.Wrapper):
    """Each commanded action takes effect exactly ``k`` steps later (k drawn per episode); the
    first ``k`` steps execute ``noop``. ``info["executed_action"]`` says what ran."""

    def __init__(self, env: gym.Env, steps: list[int], noop: np.ndarray) -> None:
        super().__init__(env)
        self.steps, self.noop = steps, np.asarray(noop, dtype=np.float32)
        self._rng: np.random.Generator | None = None
        self.k = 0
        self._queue: deque = deque()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._rng = episode_rng(seed, LATENCY_SALT, self._rng)
        lo, hi = self.steps
        self.k = int(self._rng.integers(lo, hi + 1))
        self._queue = deque([self.noop.copy() for _ in range(self.k)])
        domain = info.get("domain", {})
        info["domain"] = {**domain, "sensor": {**domain.get("sensor", {}), "latency": self.k}}
        return obs, info

    def step(self, action):
        self._queue.append(np.asarray(action, dtype=np.float32).copy())
        executed = self._queue.popleft()
        obs, reward, terminated, truncated, info = self.env.step(executed)
        info["executed_action"] = executed
        return obs, reward, terminated, truncated, info
