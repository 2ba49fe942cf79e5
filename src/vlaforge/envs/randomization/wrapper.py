"""``randomize(env, domain)``: wrap an env in the randomizers its DomainConfig switches on.

Families left at their defaults add no wrapper, so the nominal domain is the plain env, bit for
bit. Visual and physics parameters are drawn from the reset seed and written into the MuJoCo
model after the env's own reset; the first observation is rendered again to show them. Every
reset's draw is returned in ``info["domain"]`` (collection and evaluation log it per episode).
"""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import mujoco
import numpy as np

from vlaforge.config import ConfigError, from_dict
from vlaforge.envs.config import DomainConfig, EnvConfig
from vlaforge.envs.randomization.physics import PhysicsRandomizer
from vlaforge.envs.randomization.ranges import check_domain, episode_rng, is_nominal
from vlaforge.envs.randomization.sensor import ActionLatency, SensorNoise
from vlaforge.envs.randomization.visual import VisualRandomizer
from vlaforge.pool import worker_env
from vlaforge.registry import DOMAINS

SIM_SALT = 0x51D0
NOOP_ACTION = np.array([0.0, 0.0, 0.0, -1.0], dtype=np.float32)  # stay put, gripper open


class SimRandomization(gym.Wrapper):
    """Visual and/or physics randomization of a MuJoCo env, re-drawn at every reset."""

    def __init__(self, env: gym.Env, randomizers: dict) -> None:
        super().__init__(env)
        self.randomizers = randomizers
        self._rng: np.random.Generator | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        for r in self.randomizers.values():
            r.restore()
        obs, info = self.env.reset(seed=seed, options=options)
        self._rng = rng = episode_rng(seed, SIM_SALT, self._rng)
        drawn = {}
        for family, r in self.randomizers.items():
            drawn[family] = r.sample(rng)
            r.apply(drawn[family])
        base = self.env.unwrapped
        # Camera and light poses for the re-render; a full mj_forward would also rewrite the
        # solver's warm start and move the trajectory by rounding.
        mujoco.mj_kinematics(base.model, base.data)
        mujoco.mj_camlight(base.model, base.data)
        if "visual" in self.randomizers:
            obs = {**obs, "image": base.render_views()}
        info["domain"] = {**info.get("domain", {}), **drawn}
        return obs, info

    def close(self) -> None:
        for r in self.randomizers.values():
            r.restore()
        super().close()


def resolve(domain: DomainConfig) -> DomainConfig:
    """The ranges a DomainConfig stands for: its preset's, or its own; checked."""
    if domain.preset:
        rest = dataclasses.replace(domain, preset="")
        if not is_nominal(rest):
            raise ConfigError(f"domain.preset={domain.preset!r} cannot be combined with explicit domain ranges")
        domain = DOMAINS.get(domain.preset)
    check_domain(domain)
    return domain


def is_source(domain: DomainConfig) -> bool:
    """Whether the domain is the nominal (unrandomized) simulation."""
    return is_nominal(resolve(domain))


def job_domain(domain: DomainConfig) -> dict | None:
    """What worker jobs carry: the resolved, checked ranges as a dict, or None for the source."""
    resolved = resolve(domain)
    return None if is_nominal(resolved) else dataclasses.asdict(resolved)


def randomize(env: gym.Env, domain: DomainConfig) -> gym.Env:
    """``env`` wrapped in the randomizers ``domain`` switches on (the env itself when none)."""
    domain = resolve(domain)
    base = env.unwrapped
    if not (is_nominal(domain.visual) and is_nominal(domain.physics)) and not hasattr(base, "randomization_targets"):
        raise ConfigError(f"visual and physics randomization need a MuJoCo env; {type(base).__name__} is not one "
                          "(sensor randomization works on any env)")
    randomizers = {}
    if not is_nominal(domain.visual):
        randomizers["visual"] = VisualRandomizer(base.model, base.randomization_targets(), domain.visual)
    if not is_nominal(domain.physics):
        randomizers["physics"] = PhysicsRandomizer(base.model, domain.physics)
    if randomizers:
        env = SimRandomization(env, randomizers)
    sensor = domain.sensor
    if not is_nominal(dataclasses.replace(sensor, latency=[0, 0])):
        env = SensorNoise(env, sensor)
    if sensor.latency != [0, 0]:
        env = ActionLatency(env, sensor.latency, NOOP_ACTION)
    return env


def domain_env(suite: str, task: str, split: str, env_cfg: dict, domain: dict | None) -> gym.Env:
    """``task``'s env in ``suite`` with the settings ``env_cfg``, randomized when ``domain`` (a
    resolved DomainConfig as a dict, as collections record it) is given; module-level, so that a
    ``functools.partial`` of it reaches worker processes."""
    from vlaforge.envs import get_suite

    env = get_suite(suite).make_env(task, split, from_dict(EnvConfig, env_cfg))
    return randomize(env, from_dict(DomainConfig, domain)) if domain else env


def worker_domain_env(suite: str, task: str, split: str, env_cfg: dict, domain: dict | None) -> gym.Env:
    """A worker process's env for a collection or evaluation job (``domain_env``), kept while jobs
    share the same key."""
    return worker_env((suite, task, split, json.dumps(env_cfg, sort_keys=True), json.dumps(domain, sort_keys=True)),
                      lambda: domain_env(suite, task, split, env_cfg, domain))
