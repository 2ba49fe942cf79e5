"""Small synthetic datasets for fast tests."""

import socket

import numpy as np

from vlaforge.data.dataset import DatasetWriter, EpisodeFrames, make_features
from vlaforge.envs.base import ACTION_NAMES, STATE_NAMES

TASKS = ["reach the red cube", "press the button"]


def synthetic_episode(rng, length=12, size=64, views=1, task=None, tasks=TASKS):
    """Random frames whose actions are a fixed function of the state, so they can be learned."""
    state = rng.normal(size=(length, 4)).astype(np.float32)
    return EpisodeFrames(
        images=rng.integers(0, 255, (length, views, size, size, 3), dtype=np.uint8),
        state=state,
        action=np.tanh(state[:, ::-1] * 0.8).astype(np.float32),
        task=task or tasks[rng.integers(len(tasks))],
    )


def write_dataset(root, episodes=4, seed=0, size=64, length=12, tasks=TASKS, image_fn=None, action_fn=None):
    """``image_fn`` maps each episode's uint8 frames (a shifted domain, for instance), ``action_fn``
    its actions (another behaviour on the same observations)."""
    rng = np.random.default_rng(seed)
    writer = DatasetWriter(
        root,
        make_features(["front"], size, STATE_NAMES, ACTION_NAMES),
        fps=20,
        extra_info={"vlaforge": {"suite": "tabletop", "tasks": ["reach", "press_button"],
                                 "env": {"suite": "tabletop", "tasks": ["reach", "press_button"], "image_size": size,
                                         "cameras": ["front"], "max_steps": 100, "num_objects": 3}}},
    )
    eps = [synthetic_episode(rng, length=length + i, size=size, tasks=tasks) for i in range(episodes)]
    if image_fn is not None or action_fn is not None:
        eps = [EpisodeFrames((image_fn or (lambda x: x))(e.images), e.state, (action_fn or (lambda x: x))(e.action), e.task)
               for e in eps]
    for ep in eps:
        writer.add_episode(ep)
    return writer, eps


# The smallest policy the tests train: end-to-end plumbing, not learning.
TINY_POLICY = ["--policy.d_model=32", "--policy.n_layers=1", "--policy.n_heads=2", "--policy.vision_channels=[8,8]"]


def tiny_train_and_eval(data, run, max_steps: int) -> dict:
    """Train a tiny policy on ``data`` for 3 steps into ``run`` and evaluate it on one train-split
    episode per task of at most ``max_steps`` steps; returns that evaluation's results.json."""
    import json

    from vlaforge.cli import main

    assert main(["train", f"--dataset={data}", f"--output_dir={run}", "--steps=3", "--batch_size=4",
                 "--tracking=none", *TINY_POLICY]) == 0
    assert main(["eval", f"--policy={run / 'policy'}", "--split=train", "--episodes=1", "--workers=1",
                 f"--max_steps={max_steps}", "--videos_per_task=0"]) == 0
    return json.loads((run / "eval" / "train" / "results.json").read_text())


def train_tiny_policy(root, episodes_per_task: int, steps: int):
    """Expert demos of reach and press_button and a tiny policy trained on them, under ``root``
    (``data/``, ``run/policy``); returns the policy directory."""
    from vlaforge.cli import main

    assert main(["collect", "--env.tasks=[reach,press_button]", f"--episodes_per_task={episodes_per_task}",
                 "--workers=1", f"--output={root / 'data'}"]) == 0
    assert main(["train", f"--dataset={root / 'data'}", f"--output_dir={root / 'run'}", f"--steps={steps}",
                 "--batch_size=8", "--tracking=none", *TINY_POLICY]) == 0
    return root / "run" / "policy"


def synthetic_policy(root, steps=2):
    """A tiny policy trained for ``steps`` steps on two synthetic episodes (for tests that only
    need a policy to roll out): its directory."""
    from vlaforge.models.config import PolicyConfig
    from vlaforge.train.config import TrainConfig
    from vlaforge.train.trainer import train

    write_dataset(root / "data", episodes=2)
    tiny = PolicyConfig(d_model=32, n_layers=1, n_heads=2, vision_channels=[8, 8])
    return str(train(TrainConfig(dataset=str(root / "data"), output_dir=str(root / "run"), steps=steps, batch_size=4,
                                 tracking="none", policy=tiny), show_progress=False))


def free_port() -> int:
    """A TCP port on 127.0.0.1 free at the time of the call (for servers a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
