"""The tabletop environment: a floating parallel-jaw gripper over a table, in MuJoCo.

Action (float32, 4, each in [-1, 1]):
    0-2  end-effector displacement dx, dy, dz; 1.0 commands MAX_DELTA (2 cm) from the current
         position (the position servo covers about 1.6 cm of it per step in free motion)
    3    gripper: -1 fully open, +1 fully closed (values between give partial openings)
Observation (dict):
    image        uint8 (V, H, W, 3), one frame per camera in ``cameras``
    state        float32 (4,): end-effector x, y, z (m, table frame), gripper opening in [0, 1]
    instruction  str
The episode terminates on success and is truncated after ``max_steps`` steps (20 Hz control).
``info["energy"]`` is the work the actuators did during the step (J, sum |force * velocity| dt).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np

from vlaforge.envs.base import (
    RobotModel,
    actuator_power,
    check_action,
    check_env_args,
    observation_space,
    project_points,
)
from vlaforge.envs.render import CameraRenderer
from vlaforge.envs.tabletop import scene
from vlaforge.envs.tabletop.tasks import FAMILIES, SPLITS, Episode, sample_episode, success, target_and_goal

MAX_DELTA = 0.02
CONTROL_DT = 0.05
HOME = np.array([0.0, -0.12, 0.15])
IMAGE_SIZES = (64, 128)
CAMERAS = ("front", "top")


# The gripper's action interface, which the safety layer reasons about (the PyBullet rebuild shares it).
ROBOT = RobotModel(max_delta=MAX_DELTA, dt=CONTROL_DT, finger_open=scene.FINGER_OPEN, finger_gain=300.0)


class TabletopEnv(gym.Env):
    """One task family of the tabletop suite; scenes are drawn from the reset seed."""

    robot = ROBOT

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(1 / CONTROL_DT)}

    def __init__(
        self,
        task: str = "pick_place",
        split: str = "train",
        image_size: int = 64,
        cameras: tuple[str, ...] | list[str] = ("front",),
        max_steps: int = 100,
        num_objects: int = 3,
        render_mode: str | None = "rgb_array",
    ) -> None:
        check_env_args("tabletop", task, FAMILIES, split, SPLITS, image_size, IMAGE_SIZES, cameras, CAMERAS)
        if not 2 <= num_objects <= 3:
            raise ValueError(f"num_objects must be 2 or 3, got {num_objects}")
        self.task, self.split = task, split
        self.image_size, self.cameras = image_size, tuple(cameras)
        self.max_steps, self.num_objects = max_steps, num_objects
        self.render_mode = render_mode
        self.model = mujoco.MjModel.from_xml_string(scene.build_mjcf(max(IMAGE_SIZES)))
        self.data = mujoco.MjData(self.model)
        self._cameras = CameraRenderer(self.model)
        self._substeps = int(round(CONTROL_DT / self.model.opt.timestep))
        m = self.model
        self._obj_qadr = {n: m.jnt_qposadr[m.joint(f"{n}_joint").id] for n in scene.object_names()}
        self._obj_dadr = {n: m.jnt_dofadr[m.joint(f"{n}_joint").id] for n in scene.object_names()}
        self._obj_geom = {n: m.geom(n).id for n in scene.object_names()}
        self._jnt = {n: m.jnt_qposadr[m.joint(n).id] for n in ("ee_x", "ee_y", "ee_z", "finger_l", "finger_r", "drawer", "button")}
        self._ee_body = m.body("ee").id
        self._ee_z0 = float(m.body_pos[self._ee_body][2])
        self._obj_body = {n: m.body(n).id for n in scene.object_names()}
        self.episode: Episode | None = None
        self.steps = 0
        self.observation_space = observation_space(len(self.cameras), image_size, 4)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

    # --- simulator access -------------------------------------------------------------
    def ee_pos(self) -> np.ndarray:
        return self.data.xpos[self._ee_body].copy()

    def gripper_opening(self) -> float:
        q = self.data.qpos
        return float((q[self._jnt["finger_l"]] + q[self._jnt["finger_r"]]) / (2 * scene.FINGER_OPEN))

    def state(self) -> dict:
        """Privileged simulator summary used by experts and success checks."""
        q = self.data.qpos
        return {
            "ee": self.ee_pos(),
            "gripper": self.gripper_opening(),
            "objects": {n: self.data.xpos[b].copy() for n, b in self._obj_body.items()},
            "drawer": float(q[self._jnt["drawer"]]),
            "button": float(q[self._jnt["button"]]),
            "handle": self.data.geom_xpos[self.model.geom("handle").id].copy(),
            "button_top": self.data.geom_xpos[self.model.geom("button").id].copy() + np.array([0, 0, 0.008]),
        }

    def task_points(self) -> np.ndarray:
        """Privileged task points of the current step, float32 (6 + 4V,).

        Target xyz and goal xyz (m), then per camera the target and goal projected into the image
        (u right, v down, both in [-1, 1] from edge to edge). Recorded in datasets as
        ``observation.environment_state`` and used only as auxiliary training targets (the
        policy never receives them as input).
        """
        points = target_and_goal(self.episode, self.state())
        pixels = [self.project(points, cam).ravel() for cam in self.cameras]
        return np.concatenate([points.ravel(), *pixels]).astype(np.float32)

    def randomization_targets(self) -> dict:
        """Geom and material ids that visual domain randomization may recolour or retexture."""
        m = self.model
        return {
            "objects": [self._obj_geom[n] for n in scene.object_names()] + [m.geom(f"zone{i}").id for i in range(scene.NUM_ZONES)],
            "surfaces": [m.geom("table").id, m.geom("backdrop").id],
            "backdrop": m.geom("backdrop").id,
            "textures": [m.material(n).id for n in ("dr_checker", "dr_noise", "dr_gradient")],
        }

    def project(self, points: np.ndarray, camera: str) -> np.ndarray:
        """World points (..., 3) -> image coordinates (..., 2): u right, v down, [-1, 1] edge to edge."""
        return project_points(self.model, self.data, camera, points)

    def _apply_episode(self, ep: Episode, rng: np.random.Generator) -> None:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        for i, name in enumerate(scene.object_names()):
            a = self._obj_qadr[name]
            d.qpos[a : a + 7] = [1.0 + 0.1 * i, 1.0, scene.OBJECT_HALF, 1, 0, 0, 0]
        for (name, color, _), (x, y) in zip(ep.objects, ep.object_xy):
            a = self._obj_qadr[name]
            yaw = rng.uniform(-np.pi, np.pi)
            d.qpos[a : a + 7] = [x, y, scene.OBJECT_HALF, np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
            m.geom_rgba[self._obj_geom[name]] = [*scene.COLORS[color], 1.0]
        for i, (color, (x, y)) in enumerate(zip(ep.zones, ep.zone_xy)):
            m.body_pos[m.body(f"zone{i}").id] = [x, y, 0]
            m.geom_rgba[m.geom(f"zone{i}").id] = [*scene.COLORS[color], 1.0]
        m.body_pos[m.body("bowl").id] = [ep.bowl_xy[0], ep.bowl_xy[1], 0]
        m.body_pos[m.body("button_base").id] = [ep.button_xy[0], ep.button_xy[1], 0]
        m.body_pos[m.body("cabinet").id] = [ep.drawer_x, 0.22, 0]
        start = HOME + rng.uniform([-0.05, -0.03, -0.02], [0.05, 0.03, 0.02])
        self._set_ee_target(start, 1.0, qpos=True)
        mujoco.mj_forward(m, d)

    def _set_ee_target(self, target: np.ndarray, opening: float, qpos: bool = False) -> None:
        lo = np.array([r[0] for r in scene.EE_RANGE])
        hi = np.array([r[1] for r in scene.EE_RANGE])
        t = np.clip(target, lo, hi)
        joint = [t[0], t[1], t[2] - self._ee_z0]
        finger = scene.FINGER_OPEN * float(np.clip(opening, 0.0, 1.0))
        self.data.ctrl[:] = [*joint, finger, finger]
        if qpos:
            for k, v in zip(("ee_x", "ee_y", "ee_z", "finger_l", "finger_r"), [*joint, finger, finger]):
                self.data.qpos[self._jnt[k]] = v

    # --- gymnasium API ----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.episode = sample_episode(self.task, self.split, self.np_random, self.num_objects)
        self._apply_episode(self.episode, self.np_random)
        self.steps = 0
        return self._obs(), {"success": False, "task": self.task, "instruction": self.episode.instruction}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self.episode is None:
            raise RuntimeError("call reset() before step()")
        a = check_action(action)
        self._set_ee_target(self.ee_pos() + a[:3] * MAX_DELTA, (1.0 - a[3]) / 2.0)
        energy = 0.0
        for _ in range(self._substeps):  # one physics step at a time, to integrate the actuators' work
            mujoco.mj_step(self.model, self.data)
            energy += actuator_power(self.model, self.data) * self.model.opt.timestep
        self.steps += 1
        done = success(self.episode, self.state())
        truncated = self.steps >= self.max_steps and not done
        info = {"success": bool(done), "task": self.task, "instruction": self.episode.instruction, "energy": energy}
        return self._obs(), float(done), bool(done), bool(truncated), info

    def set_subtask(self, episode: Episode) -> dict:
        """Switch to another instruction in the scene as it is now (long-horizon chains): the
        physics is untouched, the step count restarts; returns the new observation."""
        self.episode, self.steps = episode, 0
        return self._obs()

    def _obs(self) -> dict:
        pos = self.ee_pos()
        state = np.array([pos[0], pos[1], pos[2], self.gripper_opening()], dtype=np.float32)
        return {"image": self.render_views(), "state": state, "instruction": self.episode.instruction}

    def render_views(self, size: int | None = None) -> np.ndarray:
        """Render every camera at ``size`` (default image_size): uint8 (V, H, W, 3)."""
        return self._cameras.render(self.data, self.cameras, size or self.image_size)

    def render(self) -> np.ndarray:
        return self.render_views()[0]

    def close(self) -> None:
        self._cameras.close()
