"""Push-T (Chi et al. 2023, "Diffusion Policy") behind vlaforge's observation contract.

The physics and rendering are gym-pusht's (LeRobot's packaging of the task): a circular agent
(radius 15 px) in a 512 x 512 px arena pushes a T-shaped block onto a fixed target pose
(x 256, y 256, 45 degrees); the block moves only while pushed (the space damps every velocity
to zero). Success, as in the benchmark: more than 95% of the target area covered by the block.

Action (float32, 2, each in [-1, 1]): where the agent goes next, relative to where it is:
target = agent position + ``ACTION_SCALE`` * action, followed by gym-pusht's PD controller
(10 control steps per second). Relative like the other suites' end-effector deltas, so
DART-style collection noise means the same thing here.
Observation (dict):
    image        uint8 (1, H, W, 3), the top-down view gym-pusht renders, H = W = 64, 96 or 128
    state        float32 (2,): agent x, y in px
    instruction  str, one of a few wordings drawn from the reset seed (``unseen_paraphrase``: held-out ones)
Block position and angle and the agent position are drawn from the reset seed as gym-pusht
draws them. The episode terminates on success and is truncated after ``max_steps`` (300, the
step limit of LeRobot's and Diffusion Policy's evaluations).
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from vlaforge.envs.base import check_action, check_env_args, observation_space

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

TASKS = ("push_t",)
SPLITS = ("train", "unseen_paraphrase")
CAMERAS = ("top",)
IMAGE_SIZES = (64, 96, 128)
ARENA = 512.0
ACTION_SCALE = 50.0  # px of agent motion per unit of action
GOAL_POSE = (256.0, 256.0, np.pi / 4)
INSTRUCTIONS = {
    "train": ("push the T-shaped block onto the green target", "push the T onto the target",
              "align the T block with the green outline"),
    "unseen_paraphrase": ("slide the tee so it covers the green area", "move the T-shaped piece into its outline"),
}


def _pusht():
    try:
        from gym_pusht.envs.pusht import PushTEnv
    except ImportError as e:
        raise ImportError(f"the pusht suite needs gym-pusht: pip install 'vlaforge[pusht]' and "
                          f"pip install --no-deps gym-pusht==0.1.8 ({e})") from None
    return PushTEnv


class PushTEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: str = "push_t", split: str = "train", image_size: int = 64,
                 cameras: tuple[str, ...] | list[str] = CAMERAS, max_steps: int = 300) -> None:
        check_env_args("Push-T", task, TASKS, split, SPLITS, image_size, IMAGE_SIZES, cameras, CAMERAS)
        self.task, self.split = task, split
        self.image_size, self.cameras, self.max_steps = image_size, tuple(cameras), max_steps
        self._env = _pusht()(obs_type="state", observation_width=image_size, observation_height=image_size)
        self.instruction, self.steps, self.seed_used, self.coverage = "", 0, 0, 0.0
        self.observation_space = observation_space(len(self.cameras), image_size, 2)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    @property
    def sim(self):
        """gym-pusht's env: its pymunk bodies (``agent``, ``block``) for the expert."""
        return self._env

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.seed_used = int(self.np_random.integers(2**31)) if seed is None else int(seed)
        self._env.reset(seed=self.seed_used)
        wordings = INSTRUCTIONS[self.split]
        self.instruction = wordings[self.np_random.integers(len(wordings))]
        self.steps, self.coverage = 0, self._env._get_coverage()
        return self._obs(), {"success": False, "task": self.task, "instruction": self.instruction}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        a = check_action(action, 2)
        target = np.clip(self.agent_position() + ACTION_SCALE * a, 0.0, ARENA)
        _, reward, done, _, info = self._env.step(target)
        self.steps += 1
        self.coverage = float(info["coverage"])
        truncated = self.steps >= self.max_steps and not done
        info = {"success": bool(done), "task": self.task, "instruction": self.instruction, "coverage": self.coverage}
        return self._obs(), float(reward), bool(done), truncated, info

    def agent_position(self) -> np.ndarray:
        return np.array(self._env.agent.position, dtype=np.float64)

    def block_pose(self) -> np.ndarray:
        """(x, y, angle) of the block's body origin, px and radians."""
        b = self._env.block
        return np.array([b.position[0], b.position[1], b.angle], dtype=np.float64)

    def _obs(self) -> dict:
        state = self.agent_position().astype(np.float32)
        return {"image": self.render_views(), "state": state, "instruction": self.instruction}

    def task_points(self) -> np.ndarray:
        """Privileged (block xyz, target xyz) in px with z = 0, then their image coordinates
        (u = column, v = row) in the top view: float32 (10,). Auxiliary training targets only."""
        points = np.array([[*self.block_pose()[:2], 0.0], [GOAL_POSE[0], GOAL_POSE[1], 0.0]])
        pixels = points[:, :2] * (self.image_size / ARENA)  # the view is the arena, x right and y down
        return np.concatenate([points.ravel(), pixels.ravel()]).astype(np.float32)

    def render_views(self, size: int | None = None) -> np.ndarray:
        """The top view at ``size`` (default image_size): uint8 (1, H, W, 3)."""
        size = size or self.image_size
        return self._env._get_img(self._env._draw(), width=size, height=size)[None]

    def render(self) -> np.ndarray:
        return self.render_views()[0]
