"""Datasets written by the real ``lerobot`` package, and what lerobot reads back, for our tests.

lerobot pins an older torch than ours, so it runs from its own virtual environment:

    python -m venv /tmp/lr && /tmp/lr/bin/pip install lerobot==0.4.4        # writes v3.0
    python -m venv /tmp/lr21 && /tmp/lr21/bin/pip install lerobot==0.3.3    # writes v2.1
    /tmp/lr/bin/python tests/data/lerobot/make_fixtures.py write tests/data/lerobot
    /tmp/lr21/bin/python tests/data/lerobot/make_fixtures.py write tests/data/lerobot
    /tmp/lr/bin/python tests/data/lerobot/make_fixtures.py read DATASET OUT.npz

``write`` records, with the installed lerobot's API, one image dataset and one video dataset
(``<codebase version>_<image|video>/``) and beside each ``<name>.expected.npz``: every frame as
lerobot's own ``LeRobotDataset`` returns it (images back to uint8, state, action, indices,
timestamps, task strings). ``read`` writes the same arrays for any dataset, ours included
(tests/test_lerobot_fixture.py runs it when VLAFORGE_LEROBOT_PYTHON names such an interpreter).
The content is fixed by seed 0, so a re-run with the same lerobot writes the same frames.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never ask the hub

LENGTHS = (5, 7, 4)
TASKS = ["pick up the cube", "open the drawer"]
FPS = 10
SIZE = 32
CAMERA = "observation.images.top"


def episodes() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]:
    """(frames (T, H, W, 3) uint8, state (T, 6), action (T, 6), task) per episode: smooth images
    that move from frame to frame (a video codec's usual input) with a little noise."""
    rng = np.random.default_rng(0)
    out = []
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    for e, n in enumerate(LENGTHS):
        frames = np.empty((n, SIZE, SIZE, 3), np.uint8)
        for t in range(n):
            base = np.stack([(x * 6 + t * 9 + 40 * e) % 256, (y * 5 + t * 4) % 256, ((x + y) * 3 + 70 * e) % 256], -1)
            frames[t] = np.clip(base + rng.integers(-6, 7, base.shape), 0, 255)
        state = rng.normal(size=(n, 6)).astype(np.float32)
        action = rng.normal(size=(n, 6)).astype(np.float32)
        out.append((frames, state, action, TASKS[e % 2]))
    return out


def write(where: Path) -> None:
    from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION, LeRobotDataset

    for kind in ("image", "video"):
        name = f"{CODEBASE_VERSION.replace('.', '')}_{kind}"
        root = where / name
        shutil.rmtree(root, ignore_errors=True)
        features = {
            CAMERA: {"dtype": kind, "shape": (SIZE, SIZE, 3), "names": ["height", "width", "channels"]},
            "observation.state": {"dtype": "float32", "shape": (6,), "names": [f"j{i}" for i in range(6)]},
            "action": {"dtype": "float32", "shape": (6,), "names": [f"j{i}" for i in range(6)]},
        }
        ds = LeRobotDataset.create(f"vlaforge/{name}", FPS, features, root=root, robot_type="arm",
                                   use_videos=kind == "video")
        task_argument = "task" in inspect.signature(ds.add_frame).parameters  # v2.1's API; v3.0 takes it in the frame
        for frames, state, action, task in episodes():
            for t in range(len(frames)):
                frame = {CAMERA: frames[t], "observation.state": state[t], "action": action[t]}
                if task_argument:
                    ds.add_frame(frame, task=task)
                else:
                    ds.add_frame({**frame, "task": task})
            ds.save_episode()
        if hasattr(ds, "finalize"):
            ds.finalize()
        np.savez_compressed(where / f"{name}.expected.npz", **read(root))
        print(f"wrote {root} with lerobot {CODEBASE_VERSION}")


def read(root: Path) -> dict[str, np.ndarray]:
    """Every frame of ``root`` as lerobot's LeRobotDataset returns it (PyAV decodes video)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    info = json.loads((root / "meta" / "info.json").read_text())
    ds = LeRobotDataset(f"local/{root.name}", root=root, video_backend="pyav")
    cameras = [k for k, f in info["features"].items() if f["dtype"] in ("image", "video")]
    rows = [ds[i] for i in range(len(ds))]
    out = {f"camera:{k}": np.stack([(r[k].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8) for r in rows])
           for k in cameras}
    for key in ("observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index"):
        out[key] = np.stack([r[key].numpy() for r in rows])
    out["task"] = np.array([r["task"] for r in rows])
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "read":
        np.savez_compressed(sys.argv[3], **read(Path(sys.argv[2])))
    else:
        raise SystemExit(__doc__)
