"""A dataset laid out as the ``lerobot`` package writes v3.0: several episodes per data file,
variable-length list columns, one episodes-metadata file, tasks.parquet indexed by task."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlaforge.data.dataset import LeRobotDataset, encode_png


def make_lerobot_fixture(root, lengths=(5, 7, 4), size=32):
    rng = np.random.default_rng(0)
    tasks = ["pick up the cube", "open the drawer"]
    features = {
        "observation.images.wrist": {"dtype": "image", "shape": [size, size, 3], "names": ["height", "width", "channels"]},
        "observation.images.top": {"dtype": "image", "shape": [size, size, 3], "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": [6], "names": [f"j{i}" for i in range(6)]},
        "action": {"dtype": "float32", "shape": [6], "names": [f"j{i}" for i in range(6)]},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    frames, episodes, truth = [], [], []
    start = 0
    for e, n in enumerate(lengths):
        task_index = e % 2
        imgs = {k: rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8) for k in ("wrist", "top")}
        state = rng.normal(size=(n, 6)).astype(np.float32)
        action = rng.normal(size=(n, 6)).astype(np.float32)
        truth.append((imgs, state, action, tasks[task_index]))
        for i in range(n):
            frames.append({
                "observation.images.wrist": {"bytes": encode_png(imgs["wrist"][i]), "path": f"frame_{i:06d}.png"},
                "observation.images.top": {"bytes": encode_png(imgs["top"][i]), "path": f"frame_{i:06d}.png"},
                "observation.state": state[i].tolist(),
                "action": action[i].tolist(),
                "timestamp": i / 30.0,
                "frame_index": i,
                "episode_index": e,
                "index": start + i,
                "task_index": task_index,
            })
        episodes.append({
            "episode_index": e, "tasks": [tasks[task_index]], "length": n,
            "data/chunk_index": 0, "data/file_index": 0,
            "dataset_from_index": start, "dataset_to_index": start + n,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
            "stats/action/mean": action.mean(0).tolist(),
        })
        start += n
    (root / "data/chunk-000").mkdir(parents=True)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(frames), root / "data/chunk-000/file-000.parquet")
    pq.write_table(pa.Table.from_pylist(episodes), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": [0, 1], "task": tasks}), root / "meta/tasks.parquet")
    info = {
        "codebase_version": "v3.0", "robot_type": "so100", "total_episodes": len(lengths),
        "total_frames": start, "total_tasks": 2, "chunks_size": 1000, "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500, "fps": 30, "splits": {"train": f"0:{len(lengths)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": features,
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    stats = {"action": {"mean": [0.0] * 6, "std": [1.0] * 6}, "observation.state": {"mean": [0.0] * 6, "std": [1.0] * 6}}
    (root / "meta/stats.json").write_text(json.dumps(stats))
    return truth


def test_reads_lerobot_layout(tmp_path):
    truth = make_lerobot_fixture(tmp_path)
    ds = LeRobotDataset(tmp_path)
    assert ds.num_episodes == 3 and ds.fps == 30
    data = ds.load()
    assert data.cameras == ["wrist", "top"]
    assert data.images.shape == (16, 2, 32, 32, 3)
    np.testing.assert_array_equal(data.images[:, 0], np.concatenate([t[0]["wrist"] for t in truth]))
    np.testing.assert_array_equal(data.images[:, 1], np.concatenate([t[0]["top"] for t in truth]))
    np.testing.assert_array_equal(data.action, np.concatenate([t[2] for t in truth]))
    assert [data.tasks[i] for i in data.task_index[[0, 5, 12]]] == [t[3] for t in truth]


def test_our_dataset_has_lerobot_schema(tmp_path):
    """What ``lerobot`` relies on: info keys, tasks indexed by task, per-frame columns, episode rows."""
    from helpers import write_dataset

    write_dataset(tmp_path / "ds", episodes=2)
    root = tmp_path / "ds"
    info = json.loads((root / "meta/info.json").read_text())
    for key in ("codebase_version", "fps", "features", "data_path", "total_episodes", "total_frames", "chunks_size", "splits"):
        assert key in info
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    frames = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert set(info["features"]) <= set(frames.column_names)
    img = frames["observation.images.front"].type
    assert {img.field(i).name for i in range(img.num_fields)} == {"bytes", "path"}
    ep = pq.read_table(root / "meta/episodes/chunk-000/file-001.parquet").to_pylist()[0]
    assert ep["dataset_from_index"] == frames.num_rows and ep["data/file_index"] == 1


# ------------------------------------------------ datasets the real lerobot wrote (tests/data/lerobot)

FIXTURES = Path(__file__).parent / "data" / "lerobot"
VIDEO_TOLERANCE = 2.0  # mean |difference| (0-255) between two decoders' colour conversions of one stream


def expected(name: str) -> dict:
    """What lerobot's own LeRobotDataset read from the fixture (make_fixtures.py)."""
    with np.load(FIXTURES / f"{name}.expected.npz") as z:
        return {k: z[k] for k in z.files}


def assert_frames_match(data, want: dict, video: bool) -> None:
    """Our decoded dataset against lerobot's reading of the same files: PNG frames exactly, video
    within decoder tolerance, state and action exactly, every frame's task."""
    camera = want["camera:observation.images.top"]
    ours = data.images[:, 0]
    assert ours.shape == camera.shape
    if video:
        assert np.abs(ours.astype(int) - camera).mean() < VIDEO_TOLERANCE
    else:
        np.testing.assert_array_equal(ours, camera)
    np.testing.assert_array_equal(data.state, want["observation.state"])
    np.testing.assert_array_equal(data.action, want["action"])
    assert [data.tasks[i] for i in data.task_index] == list(want["task"])
    np.testing.assert_array_equal(data.lengths, np.bincount(want["episode_index"]))


@pytest.mark.parametrize("name", ["v30_image", "v30_video"])
def test_reads_datasets_lerobot_wrote(name, tmp_path):
    if name.endswith("video"):
        pytest.importorskip("av", reason="PyAV (pip install 'vlaforge[video]') is not installed")
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root)  # the committed files stay as lerobot wrote them
    ds = LeRobotDataset(root)
    assert ds.info["codebase_version"] == "v3.0" and ds.fps == 10 and ds.metadata_problems() == []
    assert_frames_match(ds.load(verify=False), expected(name), name.endswith("video"))


@pytest.mark.parametrize("name", ["v21_image", "v21_video"])
def test_converts_v21_datasets_lerobot_wrote(name, tmp_path, capsys):
    from vlaforge.cli import main

    pytest.importorskip("av", reason="PyAV (pip install 'vlaforge[video]') is not installed")
    out = tmp_path / "v3"
    assert main(["data", "convert", str(FIXTURES / name), f"--output={out}"]) == 0, capsys.readouterr().err
    ds = LeRobotDataset(out)
    assert ds.info["codebase_version"] == "v3.0" and ds.metadata_problems() == []
    assert_frames_match(ds.load(), expected(name), name.endswith("video"))


def lerobot_python() -> str:
    python = os.environ.get("VLAFORGE_LEROBOT_PYTHON", "")
    if not python:
        pytest.skip("VLAFORGE_LEROBOT_PYTHON is unset (an interpreter with lerobot 0.4.x, see "
                    "tests/data/lerobot/make_fixtures.py): lerobot's reading of our datasets untested here")
    return python


@pytest.mark.parametrize("video", [False, True])
def test_lerobot_reads_what_we_write(video, tmp_path):
    python = lerobot_python()
    from vlaforge.data.collect import collect
    from vlaforge.data.config import CollectConfig
    from vlaforge.envs.config import EnvConfig

    root = collect(CollectConfig(env=EnvConfig(tasks=["reach", "press_button"], max_steps=40), episodes_per_task=2,
                                 workers=1, video=video, output=str(tmp_path / "ours")), show_progress=False)
    out = tmp_path / "lerobot.npz"
    subprocess.run([python, str(FIXTURES / "make_fixtures.py"), "read", str(root), str(out)], check=True,
                   capture_output=True)
    with np.load(out) as z:
        theirs = {k: z[k] for k in z.files}
    ds = LeRobotDataset(root)
    data = ds.load()
    camera = theirs[f"camera:{ds.image_keys[0]}"]
    assert camera.shape == data.images[:, 0].shape
    if video:  # the same stream through lerobot's decoding and ours
        assert np.abs(data.images[:, 0].astype(int) - camera).mean() < VIDEO_TOLERANCE
    else:
        np.testing.assert_array_equal(data.images[:, 0], camera)
    np.testing.assert_array_equal(data.state, theirs["observation.state"])
    np.testing.assert_array_equal(data.action, theirs["action"])
    assert [data.tasks[i] for i in data.task_index] == list(theirs["task"])
