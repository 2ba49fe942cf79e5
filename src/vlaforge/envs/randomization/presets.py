"""Named domains: training randomization presets, held-out target domains, and the severity
scale of robustness perturbations.

The ``real-proxy-*`` targets lie outside every ``dr-*`` training range on at least one axis
(listed in docs/sim2real.md): a policy meets them for the first time at evaluation, which is
the sim-to-sim stand-in for meeting a real robot.
"""

from __future__ import annotations

from typing import Callable

from vlaforge.config import ConfigError
from vlaforge.envs.config import DomainConfig, PhysicsRandomization, SensorRandomization, VisualRandomization
from vlaforge.registry import DOMAINS

TRAIN_VISUAL = VisualRandomization(
    object_color=[-0.08, 0.08], surface_color=[-0.25, 0.25], texture=0.5, light_intensity=[0.7, 1.3],
    light_direction=[0.0, 30.0], camera_position=[-0.015, 0.015], camera_rotation=[-2.0, 2.0], camera_fov=[-2.0, 2.0],
)
TRAIN_PHYSICS = PhysicsRandomization(friction=[0.7, 1.3], mass=[0.7, 1.5], damping=[0.8, 1.25], actuator_gain=[0.8, 1.25])
TRAIN_SENSOR = SensorRandomization(
    image_noise=[0.0, 6.0], blur=[0.0, 0.6], proprio_noise=[0.0, 0.003], latency=[0, 1], drop_frames=[0.0, 0.1],
    camera_offset=[-1.0, 1.0],
)
TARGETS = {
    # Shifted lighting and camera, slippery contacts, 2 steps of latency (the example).
    "real-proxy-A": DomainConfig(
        visual=VisualRandomization(light_intensity=[0.5, 0.5], light_direction=[45.0, 45.0],
                                   camera_position=[0.025, 0.025], camera_rotation=[3.0, 3.0]),
        physics=PhysicsRandomization(friction=[0.5, 0.5]),
        sensor=SensorRandomization(latency=[2, 2]),
    ),
    # Appearance: unseen colours and textures everywhere, a noisy, blurred, miscalibrated camera.
    "real-proxy-B": DomainConfig(
        visual=VisualRandomization(object_color=[-0.12, 0.12], surface_color=[-0.4, 0.4], texture=1.0),
        sensor=SensorRandomization(image_noise=[10.0, 10.0], blur=[1.0, 1.0], camera_offset=[2.0, 2.0]),
    ),
    # Dynamics: heavy objects, stiff joints, a weak servo, slippery contacts, noisy proprio, stalls.
    "real-proxy-C": DomainConfig(
        physics=PhysicsRandomization(friction=[0.5, 0.5], mass=[2.0, 2.0], damping=[1.5, 1.5], actuator_gain=[0.65, 0.65]),
        sensor=SensorRandomization(proprio_noise=[0.006, 0.006], drop_frames=[0.2, 0.2]),
    ),
}
for _name, _domain in {
    "dr-visual": DomainConfig(visual=TRAIN_VISUAL),
    "dr-physics": DomainConfig(physics=TRAIN_PHYSICS),
    "dr-sensor": DomainConfig(sensor=TRAIN_SENSOR),
    "dr-all": DomainConfig(visual=TRAIN_VISUAL, physics=TRAIN_PHYSICS, sensor=TRAIN_SENSOR),
    **TARGETS,
}.items():
    DOMAINS.register(_name)(_domain)


def _point(v: float) -> list[float]:
    return [v, v]


# Severity s in [0, 1] -> the domain of one perturbation factor (s = 0 is the nominal scene).
PERTURBATIONS: dict[str, Callable[[float], DomainConfig]] = {
    "lighting": lambda s: DomainConfig(visual=VisualRandomization(light_intensity=_point(1 - 0.75 * s),
                                                                  light_direction=_point(60 * s))),
    "camera": lambda s: DomainConfig(visual=VisualRandomization(camera_position=_point(0.04 * s),
                                                                camera_rotation=_point(5 * s))),
    "fov": lambda s: DomainConfig(visual=VisualRandomization(camera_fov=_point(10 * s))),
    "object_color": lambda s: DomainConfig(visual=VisualRandomization(object_color=[-0.25 * s, 0.25 * s])),
    "background": lambda s: DomainConfig(visual=VisualRandomization(surface_color=[-0.5 * s, 0.5 * s], texture=s)),
    "friction": lambda s: DomainConfig(physics=PhysicsRandomization(friction=_point(1 - 0.7 * s))),
    "mass": lambda s: DomainConfig(physics=PhysicsRandomization(mass=_point(1 + 2 * s))),
    "damping": lambda s: DomainConfig(physics=PhysicsRandomization(damping=_point(1 + 2 * s))),
    "actuator_gain": lambda s: DomainConfig(physics=PhysicsRandomization(actuator_gain=_point(1 - 0.6 * s))),
    "image_noise": lambda s: DomainConfig(sensor=SensorRandomization(image_noise=_point(25 * s))),
    "blur": lambda s: DomainConfig(sensor=SensorRandomization(blur=_point(2 * s))),
    "proprio_noise": lambda s: DomainConfig(sensor=SensorRandomization(proprio_noise=_point(0.01 * s))),
    "latency": lambda s: DomainConfig(sensor=SensorRandomization(latency=[round(4 * s)] * 2)),
    "drop_frames": lambda s: DomainConfig(sensor=SensorRandomization(drop_frames=_point(0.5 * s))),
    "calibration": lambda s: DomainConfig(sensor=SensorRandomization(camera_offset=_point(4 * s))),
}


def combine(domains: list[DomainConfig]) -> DomainConfig:
    """One domain with every non-nominal field of ``domains`` (later ones win on a clash)."""
    out = DomainConfig()
    for d in domains:
        for family in ("visual", "physics", "sensor"):
            mine, theirs = getattr(out, family), getattr(d, family)
            default = type(theirs)()
            for key, value in vars(theirs).items():
                if value != getattr(default, key):
                    setattr(mine, key, value)
    return out


def perturbation(factor: str, severity: float) -> DomainConfig:
    """The domain of ``factor`` (or ``all`` of them together) at ``severity`` in [0, 1]."""
    if not 0.0 <= severity <= 1.0:
        raise ConfigError(f"perturbation severity must be in [0, 1], got {severity}")
    if factor == "all":
        return combine([f(severity) for f in PERTURBATIONS.values()])
    if factor not in PERTURBATIONS:
        raise ConfigError(f"unknown perturbation {factor!r}; known: all, {', '.join(PERTURBATIONS)}")
    return PERTURBATIONS[factor](severity)


def parse_perturb(spec: str, levels: int = 5) -> tuple[str, list[float]]:
    """``factor=0.5`` -> (factor, [0.5]); ``factor=0..1`` -> (factor, ``levels`` evenly spaced severities)."""
    if "=" not in spec:
        raise ConfigError(f"perturbation {spec!r} must look like factor=severity or factor=lo..hi")
    factor, value = spec.split("=", 1)
    try:
        if ".." in value:
            lo, hi = (float(v) for v in value.split(".."))
            severities = [lo + (hi - lo) * i / (levels - 1) for i in range(levels)]
        else:
            severities = [float(value)]
    except ValueError:
        raise ConfigError(f"perturbation {spec!r}: severities must be numbers, e.g. {factor}=0..1") from None
    for s in severities:
        perturbation(factor, s)  # validates factor and range
    return factor, severities
