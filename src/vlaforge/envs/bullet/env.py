"""The tabletop tasks rebuilt in PyBullet: the cross-simulator target of the transfer protocol.

Same observation/action contract, scene sampler, instructions, experts and success checks as the
MuJoCo suite (a seed gives the same layout in both), but another physics engine (Bullet's
sequential-impulse solver, a constraint-driven gripper instead of position servos) and another
renderer (Bullet's software TinyRenderer, with its own shading). A policy trained in MuJoCo meets
both shifts at once, which makes this the harder sim-to-sim proxy for a real robot.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from vlaforge.envs.base import check_action, check_env_args, observation_space, pinhole_project
from vlaforge.envs.tabletop import scene
from vlaforge.envs.tabletop.env import CONTROL_DT, HOME, IMAGE_SIZES, MAX_DELTA, ROBOT
from vlaforge.envs.tabletop.tasks import FAMILIES, SPLITS, Episode, sample_episode, success, target_and_goal

TIMESTEP = 0.002
SUBSTEPS = int(round(CONTROL_DT / TIMESTEP))
GRIPPER_FORCE = 40.0 * 3  # the MuJoCo servos' force limit, per axis
FINGER_FORCE = 20.0
BUTTON_STIFFNESS, BUTTON_DAMPING = 300.0, 3.0


def _pybullet():
    try:
        import pybullet
        from pybullet_utils.bullet_client import BulletClient
    except ImportError as e:
        raise ImportError(f"the tabletop-bullet suite needs pybullet: pip install 'vlaforge[bullet]' ({e})") from None
    return pybullet, BulletClient


def _quat_z(angle: float) -> list[float]:
    return [0.0, 0.0, math.sin(angle / 2), math.cos(angle / 2)]  # Bullet order: x, y, z, w


class BulletTabletopEnv(gym.Env):
    """One tabletop task family in PyBullet; the scene is rebuilt at every reset."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(1 / CONTROL_DT)}
    robot = ROBOT

    def __init__(
        self,
        task: str = "pick_place",
        split: str = "train",
        image_size: int = 64,
        cameras: tuple[str, ...] | list[str] = ("front",),
        max_steps: int = 100,
        num_objects: int = 3,
    ) -> None:
        check_env_args("tabletop-bullet", task, FAMILIES, split, SPLITS, image_size, IMAGE_SIZES, cameras,
                       tuple(scene.CAMERA_POSES))
        pb, client = _pybullet()
        self.pb = pb
        self.client = client(connection_mode=pb.DIRECT)
        self.task, self.split = task, split
        self.image_size, self.cameras = image_size, tuple(cameras)
        self.max_steps, self.num_objects = max_steps, num_objects
        self.episode: Episode | None = None
        self.steps = 0
        self.observation_space = observation_space(len(self.cameras), image_size, 4)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._views = {name: self._camera_matrices(name) for name in self.cameras}

    # --- scene -------------------------------------------------------------------------
    def _shapes(self, shapes: list[tuple]) -> tuple[int, int]:
        """(collision, visual) shape arrays from (kind, size, rgba, local position[, yaw]) tuples;
        a box's size is its half extents, a cylinder's (radius, half length), a sphere's (radius,)."""
        c, pb = self.client, self.pb
        kinds = {"box": pb.GEOM_BOX, "cylinder": pb.GEOM_CYLINDER, "sphere": pb.GEOM_SPHERE}
        common = {
            "shapeTypes": [kinds[kind] for kind, *_ in shapes],
            "halfExtents": [size if kind == "box" else [0, 0, 0] for kind, size, *_ in shapes],
            "radii": [size[0] if kind != "box" else 0 for kind, size, *_ in shapes],
            "lengths": [2 * size[1] if kind == "cylinder" else 0 for kind, size, *_ in shapes],
        }
        positions = [local for _, _, _, local, *_ in shapes]
        orientations = [_quat_z(sh[4] if len(sh) > 4 else 0.0) for sh in shapes]
        col = c.createCollisionShapeArray(**common, collisionFramePositions=positions,
                                          collisionFrameOrientations=orientations)
        vis = c.createVisualShapeArray(**common, rgbaColors=[rgba for _, _, rgba, *_ in shapes],
                                       visualFramePositions=positions, visualFrameOrientations=orientations)
        return col, vis

    def _body(self, shapes: list[tuple], pos, mass: float = 0.0, orn=(0, 0, 0, 1), collide: bool = True) -> int:
        """A rigid body made of ``shapes`` (see ``_shapes``); ``collide=False`` for decals."""
        col, vis = self._shapes(shapes)
        return self.client.createMultiBody(mass, col if collide else -1, vis, basePosition=pos, baseOrientation=orn)

    def _slider(self, base_pos, axis, limit: float, shapes: list[tuple], damping: float) -> int:
        """A fixed base with one prismatic link made of ``shapes`` (a drawer, a button)."""
        c, pb = self.client, self.pb
        col, vis = self._shapes(shapes)
        body = c.createMultiBody(
            0, -1, -1, basePosition=base_pos, linkMasses=[0.1], linkCollisionShapeIndices=[col],
            linkVisualShapeIndices=[vis], linkPositions=[[0, 0, 0]], linkOrientations=[[0, 0, 0, 1]],
            linkInertialFramePositions=[[0, 0, 0]], linkInertialFrameOrientations=[[0, 0, 0, 1]],
            linkParentIndices=[0], linkJointTypes=[pb.JOINT_PRISMATIC], linkJointAxis=[axis])
        c.changeDynamics(body, 0, jointLowerLimit=0.0, jointUpperLimit=limit, linearDamping=0, jointDamping=damping)
        c.setJointMotorControl2(body, 0, pb.VELOCITY_CONTROL, force=0)  # free, except for its damping
        return body

    def _build(self, ep: Episode, rng: np.random.Generator) -> None:
        c = self.client
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(TIMESTEP)
        self._body([("box", [0.5, 0.5, 0.01], scene.TABLE_RGBA, [0, 0, 0])], [0, 0, -0.01])
        h = scene.OBJECT_HALF
        self._objects = {}
        for (name, color, _), (x, y) in zip(ep.objects, ep.object_xy):
            shape = name.rstrip("0123456789")
            kind, size = {"cube": ("box", [h, h, h]), "cylinder": ("cylinder", [h, h]), "ball": ("sphere", [h, h])}[shape]
            yaw = rng.uniform(-np.pi, np.pi)
            body = self._body([(kind, size, [*scene.COLORS[color], 1.0], [0, 0, 0])], [x, y, h], mass=0.05, orn=_quat_z(yaw))
            c.changeDynamics(body, -1, lateralFriction=1.5, spinningFriction=0.02 if shape == "ball" else 0.0,
                             rollingFriction=0.002 if shape == "ball" else 0.0)
            self._objects[name] = body
        for color, (x, y) in zip(ep.zones, ep.zone_xy):
            self._body([("cylinder", [scene.ZONE_RADIUS, 0.0008], [*scene.COLORS[color], 1.0], [0, 0, 0])],
                       [x, y, 0.0008], collide=False)
        n, r = 10, scene.BOWL_RADIUS + 0.004
        walls = [("box", [0.004, r * math.tan(math.pi / n) + 0.002, scene.BOWL_WALL_HEIGHT / 2], [0.9, 0.9, 0.92, 1],
                  [r * math.cos(2 * math.pi * k / n), r * math.sin(2 * math.pi * k / n), scene.BOWL_WALL_HEIGHT / 2],
                  2 * math.pi * k / n) for k in range(n)]
        bowl_base = ("cylinder", [scene.BOWL_RADIUS + 0.008, 0.002], [0.8, 0.8, 0.85, 1], [0, 0, 0.002])
        self._body([bowl_base, *walls], [ep.bowl_xy[0], ep.bowl_xy[1], 0])
        wood, light_wood = [0.35, 0.25, 0.2, 1], [0.6, 0.45, 0.3, 1]
        cab = [ep.drawer_x, 0.22, 0]
        self._body([("box", [0.09, 0.06, 0.003], wood, [0, 0, 0.003]), ("box", [0.09, 0.06, 0.003], wood, [0, 0, 0.077]),
                    ("box", [0.003, 0.06, 0.04], wood, [-0.087, 0, 0.04]), ("box", [0.003, 0.06, 0.04], wood, [0.087, 0, 0.04]),
                    ("box", [0.09, 0.003, 0.04], wood, [0, 0.057, 0.04])], cab)
        self._drawer = self._slider(cab, [0, -1, 0], scene.DRAWER_TRAVEL, [
            ("box", [0.08, 0.003, 0.033], [0.75, 0.6, 0.4, 1], [0, -0.057, 0.04]),
            ("box", [0.08, 0.05, 0.002], light_wood, [0, -0.005, 0.01]),
            ("box", [0.002, 0.05, 0.02], light_wood, [-0.078, -0.005, 0.03]),
            ("box", [0.002, 0.05, 0.02], light_wood, [0.078, -0.005, 0.03]),
            ("box", [0.004, 0.012, 0.004], [0.2, 0.2, 0.2, 1], [0, -0.072, 0.05]),
            ("box", [0.007, 0.007, 0.025], [0.1, 0.1, 0.1, 1], [0, -0.087, 0.05]),
        ], damping=4.0)
        bx, by = ep.button_xy
        button_base = self._body([("box", [0.035, 0.035, 0.006], [0.25, 0.25, 0.28, 1], [0, 0, 0.006])], [bx, by, 0])
        self._button = self._slider([bx, by, 0.012], [0, 0, -1], scene.BUTTON_TRAVEL, [
            ("cylinder", [scene.BUTTON_RADIUS, 0.008], [0.9, 0.1, 0.1, 1], [0, 0, 0.008])], damping=BUTTON_DAMPING)
        c.setCollisionFilterPair(button_base, self._button, -1, 0, 0)  # the button sinks into its base
        self._build_gripper(HOME + rng.uniform([-0.05, -0.03, -0.02], [0.05, 0.03, 0.02]))

    def _build_gripper(self, start: np.ndarray) -> None:
        """Palm and wrist as the base, two prismatic fingers; the base follows a fixed constraint."""
        c, pb = self.client, self.pb
        grey, finger_rgba = [0.2, 0.2, 0.22, 1], [0.85, 0.85, 0.88, 1]
        base_col = c.createCollisionShape(pb.GEOM_BOX, halfExtents=[0.055, 0.018, 0.01], collisionFramePosition=[0, 0, 0.06])
        base_vis = c.createVisualShapeArray(
            shapeTypes=[pb.GEOM_BOX, pb.GEOM_CYLINDER], halfExtents=[[0.055, 0.018, 0.01], [0, 0, 0]], radii=[0, 0.012],
            lengths=[0, 0.1], rgbaColors=[grey, [0.3, 0.3, 0.32, 1]], visualFramePositions=[[0, 0, 0.06], [0, 0, 0.12]])
        fingers = []
        for side in (-1, 1):
            col = c.createCollisionShape(pb.GEOM_BOX, halfExtents=[0.005, 0.014, 0.028],
                                         collisionFramePosition=[0.005 * side, 0, 0.028])
            vis = c.createVisualShape(pb.GEOM_BOX, halfExtents=[0.005, 0.014, 0.028], rgbaColor=finger_rgba,
                                      visualFramePosition=[0.005 * side, 0, 0.028])
            fingers.append((col, vis))
        self._gripper = c.createMultiBody(
            0.5, base_col, base_vis, basePosition=start.tolist(),
            linkMasses=[0.05, 0.05], linkCollisionShapeIndices=[f[0] for f in fingers],
            linkVisualShapeIndices=[f[1] for f in fingers], linkPositions=[[0, 0, 0]] * 2,
            linkOrientations=[[0, 0, 0, 1]] * 2, linkInertialFramePositions=[[0, 0, 0]] * 2,
            linkInertialFrameOrientations=[[0, 0, 0, 1]] * 2, linkParentIndices=[0, 0],
            linkJointTypes=[pb.JOINT_PRISMATIC] * 2, linkJointAxis=[[-1, 0, 0], [1, 0, 0]])
        for j in (0, 1):
            c.changeDynamics(self._gripper, j, lateralFriction=2.0, jointLowerLimit=0.0, jointUpperLimit=scene.FINGER_OPEN)
            c.resetJointState(self._gripper, j, scene.FINGER_OPEN)
        self._hold = c.createConstraint(self._gripper, -1, -1, -1, pb.JOINT_FIXED, [0, 0, 0], [0, 0, 0], start.tolist())
        self._command(start, 1.0)

    def _command(self, target: np.ndarray, opening: float) -> None:
        lo = np.array([r[0] for r in scene.EE_RANGE])
        hi = np.array([r[1] for r in scene.EE_RANGE])
        t = np.clip(target, lo, hi)
        self.client.changeConstraint(self._hold, t.tolist(), maxForce=GRIPPER_FORCE)
        finger = scene.FINGER_OPEN * float(np.clip(opening, 0.0, 1.0))
        self.client.setJointMotorControlArray(self._gripper, [0, 1], self.pb.POSITION_CONTROL,
                                              targetPositions=[finger, finger], forces=[FINGER_FORCE] * 2)

    # --- simulator access --------------------------------------------------------------
    def ee_pos(self) -> np.ndarray:
        return np.array(self.client.getBasePositionAndOrientation(self._gripper)[0])

    def gripper_opening(self) -> float:
        q = [self.client.getJointState(self._gripper, j)[0] for j in (0, 1)]
        return float(sum(q) / (2 * scene.FINGER_OPEN))

    def state(self) -> dict:
        """The privileged summary the tabletop experts and success checks read."""
        c = self.client
        drawer = c.getJointState(self._drawer, 0)[0]
        button = c.getJointState(self._button, 0)[0]
        handle = np.array(c.getLinkState(self._drawer, 0)[0]) + np.array([0, -0.087, 0.05])
        bx, by = self.episode.button_xy
        return {
            "ee": self.ee_pos(),
            "gripper": self.gripper_opening(),
            "objects": {n: np.array(c.getBasePositionAndOrientation(b)[0]) for n, b in self._objects.items()},
            "drawer": float(drawer),
            "button": float(button),
            "handle": handle,
            "button_top": np.array([bx, by, 0.012 + 0.016 - button]),  # as the MuJoCo geom top
        }

    def task_points(self) -> np.ndarray:
        """Target and goal xyz, then their image coordinates per camera (as the MuJoCo suite)."""
        points = target_and_goal(self.episode, self.state())
        pixels = [self.project(points, cam).ravel() for cam in self.cameras]
        return np.concatenate([points.ravel(), *pixels]).astype(np.float32)

    def project(self, points: np.ndarray, camera: str) -> np.ndarray:
        pos, axes, fovy = scene.CAMERA_POSES[camera]
        x, y = np.array(axes[:3], float), np.array(axes[3:], float)
        x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
        return pinhole_project(points, pos, np.stack([x, y, np.cross(x, y)], 1), fovy)

    def _camera_matrices(self, name: str) -> tuple:
        pos, axes, fovy = scene.CAMERA_POSES[name]
        x, y = np.array(axes[:3], float), np.array(axes[3:], float)
        y /= np.linalg.norm(y)
        forward = -np.cross(x / np.linalg.norm(x), y)
        view = self.client.computeViewMatrix(list(pos), (np.array(pos) + forward).tolist(), y.tolist())
        proj = self.client.computeProjectionMatrixFOV(fovy, 1.0, 0.01, 5.0)
        return view, proj

    # --- gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.episode = sample_episode(self.task, self.split, self.np_random, self.num_objects)
        self._build(self.episode, self.np_random)
        for _ in range(10):  # let objects settle on the table
            self.client.stepSimulation()
        self.steps = 0
        return self._obs(), {"success": False, "task": self.task, "instruction": self.episode.instruction}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self.episode is None:
            raise RuntimeError("call reset() before step()")
        a = check_action(action)
        self._command(self.ee_pos() + a[:3] * MAX_DELTA, (1.0 - a[3]) / 2.0)
        c = self.client
        for _ in range(SUBSTEPS):
            q = c.getJointState(self._button, 0)[0]  # the spring; its damping is the joint's
            c.setJointMotorControl2(self._button, 0, self.pb.TORQUE_CONTROL, force=-BUTTON_STIFFNESS * q)
            c.stepSimulation()
        self.steps += 1
        done = success(self.episode, self.state())
        truncated = self.steps >= self.max_steps and not done
        info = {"success": bool(done), "task": self.task, "instruction": self.episode.instruction}
        return self._obs(), float(done), bool(done), bool(truncated), info

    def _obs(self) -> dict:
        pos = self.ee_pos()
        state = np.array([pos[0], pos[1], pos[2], self.gripper_opening()], dtype=np.float32)
        return {"image": self.render_views(), "state": state, "instruction": self.episode.instruction}

    def render_views(self, size: int | None = None) -> np.ndarray:
        """Every camera at ``size`` (default image_size) through Bullet's TinyRenderer: uint8 (V, H, W, 3)."""
        size = size or self.image_size
        frames = []
        for name in self.cameras:
            view, proj = self._views.get(name) or self._camera_matrices(name)
            _, _, rgba, _, _ = self.client.getCameraImage(size, size, view, proj, renderer=self.pb.ER_TINY_RENDERER,
                                                          shadow=0)
            frames.append(np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[..., :3])
        return np.stack(frames)

    def render(self) -> np.ndarray:
        return self.render_views()[0]

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client = None
