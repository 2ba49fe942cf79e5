"""Checking and sampling the ``[lo, hi]`` ranges of a DomainConfig.

Every range is checked once, when a wrapper is built, so a bad config fails before any episode
runs, with the offending key and the rule it breaks.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from vlaforge.config import ConfigError
from vlaforge.envs.config import DomainConfig, PhysicsRandomization, SensorRandomization, VisualRandomization

# (lowest allowed lo, highest allowed hi) per field; None = unbounded on that side.
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "visual.object_color": (-1.0, 1.0),
    "visual.surface_color": (-1.0, 1.0),
    "visual.light_intensity": (1e-3, 10.0),
    "visual.light_direction": (0.0, 89.0),
    "visual.camera_position": (-0.5, 0.5),
    "visual.camera_rotation": (-45.0, 45.0),
    "visual.camera_fov": (-40.0, 40.0),
    "physics.friction": (1e-3, 100.0),
    "physics.mass": (1e-3, 100.0),
    "physics.damping": (1e-3, 100.0),
    "physics.actuator_gain": (1e-3, 100.0),
    "sensor.image_noise": (0.0, 255.0),
    "sensor.blur": (0.0, 20.0),
    "sensor.proprio_noise": (0.0, 1.0),
    "sensor.latency": (0, 50),
    "sensor.drop_frames": (0.0, 0.99),
    "sensor.camera_offset": (-16.0, 16.0),
}
FAMILIES = {"visual": VisualRandomization, "physics": PhysicsRandomization, "sensor": SensorRandomization}


def check_domain(cfg: DomainConfig) -> None:
    """Raise ConfigError naming the first range that is malformed or outside its limits."""
    for family in FAMILIES:
        section = getattr(cfg, family)
        for f in dataclasses.fields(section):
            key = f"{family}.{f.name}"
            value = getattr(section, f.name)
            if key not in LIMITS:  # scalar probabilities
                if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                    raise ConfigError(f"domain.{key} must be a probability in [0, 1], got {value!r}")
                continue
            if not (isinstance(value, list) and len(value) == 2):
                raise ConfigError(f"domain.{key} must be a range [lo, hi], got {value!r}")
            lo, hi = value
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ConfigError(f"domain.{key} must be finite, got {value}")
            if lo > hi:
                raise ConfigError(f"domain.{key}: lo > hi in {value}")
            low, high = LIMITS[key]
            if lo < low or hi > high:
                raise ConfigError(f"domain.{key} = {value} leaves the allowed range [{low}, {high}]")


def is_nominal(section) -> bool:
    """Whether a family's config equals its defaults (then its wrapper is not applied at all)."""
    return section == type(section)()


def uniform(rng: np.random.Generator, bounds: list[float], size: int | None = None) -> float | np.ndarray:
    """A draw from [lo, hi] (lo itself when the range is a point, so point ranges use no randomness)."""
    lo, hi = bounds
    if lo == hi:
        return lo if size is None else np.full(size, float(lo))
    return float(rng.uniform(lo, hi)) if size is None else rng.uniform(lo, hi, size)


def episode_rng(seed: int | None, salt: int, previous: np.random.Generator | None) -> np.random.Generator:
    """The generator of one randomizer for an episode: from the reset seed (reproducible), or the
    previous episode's generator when reset is called without one."""
    if seed is not None:
        return np.random.default_rng([seed, salt])
    return previous if previous is not None else np.random.default_rng()
