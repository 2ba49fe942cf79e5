"""A dataset laid out as the ``lerobot`` package writes v3.0: several episodes per data file,
variable-length list columns, one episodes-metadata file, tasks.parquet indexed by task."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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
