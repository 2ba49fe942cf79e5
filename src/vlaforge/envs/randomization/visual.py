"""Visual domain randomization: colours, textures, lighting and camera pose of a MuJoCo scene.

Works on any env whose ``unwrapped`` exposes ``model`` and ``randomization_targets()`` (the
tabletop and Meta-World envs). Only rendering fields are touched, so physics is unchanged.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from vlaforge.envs.config import VisualRandomization
from vlaforge.envs.randomization.ranges import uniform

DEFAULT_RGBA = np.array([0.5, 0.5, 0.5, 1.0], dtype=np.float32)
FIELDS = ("geom_rgba", "mat_rgba", "geom_matid", "geom_group", "light_active", "light_dir", "light_diffuse",
          "cam_pos", "cam_quat", "cam_fovy")


def _color_slots(model: mujoco.MjModel, geoms: list[int]) -> list[tuple[str, int]]:
    """Where each geom's colour lives: its material's rgba when the geom defers to it, else its own."""
    slots = []
    for g in geoms:
        mat = int(model.geom_matid[g])
        slot = ("mat_rgba", mat) if mat >= 0 and np.allclose(model.geom_rgba[g], DEFAULT_RGBA) else ("geom_rgba", g)
        if slot not in slots:
            slots.append(slot)
    return slots


def _tilt(direction: np.ndarray, angle_deg: float, azimuth: float) -> np.ndarray:
    """``direction`` turned by ``angle_deg`` towards the side given by ``azimuth`` (radians)."""
    d = direction / np.linalg.norm(direction)
    u = np.cross(d, [1.0, 0.0, 0.0] if abs(d[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    a = math.radians(angle_deg)
    return math.cos(a) * d + math.sin(a) * (math.cos(azimuth) * u + math.sin(azimuth) * v)


def _small_rotation(angles_deg: np.ndarray) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation by the given angles about x, y and z in turn."""
    q = np.array([1.0, 0.0, 0.0, 0.0])
    for axis, angle in enumerate(angles_deg):
        half = math.radians(angle) / 2
        r = np.zeros(4)
        r[0], r[1 + axis] = math.cos(half), math.sin(half)
        out = np.empty(4)
        mujoco.mju_mulQuat(out, q, r)
        q = out
    return q


class VisualRandomizer:
    """Samples per-episode appearance parameters and writes them into the model."""

    def __init__(self, model: mujoco.MjModel, targets: dict, cfg: VisualRandomization) -> None:
        self.model, self.cfg, self.targets = model, cfg, targets
        self.nominal = {k: getattr(model, k).copy() for k in FIELDS}
        self.headlight = (model.vis.headlight.ambient.copy(), model.vis.headlight.diffuse.copy())
        self.object_slots = _color_slots(model, targets["objects"])
        self.surface_slots = _color_slots(model, targets["surfaces"])
        self.surfaces_on = cfg.surface_color != [0.0, 0.0] or cfg.texture > 0

    def restore(self) -> None:
        """Put every field this randomizer touches back to its nominal value."""
        for k, v in self.nominal.items():
            getattr(self.model, k)[:] = v
        self.model.vis.headlight.ambient[:], self.model.vis.headlight.diffuse[:] = self.headlight

    def sample(self, rng: np.random.Generator) -> dict:
        c, m = self.cfg, self.model
        textured = [bool(rng.random() < c.texture) if c.texture > 0 else False for _ in self.targets["surfaces"]]
        textures = self.targets["textures"]
        return {
            "object_color": uniform(rng, c.object_color, (len(self.object_slots), 3)).tolist(),
            "surface_color": uniform(rng, c.surface_color, (len(self.surface_slots), 3)).tolist(),
            "texture": [int(rng.choice(textures)) if t and textures else -1 for t in textured],
            "light_intensity": uniform(rng, c.light_intensity),
            "light_direction": uniform(rng, c.light_direction),
            "light_azimuth": float(rng.uniform(0, 2 * math.pi)),
            "camera_position": uniform(rng, c.camera_position, (m.ncam, 3)).tolist(),
            "camera_rotation": uniform(rng, c.camera_rotation, (m.ncam, 3)).tolist(),
            "camera_fov": uniform(rng, c.camera_fov, m.ncam).tolist(),
        }

    def apply(self, p: dict) -> None:
        """Write ``p`` on top of the model's current colours (an env may recolour objects per reset)."""
        m = self.model
        for (field, i), offset in zip(self.object_slots, p["object_color"]):
            rgba = getattr(m, field)[i]
            rgba[:3] = np.clip(rgba[:3] + offset, 0.0, 1.0)
        if self.surfaces_on:
            if self.targets["backdrop"] >= 0:
                m.geom_group[self.targets["backdrop"]] = 0
            for (field, i), offset in zip(self.surface_slots, p["surface_color"]):
                rgba = getattr(m, field)[i]
                rgba[:3] = np.clip(rgba[:3] + offset, 0.0, 1.0)
            for g, mat in zip(self.targets["surfaces"], p["texture"]):
                if mat >= 0:
                    m.geom_matid[g] = mat
        s = p["light_intensity"]
        m.vis.headlight.ambient[:] = self.headlight[0] * s
        m.vis.headlight.diffuse[:] = self.headlight[1] * s
        m.light_diffuse[:] = self.nominal["light_diffuse"] * s
        if self.cfg.light_direction != [0.0, 0.0]:
            m.light_active[:] = 1
            for i in range(m.nlight):
                m.light_dir[i] = _tilt(self.nominal["light_dir"][i], p["light_direction"], p["light_azimuth"])
        for i in range(m.ncam):
            m.cam_pos[i] = self.nominal["cam_pos"][i] + p["camera_position"][i]
            mujoco.mju_mulQuat(m.cam_quat[i], self.nominal["cam_quat"][i], _small_rotation(np.asarray(p["camera_rotation"][i])))
            m.cam_fovy[i] = self.nominal["cam_fovy"][i] + p["camera_fov"][i]
