"""Env, camera and domain-randomization settings (`collect --env.*`, `--domain.*`). The config
machinery (YAML, overrides, the CLI) is vlaforge/config.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EnvConfig:
    suite: str = field(default="tabletop", metadata={"help": "suite name (see `vlaforge list`)"})
    tasks: list[str] = field(default_factory=list, metadata={"help": "task families; empty = every task"})
    image_size: int = field(default=64, metadata={"help": "camera resolution in pixels (64 or 128)"})
    cameras: list[str] = field(default_factory=list, metadata={"help": "camera views; empty = the suite's default"})
    max_steps: int = field(default=0, metadata={"help": "episode step limit; 0 = the suite's default"})
    num_objects: int = field(default=3, metadata={"help": "objects on the table (2 or 3)"})


def _range(lo: float, hi: float, doc: str):
    return field(default_factory=lambda: [lo, hi], metadata={"help": doc})


@dataclass
class VisualRandomization:
    """Appearance ranges, each ``[lo, hi]`` sampled uniformly per episode; defaults leave it nominal."""

    object_color: list[float] = _range(0.0, 0.0, "RGB offset added per channel to each task object's colour")
    surface_color: list[float] = _range(0.0, 0.0, "RGB offset per channel of table and backdrop (backdrop shown)")
    texture: float = field(default=0.0, metadata={"help": "probability of a random texture on table and backdrop"})
    light_intensity: list[float] = _range(1.0, 1.0, "scale of every light's brightness")
    light_direction: list[float] = _range(0.0, 0.0, "tilt of the lights in degrees (switches the suite's lights on)")
    camera_position: list[float] = _range(0.0, 0.0, "offset of each camera coordinate (m)")
    camera_rotation: list[float] = _range(0.0, 0.0, "rotation about each camera axis (degrees)")
    camera_fov: list[float] = _range(0.0, 0.0, "field-of-view offset (degrees)")


@dataclass
class PhysicsRandomization:
    """Scales of the nominal physical parameters, each ``[lo, hi]`` sampled per episode."""

    friction: list[float] = _range(1.0, 1.0, "scale of every contact friction coefficient")
    mass: list[float] = _range(1.0, 1.0, "scale of every body's mass and inertia")
    damping: list[float] = _range(1.0, 1.0, "scale of every joint's damping")
    actuator_gain: list[float] = _range(1.0, 1.0, "scale of every actuator's gain (servo stiffness)")


@dataclass
class SensorRandomization:
    """Sensor and timing imperfections, each ``[lo, hi]`` sampled per episode."""

    image_noise: list[float] = _range(0.0, 0.0, "std of Gaussian pixel noise (0-255 scale)")
    blur: list[float] = _range(0.0, 0.0, "std of Gaussian blur (pixels)")
    proprio_noise: list[float] = _range(0.0, 0.0, "std of Gaussian noise on the proprio state")
    latency: list[int] = field(default_factory=lambda: [0, 0], metadata={"help": "steps each action is delayed"})
    drop_frames: list[float] = _range(0.0, 0.0, "probability per step that the camera repeats its last frame")
    camera_offset: list[float] = _range(0.0, 0.0, "image shift in pixels per axis (calibration error)")


@dataclass
class DomainConfig:
    preset: str = field(default="", metadata={"help": "a named domain (see `vlaforge list`) instead of the ranges"})
    visual: VisualRandomization = field(default_factory=VisualRandomization)
    physics: PhysicsRandomization = field(default_factory=PhysicsRandomization)
    sensor: SensorRandomization = field(default_factory=SensorRandomization)
