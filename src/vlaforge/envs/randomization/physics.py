"""Physics domain randomization: friction, mass and inertia, joint damping, actuator gain.

Each is one scale per episode applied to every element (all contacts, bodies, joints,
actuators), restored to nominal before the next draw. Rendering fields are not touched.
"""

from __future__ import annotations

import mujoco
import numpy as np

from vlaforge.envs.config import PhysicsRandomization
from vlaforge.envs.randomization.ranges import uniform

FIELDS = ("geom_friction", "body_mass", "body_inertia", "dof_damping", "actuator_gainprm", "actuator_biasprm")


class PhysicsRandomizer:
    def __init__(self, model: mujoco.MjModel, cfg: PhysicsRandomization) -> None:
        self.model, self.cfg = model, cfg
        self.nominal = {k: getattr(model, k).copy() for k in FIELDS}

    def restore(self) -> None:
        for k, v in self.nominal.items():
            getattr(self.model, k)[:] = v

    def sample(self, rng: np.random.Generator) -> dict:
        c = self.cfg
        return {k: uniform(rng, getattr(c, k)) for k in ("friction", "mass", "damping", "actuator_gain")}

    def apply(self, p: dict) -> None:
        m, n = self.model, self.nominal
        m.geom_friction[:] = n["geom_friction"] * p["friction"]
        m.body_mass[1:] = n["body_mass"][1:] * p["mass"]
        m.body_inertia[1:] = n["body_inertia"][1:] * p["mass"]
        m.dof_damping[:] = n["dof_damping"] * p["damping"]
        # A position servo is gain kp on the target and bias -kp on the position: scale both, so
        # the servo gets stiffer or softer but still aims at the commanded position.
        m.actuator_gainprm[:, 0] = n["actuator_gainprm"][:, 0] * p["actuator_gain"]
        m.actuator_biasprm[:, 1] = n["actuator_biasprm"][:, 1] * p["actuator_gain"]
