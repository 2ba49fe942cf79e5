"""vlaforge data split / delete / merge / convert: new datasets with their own manifests, inputs
untouched, episode content carried over exactly (PNG bytes and per-episode video files copied)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import TASKS, write_dataset

from vlaforge.cli import main
from vlaforge.data.dataset import LeRobotDataset, encode_png
from vlaforge.data.manifest import dataset_hash, episode_hashes


def hashes(root):
    return [e["sha256"] for e in episode_hashes(LeRobotDataset(root))]


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    write_dataset(root, episodes=5)
    return root


def test_split_delete_and_merge_round_trip(source, tmp_path, capsys):
    before, original = dataset_hash(source), hashes(source)
    tasks = [e["tasks"][0] for e in LeRobotDataset(source).episodes]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["data", "split", str(source), f"--tasks=[{TASKS[0]}]", f"--output={a}", f"--rest={b}"]) == 0
    assert [e["tasks"][0] for e in LeRobotDataset(a).episodes] == [t for t in tasks if t == TASKS[0]]
    assert [e["tasks"][0] for e in LeRobotDataset(b).episodes] == [t for t in tasks if t != TASKS[0]]
    picked = [h for h, t in zip(original, tasks) if t == TASKS[0]]
    assert hashes(a) == picked and sorted(hashes(a) + hashes(b)) == sorted(original)  # nothing lost, nothing doubled
    for out in (a, b):
        assert json.loads((out / "manifest.json").read_text())["hash"] == dataset_hash(out)
        assert LeRobotDataset(out).metadata_problems() == []
    merged = tmp_path / "merged"
    assert main(["data", "merge", str(a), str(b), f"--output={merged}"]) == 0
    assert sorted(hashes(merged)) == sorted(original)
    info = json.loads((merged / "meta/info.json").read_text())
    assert [m["path"] for m in info["merged_from"]] == [str(a), str(b)]
    assert [m["hash"] for m in info["merged_from"]] == [dataset_hash(a), dataset_hash(b)]
    deleted = tmp_path / "deleted"
    assert main(["data", "delete", str(source), "--episodes=[0,3]", f"--output={deleted}"]) == 0
    assert hashes(deleted) == [h for i, h in enumerate(original) if i not in (0, 3)]
    assert dataset_hash(source) == before  # the input is untouched
    capsys.readouterr()
    assert main(["data", "delete", str(source), "--episodes=[7]", f"--output={tmp_path / 'x'}"]) == 2
    assert "--episodes: [7] not in" in capsys.readouterr().err
    assert main(["data", "split", str(source), "--tasks=[fly]", f"--output={tmp_path / 'x'}"]) == 2
    assert "--tasks: ['fly'] not in" in capsys.readouterr().err
    assert main(["data", "delete", str(source), "--episodes=[0,1,2,3,4]", f"--output={tmp_path / 'x'}"]) == 2
    assert main(["data", "split", str(source), "--episodes=[0]", f"--output={a}"]) == 2  # never overwrites
    assert not (tmp_path / "x").exists()


def test_merge_refuses_another_layout(source, tmp_path, capsys):
    other = tmp_path / "small"
    write_dataset(other, episodes=2, size=32)
    assert main(["data", "merge", str(source), str(other), f"--output={tmp_path / 'm'}"]) == 2
    err = capsys.readouterr().err
    assert "differ in fps (20 vs 20) or in the features ['observation.images.front']" in err
    assert not (tmp_path / "m").exists()


def v21_fixture(root, lengths=(4, 6), fps=10, size=32):
    """A LeRobot v2.1 dataset as its documented layout has it: per-episode parquet and mp4 files,
    JSON-lines metadata; one PNG camera named ``observation.image`` (as in lerobot/pusht), one
    video camera, and a reward column our episodes do not hold."""
    pytest.importorskip("av", reason="PyAV (pip install 'vlaforge[video]') is not installed")
    from vlaforge.data import video

    rng = np.random.default_rng(0)
    cam = {"dtype": "image", "shape": [size, size, 3], "names": ["height", "width", "channel"]}
    vid = {"dtype": "video", "shape": [size, size, 3], "names": ["height", "width", "channel"],
           "info": {"video.fps": fps, "video.codec": "h264", "video.pix_fmt": "yuv420p"}}
    features = {"observation.image": cam, "observation.images.wrist": vid,
                "observation.state": {"dtype": "float32", "shape": [2], "names": None},
                "action": {"dtype": "float32", "shape": [2], "names": None},
                "next.reward": {"dtype": "float32", "shape": [1], "names": None},
                **{k: {"dtype": "int64", "shape": [1], "names": None}
                   for k in ("frame_index", "episode_index", "index", "task_index")},
                "timestamp": {"dtype": "float32", "shape": [1], "names": None}}
    info = {"codebase_version": "v2.1", "robot_type": "pusher", "fps": fps, "chunks_size": 1000, "features": features,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info))
    tasks = ["push the T into place", "push the block left"]
    (root / "meta/tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks)))
    truth, start = [], 0
    (root / "meta/episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "tasks": [tasks[e % 2]], "length": n}) + "\n" for e, n in enumerate(lengths)))
    for e, n in enumerate(lengths):
        pngs = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
        frames = np.repeat(np.linspace(0, 255, size, dtype=np.uint8)[None, None, :, None], n, 0).repeat(size, 1).repeat(3, 3)
        state, action = rng.normal(size=(n, 2)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)
        table = pa.table({"observation.image": [{"bytes": encode_png(p), "path": f"frame_{i:06d}.png"} for i, p in enumerate(pngs)],
                          "observation.state": state.tolist(), "action": action.tolist(), "next.reward": [0.5] * n,
                          "timestamp": [i / fps for i in range(n)], "frame_index": list(range(n)),
                          "episode_index": [e] * n, "index": list(range(start, start + n)), "task_index": [e % 2] * n})
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / f"data/chunk-000/episode_{e:06d}.parquet")
        mp4 = root / f"videos/chunk-000/observation.images.wrist/episode_{e:06d}.mp4"
        mp4.parent.mkdir(parents=True, exist_ok=True)
        mp4.write_bytes(video.encode(frames, fps, "h264"))
        truth.append((pngs, frames, state, action, tasks[e % 2], mp4.read_bytes()))
        start += n
    return truth


def test_convert_v21_to_v3(tmp_path, capsys):
    truth = v21_fixture(tmp_path / "v21")
    before = dataset_hash(tmp_path / "v21")
    out = tmp_path / "v3"
    assert main(["data", "convert", str(tmp_path / "v21"), f"--output={out}"]) == 0
    assert "features dropped: next.reward" in capsys.readouterr().out
    ds = LeRobotDataset(out)
    assert ds.info["codebase_version"] == "v3.0" and ds.fps == 10
    assert ds.image_keys == ["observation.images.image", "observation.images.wrist"]
    assert ds.info["vlaforge_converted_from"]["renamed_features"] == {"observation.image": "observation.images.image"}
    data = ds.load()
    starts = np.cumsum([0, *data.lengths[:-1]])
    for (pngs, frames, state, action, task, mp4), s, e in zip(truth, starts, ds.episodes):
        n = len(state)
        np.testing.assert_array_equal(data.images[s:s + n, 0], pngs)  # PNG bytes carried over: exact
        np.testing.assert_array_equal(data.state[s:s + n], state)
        np.testing.assert_array_equal(data.action[s:s + n], action)
        assert e["tasks"] == [task]
        key = "observation.images.wrist"
        assert (out / ds.info["video_path"].format(video_key=key, chunk_index=0, file_index=e["episode_index"])).read_bytes() == mp4
        assert np.abs(data.images[s:s + n, 1].astype(int) - frames).mean() < 4
    assert "stats/action/q99" in ds.episodes[0] and ds.metadata_problems() == []
    assert json.loads((out / "manifest.json").read_text())["hash"] == dataset_hash(out)
    assert dataset_hash(tmp_path / "v21") == before  # the input is untouched
    assert main(["data", "convert", str(out), f"--output={tmp_path / 'again'}"]) == 2
    assert "data convert reads v2.1" in capsys.readouterr().err


def test_view_writes_a_rerun_recording_of_the_episodes(source, tmp_path, capsys):
    rerun_chunk = pytest.importorskip("rerun.chunk", reason="rerun-sdk (pip install 'vlaforge[view]') is not installed")
    out = tmp_path / "episodes.rrd"
    assert main(["data", "view", str(source), "--episodes=[1,3]", f"--output={out}"]) == 0
    assert f"open it with: rerun {out}" in capsys.readouterr().out
    ds = LeRobotDataset(source)
    rows: dict[str, int] = {}
    for chunk in rerun_chunk.RrdReader(out).stream():
        rows[chunk.entity_path] = rows.get(chunk.entity_path, 0) + chunk.num_rows
    for i in (1, 3):
        n = ds.episodes[i]["length"]
        assert rows[f"/episode_{i}/cameras/front"] == n
        assert {rows[f"/episode_{i}/action/{name}"] for name in ds.features["action"]["names"]} == {n}
        assert rows[f"/episode_{i}/instruction"] == 1
    assert not any(p.startswith("/episode_0/") for p in rows)
    assert main(["data", "view", str(source), "--episodes=[9]", f"--output={out}"]) == 2
    assert main(["data", "view", str(source), f"--output={tmp_path / 'x.html'}"]) == 2
