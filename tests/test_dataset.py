import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import synthetic_episode, write_dataset

from vlaforge.data.dataset import DatasetError, DatasetWriter, LeRobotDataset, make_features
from vlaforge.envs.base import ACTION_NAMES, STATE_NAMES


def test_round_trip_is_exact(tmp_path):
    _, eps = write_dataset(tmp_path / "ds", episodes=3)
    ds = LeRobotDataset(tmp_path / "ds")
    data = ds.load()
    np.testing.assert_array_equal(data.images, np.concatenate([e.images for e in eps]))
    np.testing.assert_array_equal(data.action, np.concatenate([e.action for e in eps]))
    np.testing.assert_array_equal(data.state, np.concatenate([e.state for e in eps]))
    assert list(data.lengths) == [len(e.action) for e in eps]
    assert [data.tasks[i] for i in data.task_index[np.cumsum([0, *data.lengths[:-1]])]] == [e.task for e in eps]
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3
    assert info["total_frames"] == sum(len(e.action) for e in eps)
    stats = json.loads((tmp_path / "ds/meta/stats.json").read_text())
    all_actions = np.concatenate([e.action for e in eps])
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], all_actions.std(0), atol=1e-6)


def test_interrupted_collection_keeps_finished_episodes(tmp_path):
    root = tmp_path / "ds"
    writer, eps = write_dataset(root, episodes=3)
    # A crash while writing episode 4: its data file landed, its metadata did not, and a
    # half-written temporary file and a stale info.json were left behind.
    shutil.copy(root / "data/chunk-000/file-002.parquet", root / "data/chunk-000/file-003.parquet")
    (root / "meta/episodes/chunk-000/file-003.parquet.tmp").write_bytes(b"PAR1 half")
    info = json.loads((root / "meta/info.json").read_text())
    info["total_episodes"] = 99
    (root / "meta/info.json").write_text(json.dumps(info))
    data = LeRobotDataset(root).load()
    assert len(data.lengths) == 3
    np.testing.assert_array_equal(data.action, np.concatenate([e.action for e in eps]))
    # Resuming continues after the last complete episode.
    feats = make_features(["front"], 64, STATE_NAMES, ACTION_NAMES)
    w2 = DatasetWriter(root, feats, fps=20, resume=True)
    assert w2.num_episodes == 3
    extra_ep = synthetic_episode(np.random.default_rng(5))
    w2.add_episode(extra_ep)
    assert len(LeRobotDataset(root).load().lengths) == 4
    # Statistics cover the episodes found on resume plus the new one.
    actions = np.concatenate([e.action for e in eps] + [extra_ep.action])
    stats = json.loads((root / "meta/stats.json").read_text())
    assert stats["action"]["count"] == [len(actions)]
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(0), atol=1e-5)


def test_existing_dataset_is_not_overwritten(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, episodes=2)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        DatasetWriter(root, make_features(["front"], 64, STATE_NAMES, ACTION_NAMES), fps=20)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_nan_actions_rejected_and_nothing_lost(tmp_path):
    root = tmp_path / "ds"
    writer, eps = write_dataset(root, episodes=2)
    bad = synthetic_episode(np.random.default_rng(1))
    bad.action[3, 1] = np.nan
    with pytest.raises(ValueError, match="action contains NaN.*frame 3"):
        writer.add_episode(bad)
    data = LeRobotDataset(root).load()
    assert len(data.lengths) == 2


def test_wrong_image_shape_rejected(tmp_path):
    writer, _ = write_dataset(tmp_path / "ds", episodes=1)
    bad = synthetic_episode(np.random.default_rng(1), size=32)
    with pytest.raises(ValueError, match="images must have shape"):
        writer.add_episode(bad)


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_corrupt_data_file_named_in_error(tmp_path, damage):
    root = tmp_path / "ds"
    write_dataset(root, episodes=2)
    f = root / "data/chunk-000/file-001.parquet"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"garbage" * 50)
    with pytest.raises(DatasetError, match="file-001.parquet"):
        LeRobotDataset(root).load()


def test_missing_or_bad_metadata(tmp_path):
    with pytest.raises(DatasetError, match="info.json is missing"):
        LeRobotDataset(tmp_path)
    root = tmp_path / "ds"
    write_dataset(root, episodes=1)
    (root / "meta/info.json").write_text("{not json")
    with pytest.raises(DatasetError, match="corrupt dataset file"):
        LeRobotDataset(root)


def test_nan_on_disk_detected(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, episodes=1)
    f = root / "data/chunk-000/file-000.parquet"
    t = pq.read_table(f)
    actions = np.asarray(t["action"].to_pylist(), np.float32)
    actions[0, 0] = np.nan
    col = pa.FixedSizeListArray.from_arrays(pa.array(actions.ravel()), 4)
    pq.write_table(t.set_column(t.column_names.index("action"), "action", col), f)
    with pytest.raises(DatasetError, match="action of episode 0 has NaN"):
        LeRobotDataset(root).load()


def test_environment_state_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    feats = make_features(["front"], 64, STATE_NAMES, ACTION_NAMES, ["tx", "ty"])
    writer = DatasetWriter(tmp_path / "ds", feats, fps=20)
    ep = synthetic_episode(rng)
    with pytest.raises(ValueError, match="environment_state must be given"):
        writer.add_episode(ep)
    ep.env_state = rng.normal(size=(len(ep.action), 2)).astype(np.float32)
    writer.add_episode(ep)
    data = LeRobotDataset(tmp_path / "ds").load()
    np.testing.assert_array_equal(data.env_state, ep.env_state)
    stats = json.loads((tmp_path / "ds/meta/stats.json").read_text())
    np.testing.assert_allclose(stats["observation.environment_state"]["mean"], ep.env_state.mean(0), atol=1e-6)


def test_post_success_steps_put_the_release_in_the_data():
    from dataclasses import asdict

    from vlaforge.data.collect import run_expert_episode
    from vlaforge.envs.config import EnvConfig

    def release_frames(post):
        ep = run_expert_episode("tabletop", asdict(EnvConfig()), "train", "stack", 3, 0.3, post)
        grip = ep["action"][:, 3]
        closed = np.nonzero(grip > 0)[0][-1]  # the last frame still holding the object
        return len(grip) - closed - 1

    assert release_frames(0) == 1  # success arrives on the first opening step
    assert release_frames(5) == 6
