"""A Meta-World (v3) task behind vlaforge's observation contract, rendered from a fixed camera.

Action (float32, 4, each in [-1, 1]): Meta-World's own: hand displacement dx, dy, dz (1.0 moves
the mocap 1 cm), gripper effort (-1 open, +1 close).
Observation (dict):
    image        uint8 (V, H, W, 3) from ``cameras`` (default ``corner2``, moved to the pose
                 LeRobot and TD-MPC use), shadows/reflections/skybox off, H = W = 64 or 128
    state        float32 (4,): hand x, y, z (m) and gripper opening
    instruction  str, a hand-written instruction drawn from the reset seed
Object and goal positions are re-drawn at every reset from the reset seed, from the ranges the
benchmark samples its tasks from. The episode terminates on the benchmark's success flag and is
truncated after ``max_steps`` steps (80 Hz control).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np

from vlaforge.envs.base import actuator_power, check_action, check_env_args, observation_space, project_points
from vlaforge.envs.metaworld.tasks import INSTRUCTIONS, TASKS, env_name
from vlaforge.envs.render import CameraRenderer

CAMERAS = ("corner2", "corner", "corner3", "topview")
SPLITS = ("train", "test", "unseen_paraphrase", "easy", "medium", "hard", "very_hard")
IMAGE_SIZES = (64, 128)
# corner2 sits too far from the table by default; this pose frames the workspace (LeRobot, TD-MPC2).
CORNER2_POS = (0.75, 0.075, 0.7)
# Tasks whose "object" slot is not what the gripper goes to; their target is the goal itself.
GOAL_IS_TARGET = ("reach", "reach-wall")


def _metaworld():
    try:
        import metaworld
        from metaworld.policies import ENV_POLICY_MAP
    except ImportError as e:
        raise ImportError(f"Meta-World suites need the metaworld package: pip install 'vlaforge[metaworld]' ({e})") from None
    return metaworld, ENV_POLICY_MAP


class MetaWorldEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str = "reach",
        split: str = "train",
        image_size: int = 64,
        cameras: tuple[str, ...] | list[str] = ("corner2",),
        max_steps: int = 500,
    ) -> None:
        check_env_args("Meta-World", task, TASKS, split, SPLITS, image_size, IMAGE_SIZES, cameras, CAMERAS)
        metaworld, policies = _metaworld()
        self.task, self.split = task, split
        self.image_size, self.cameras, self.max_steps = image_size, tuple(cameras), max_steps
        self._env = metaworld.env_dict.ALL_V3_ENVIRONMENTS[env_name(task)]()
        # A benchmark task fixes the observation layout; then positions are drawn per reset.
        self._env.set_task(metaworld.MT1(env_name(task), seed=0).train_tasks[0])
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        self._env.max_path_length = 10**9  # the step limit is ours (max_steps)
        self.model, self.data = self._env.model, self._env.data
        self.model.cam_pos[self.model.camera("corner2").id] = CORNER2_POS
        # Meta-World asks for a 640x480 4x-multisampled offscreen buffer; reading it back
        # dominates a 64 px frame (15 ms -> 5 ms per frame without it).
        self.model.vis.global_.offwidth = self.model.vis.global_.offheight = max(IMAGE_SIZES)
        self.model.vis.quality.offsamples = 0
        self.expert_class = policies[env_name(task)]
        self._cameras = CameraRenderer(self.model)
        self.raw_obs: np.ndarray | None = None
        self.instruction = ""
        self.steps = 0
        self.observation_space = observation_space(len(self.cameras), image_size, 4)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self._env.seed(int(self.np_random.integers(2**31)))
        self.raw_obs, _ = self._env.reset()
        train, held_out = INSTRUCTIONS[self.task]
        self.instruction = held_out if self.split == "unseen_paraphrase" else train[self.np_random.integers(len(train))]
        self.steps = 0
        return self._obs(), {"success": False, "task": self.task, "instruction": self.instruction}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self.raw_obs is None:
            raise RuntimeError("call reset() before step()")
        self.raw_obs, _, _, _, raw_info = self._env.step(check_action(action))
        self.steps += 1
        done = bool(raw_info["success"])
        truncated = self.steps >= self.max_steps and not done
        # Meta-World steps its physics itself (frame_skip substeps): the actuators' power is read
        # once per control step and held over it, an estimate at the control rate.
        energy = actuator_power(self.model, self.data) * self.model.opt.timestep * self._env.frame_skip
        info = {"success": done, "task": self.task, "instruction": self.instruction, "energy": energy}
        return self._obs(), float(done), done, truncated, info

    def _obs(self) -> dict:
        state = self.raw_obs[:4].astype(np.float32)
        return {"image": self.render_views(), "state": state, "instruction": self.instruction}

    def task_points(self) -> np.ndarray:
        """Privileged (target xyz, goal xyz) then per camera their image coordinates, float32 (6 + 4V,).

        Target = the task's object (the goal itself for reaching), goal = the benchmark's goal
        position. Auxiliary training targets only; never a policy input.
        """
        goal = self.raw_obs[36:39]
        target = goal if self.task in GOAL_IS_TARGET else self.raw_obs[4:7]
        points = np.stack([target, goal])
        # Images are rotated by 180 degrees (see render_views), so are their coordinates.
        pixels = [-project_points(self.model, self.data, cam, points).ravel() for cam in self.cameras]
        return np.concatenate([points.ravel(), *pixels]).astype(np.float32)

    def randomization_targets(self) -> dict:
        """Geom ids that visual domain randomization may recolour: the floor as the surface, every
        other geom (robot, objects, table) as objects. No backdrop or spare textures."""
        floor = self.model.geom("floor").id
        return {"objects": [g for g in range(self.model.ngeom) if g != floor], "surfaces": [floor], "backdrop": -1, "textures": []}

    def render_views(self, size: int | None = None) -> np.ndarray:
        """Every camera at ``size`` (default image_size): uint8 (V, H, W, 3), upright."""
        frames = self._cameras.render(self.data, self.cameras, size or self.image_size)
        return np.ascontiguousarray(frames[:, ::-1, ::-1])  # Meta-World cameras render upside down

    def render(self) -> np.ndarray:
        return self.render_views()[0]

    def close(self) -> None:
        self._cameras.close()


class MetaWorldExpert:
    """The package's scripted policy for the env's task, behind the suite expert interface."""

    def __init__(self, env: MetaWorldEnv) -> None:
        self.env = env
        self.policy = env.expert_class()

    def reset(self) -> None:
        """The scripted policies are stateless."""

    def act(self) -> np.ndarray:
        return np.clip(self.policy.get_action(self.env.raw_obs), -1.0, 1.0).astype(np.float32)
