"""Scripted experts: one waypoint state machine per task family, driven by privileged state.

Each phase ends on a state condition, not a clock, and a dropped object sends the machine back
to its approach phase, so the experts recover from perturbations (and from the noise injected
during collection), which gives the imitation data recovery behaviour.
"""

from __future__ import annotations

import math

import numpy as np

from vlaforge.envs.tabletop.env import MAX_DELTA, TabletopEnv
from vlaforge.envs.tabletop.scene import OBJECT_HALF

OPEN, CLOSE = -1.0, 1.0
GAIN_DISTANCE = 2.5 * MAX_DELTA  # full speed when the target is at least this far
CARRY_Z = 0.1
HOVER = 0.07


def _move(ee: np.ndarray, target: np.ndarray, grip: float) -> np.ndarray:
    """Proportional step towards ``target``, saturating beyond GAIN_DISTANCE.

    A proportional (rather than bang-bang) law makes the demonstrated action a smooth function of
    the object-gripper offset, which a policy regresses far more easily.
    """
    delta = (np.asarray(target) - ee) / GAIN_DISTANCE
    return np.array([*np.clip(delta, -1.0, 1.0), grip], dtype=np.float32)


class Expert:
    """Scripted policy for one episode of a ``TabletopEnv``; call ``reset`` per episode."""

    def __init__(self, env: TabletopEnv) -> None:
        self.env = env
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self.wait = 0

    def act(self) -> np.ndarray:
        ep = self.env.episode
        s = self.env.state()
        return getattr(self, f"_{ep.family}")(ep, s, s["ee"])

    # --- families ---------------------------------------------------------------------
    def _reach(self, ep, s, ee) -> np.ndarray:
        obj = s["objects"][ep.target_body]
        return _move(ee, [obj[0], obj[1], obj[2] + OBJECT_HALF + 0.02], OPEN)

    def _push(self, ep, s, ee) -> np.ndarray:
        obj = s["objects"][ep.target_body]
        goal = np.array(ep.zone_xy[ep.goal])
        d = goal - obj[:2]
        d /= np.linalg.norm(d) + 1e-9
        behind = obj[:2] - d * (OBJECT_HALF + 0.025)
        push_z = 0.012
        # Lateral offset of the gripper from the line through the object along d.
        rel = ee[:2] - obj[:2]
        lateral = abs(rel[0] * d[1] - rel[1] * d[0])
        along = rel @ d
        if self.phase == "push" and (lateral > 0.02 or along > 0.0):
            self.phase = "approach"
        if self.phase == "approach":
            if np.linalg.norm(ee[:2] - behind) < 0.01:
                self.phase = "lower"
            else:
                z = max(ee[2], HOVER) if np.linalg.norm(ee[:2] - behind) > 0.02 else ee[2]
                return _move(ee, [behind[0], behind[1], z], CLOSE)
        if self.phase == "lower":
            if ee[2] < push_z + 0.008:
                self.phase = "push"
            else:
                return _move(ee, [behind[0], behind[1], push_z], CLOSE)
        target = obj[:2] + d * 0.03
        return _move(ee, [target[0], target[1], push_z], CLOSE)

    def _pick_then(self, s, ee, obj, place: np.ndarray, release_z: float) -> np.ndarray:
        """Shared grasp-carry-release machine of the pick families."""
        held = 0.25 < s["gripper"] < 0.56 and np.linalg.norm(obj - ee - [0, 0, 0.012]) < 0.03
        if self.phase in ("lift", "carry", "lower") and not held:
            self.phase = "approach"
        if self.phase == "approach":
            above = [obj[0], obj[1], obj[2] + HOVER]
            if np.linalg.norm(ee[:2] - obj[:2]) < 0.008 and ee[2] < obj[2] + HOVER + 0.02:
                self.phase = "descend"
            else:
                return _move(ee, above, OPEN)
        if self.phase == "descend":
            grasp = [obj[0], obj[1], max(obj[2] - 0.012, 0.006)]
            if abs(ee[2] - grasp[2]) < 0.006:
                self.phase, self.wait = "grasp", 0
            else:
                return _move(ee, grasp, OPEN)
        if self.phase == "grasp":
            self.wait += 1
            if self.wait > 5:
                self.phase = "lift"
            return _move(ee, ee, CLOSE)
        if self.phase == "lift":
            if ee[2] > CARRY_Z - 0.015:
                self.phase = "carry"
            else:
                return _move(ee, [ee[0], ee[1], CARRY_Z], CLOSE)
        if self.phase == "carry":
            if np.linalg.norm(ee[:2] - place[:2]) < 0.008:
                self.phase = "lower"
            else:
                return _move(ee, [place[0], place[1], CARRY_Z], CLOSE)
        if self.phase == "lower":
            if ee[2] < release_z + 0.006:
                self.phase = "release"
            else:
                return _move(ee, [place[0], place[1], release_z], CLOSE)
        if self.phase == "release":
            if s["gripper"] > 0.9:
                self.phase = "retreat"
            return _move(ee, ee, OPEN)
        return _move(ee, [ee[0], ee[1], CARRY_Z], OPEN)

    def _pick_place(self, ep, s, ee) -> np.ndarray:
        obj = s["objects"][ep.target_body]
        zone = np.array([*ep.zone_xy[ep.goal], 0.0])
        return self._pick_then(s, ee, obj, zone, 0.012)

    def _stack(self, ep, s, ee) -> np.ndarray:
        obj = s["objects"][ep.target_body]
        base = s["objects"][ep.objects[ep.goal][0]]
        return self._pick_then(s, ee, obj, base, base[2] + 2 * OBJECT_HALF - 0.005)

    def _put_in_bowl(self, ep, s, ee) -> np.ndarray:
        obj = s["objects"][ep.target_body]
        bowl = np.array([*ep.bowl_xy, 0.0])
        return self._pick_then(s, ee, obj, bowl, 0.03)

    def _open_drawer(self, ep, s, ee) -> np.ndarray:
        h = s["handle"]
        grasp = np.array([h[0], h[1], h[2] - 0.012])
        held = 0.08 < s["gripper"] < 0.35 and np.linalg.norm(ee[:2] - h[:2]) < 0.02
        if self.phase == "pull" and not held:
            self.phase = "approach"
        if self.phase == "approach":
            if np.linalg.norm(ee[:2] - grasp[:2]) < 0.008:
                self.phase = "descend"
            else:
                return _move(ee, [grasp[0], grasp[1], max(ee[2], h[2] + 0.05)], OPEN)
        if self.phase == "descend":
            if abs(ee[2] - grasp[2]) < 0.006:
                self.phase, self.wait = "grasp", 0
            else:
                return _move(ee, grasp, OPEN)
        if self.phase == "grasp":
            self.wait += 1
            if self.wait > 4:
                self.phase = "pull"
            return _move(ee, ee, CLOSE)
        # Pull at about half speed: faster pulls let the handle slip out of the fingers.
        return _move(ee, [h[0], h[1] - 0.025, grasp[2]], CLOSE)

    def _press_button(self, ep, s, ee) -> np.ndarray:
        top = s["button_top"]
        if math.hypot(ee[0] - top[0], ee[1] - top[1]) > 0.01:
            return _move(ee, [top[0], top[1], max(ee[2], top[2] + 0.04)], CLOSE)
        return _move(ee, [top[0], top[1], top[2] - 0.02], CLOSE)
