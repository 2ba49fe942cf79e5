"""What every suite provides, and the observation/action contract every env keeps.

Observation dict: ``image`` uint8 (V, H, W, 3), ``state`` float32 proprio, ``instruction`` str.
Action: float32 vector in [-1, 1] (meaning documented per env).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from vlaforge.envs.config import EnvConfig


@dataclass(frozen=True)
class RobotModel:
    """What the barrier needs to know about the robot's action interface."""

    max_delta: float  # metres commanded by |a_i| = 1
    dt: float  # control period (s)
    finger_open: float  # one finger's travel (m); the gripper opening is in [0, 1]
    finger_gain: float  # finger servo stiffness (N/m): squeeze force = gain * (opening error)


@runtime_checkable
class RobotEnv(Protocol):
    """An end-effector env the safety layer can guard: where the gripper is, how open it is, and
    the robot's action interface. Suites whose envs are not one get no safety filter, audit or
    safe RL (a one-line refusal instead)."""

    robot: RobotModel

    def ee_pos(self) -> np.ndarray: ...

    def gripper_opening(self) -> float: ...


def robot_env(env: gym.Env) -> RobotEnv:
    """``env``'s base env as a ``RobotEnv``, or a ValueError naming what it lacks."""
    base = env.unwrapped
    if not isinstance(base, RobotEnv):
        raise ValueError(f"the safety layer needs an end-effector env with ee_pos(), gripper_opening() and a robot "
                         f"model; {type(base).__name__} is not one (the tabletop suites are)")
    return base


# The end-effector interface of the tabletop and Meta-World suites: proprio and action columns.
STATE_NAMES = ("ee_x", "ee_y", "ee_z", "gripper_opening")
ACTION_NAMES = ("dx", "dy", "dz", "gripper")


@dataclass(frozen=True)
class Suite:
    """A family of language-conditioned tasks with scripted experts."""

    name: str
    tasks: tuple[str, ...]
    splits: tuple[str, ...]
    make_env: Callable[[str, str, EnvConfig], gym.Env]
    make_expert: Callable[[gym.Env], object]
    fps: int
    # Privileged per-frame values the env's ``task_points()`` returns (auxiliary training
    # targets, never policy inputs): world values named here, then for every camera the image
    # coordinates (u, v) of each point in ``pixel_points``. Empty when the suite records none.
    env_state_names: tuple[str, ...] = ()
    pixel_points: tuple[str, ...] = ()
    default_cameras: tuple[str, ...] = ()
    default_max_steps: int = 100
    # Splits that stand for their own task list (Meta-World's held-out tasks, difficulty groups);
    # other splits vary scenes or wording over the suite's tasks.
    split_tasks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Column names of the proprio state and the action the suite's envs use (recorded datasets).
    state_names: tuple[str, ...] = STATE_NAMES
    action_names: tuple[str, ...] = ACTION_NAMES

    def resolve(self, cfg: EnvConfig) -> EnvConfig:
        """``cfg`` with the suite's default cameras and step limit filled in where left empty."""
        return dataclasses.replace(
            cfg, cameras=list(cfg.cameras or self.default_cameras), max_steps=cfg.max_steps or self.default_max_steps
        )

    def env_state_columns(self, cameras: list[str]) -> list[str]:
        """Names of the ``task_points()`` columns for these cameras (``<camera>.<point>_u``/``_v``)."""
        pixels = [f"{cam}.{p}_{c}" for cam in cameras for p in self.pixel_points for c in "uv"]
        return list(self.env_state_names) + pixels

    def check(self, tasks: list[str], split: str) -> list[str]:
        """Resolve an empty task list to the split's tasks (all tasks for most splits) and reject
        unknown names."""
        for t in tasks:
            if t not in self.tasks:
                raise KeyError(f"unknown task {t!r} in suite {self.name!r}; known tasks: {', '.join(self.tasks)}")
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r} in suite {self.name!r}; known splits: {', '.join(self.splits)}")
        return list(tasks) or list(self.split_tasks.get(split, self.tasks))


def check_observation(obs: dict, image_shape: tuple[int, ...], state_dim: int) -> None:
    """Raise a ValueError naming the first field of ``obs`` that breaks the contract."""
    for key in ("image", "state", "instruction"):
        if key not in obs:
            raise ValueError(f"observation is missing {key!r}; expected keys image, state, instruction")
    image = np.asarray(obs["image"])
    if image.shape != tuple(image_shape) or image.dtype != np.uint8:
        raise ValueError(f"observation image must be uint8 {tuple(image_shape)}, got {image.dtype} {image.shape}")
    state = np.asarray(obs["state"])
    if state.shape != (state_dim,):
        raise ValueError(f"observation state must have shape ({state_dim},), got {state.shape}")
    if not np.all(np.isfinite(state)):
        raise ValueError("observation state contains NaN or inf")
    if not isinstance(obs["instruction"], str) or not obs["instruction"].strip():
        raise ValueError("observation instruction must be a non-empty string")


def check_env_args(
    kind: str, task: str, tasks: tuple[str, ...], split: str, splits: tuple[str, ...],
    image_size: int, image_sizes: tuple[int, ...], cameras: tuple[str, ...] | list[str], known_cameras: tuple[str, ...],
) -> None:
    """Raise a KeyError/ValueError naming the first constructor argument an env cannot take."""
    if task not in tasks:
        raise KeyError(f"unknown {kind} task {task!r}; known tasks: {', '.join(tasks)}")
    if split not in splits:
        raise KeyError(f"unknown split {split!r}; known splits: {', '.join(splits)}")
    if image_size not in image_sizes:
        raise ValueError(f"image_size must be one of {image_sizes}, got {image_size}")
    for cam in cameras:
        if cam not in known_cameras:
            raise KeyError(f"unknown camera {cam!r}; known cameras: {', '.join(known_cameras)}")


def observation_space(views: int, image_size: int, state_dim: int) -> gym.spaces.Dict:
    """The gymnasium space of the observation contract above."""
    return gym.spaces.Dict(
        {
            "image": gym.spaces.Box(0, 255, (views, image_size, image_size, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
            "instruction": gym.spaces.Text(max_length=256, charset=" abcdefghijklmnopqrstuvwxyz"),
        }
    )


def check_action(action: np.ndarray, dim: int = 4) -> np.ndarray:
    """A float64 copy of ``action`` clipped to [-1, 1]; a wrong shape or NaN/inf raises ValueError."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (dim,):
        raise ValueError(f"action must have shape ({dim},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action contains NaN or inf: {a}")
    return np.clip(a, -1.0, 1.0)


def actuator_power(model, data) -> float:
    """Mechanical power the actuators deliver now (W): sum |force * velocity| over actuators,
    both signs counted (braking costs a motor energy too)."""
    return float(np.abs(data.actuator_force * data.actuator_velocity).sum())


def project_points(model, data, camera: str, points: np.ndarray) -> np.ndarray:
    """World points (..., 3) -> image coordinates (..., 2) in a MuJoCo camera: u right, v down,
    both in [-1, 1] from edge to edge (from the camera's pose and vertical field of view)."""
    cam = model.camera(camera).id
    return pinhole_project(points, data.cam_xpos[cam], data.cam_xmat[cam].reshape(3, 3), model.cam_fovy[cam])


def pinhole_project(points: np.ndarray, position: np.ndarray, rotation: np.ndarray, fovy: float) -> np.ndarray:
    """``project_points`` for a camera given by its position, rotation (columns: the camera's x,
    y, z axes in the world; it looks along -z) and vertical field of view in degrees."""
    local = (np.asarray(points) - np.asarray(position)) @ np.asarray(rotation)
    focal = 1.0 / math.tan(math.radians(fovy) / 2)  # in half-image units
    depth = -local[..., 2]
    return np.stack([focal * local[..., 0] / depth, -focal * local[..., 1] / depth], -1)
