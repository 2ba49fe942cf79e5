"""Video storage (LeRobot v3.0 layout) and what the real ``lerobot`` needs of our episode
metadata: one schema in every file, lerobot's statistics columns and quantiles, datasets
without a ``tasks`` column."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import synthetic_episode, write_dataset

from vlaforge.cli import main
from vlaforge.data import video
from vlaforge.data.dataset import QUANTILES, DatasetWriter, EpisodeFrames, LeRobotDataset, make_features
from vlaforge.envs.base import ACTION_NAMES, STATE_NAMES

av = pytest.importorskip("av", reason="PyAV (pip install 'vlaforge[video]') is not installed")


def moving_square(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) frames: a smooth background and a saturated 12-pixel square that moves
    two pixels a frame, the kind of content a tabletop camera sees."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = np.stack([xx * 2, yy * 2, np.full_like(xx, 90)], -1).astype(np.uint8)
    colour = rng.integers(0, 256, 3)
    frames = np.repeat(base[None], n, 0)
    for t in range(n):
        x = (4 + 2 * t) % (size - 12)
        frames[t, 20:32, x:x + 12] = colour
    return frames


@pytest.mark.parametrize("codec", sorted(video.CODECS))
def test_round_trip_within_codec_tolerance_and_exact_timestamps(tmp_path, codec):
    frames = moving_square(30)
    path = tmp_path / "v.mp4"
    path.write_bytes(video.encode(frames, fps=20, codec=codec))
    with av.open(str(path)) as c:
        times = [f.time for f in c.decode(video=0)]
    assert times == pytest.approx([i / 20 for i in range(30)], abs=1e-9)  # frame i at exactly i / fps
    with video.VideoReader(path) as r:
        decoded = r.span(0.0, 30 / 20)
    assert decoded.shape == frames.shape
    err = np.abs(decoded.astype(int) - frames)
    assert err.mean() < 4.0, err.mean()  # lossy, but close: the square's colour survives
    assert np.abs(decoded[:, 22:30].astype(int).mean((1, 2)) - frames[:, 22:30].mean((1, 2))).max() < 12


def test_seeking_is_frame_accurate_and_in_order_reads_decode_once(tmp_path):
    frames = moving_square(40)
    path = tmp_path / "v.mp4"
    path.write_bytes(video.encode(frames, fps=10, codec="av1"))
    with video.VideoReader(path) as r:
        whole = r.span(0.0, 4.0)
        assert r.decodes == 40
    with video.VideoReader(path) as r:
        picked = r.at([3.1, 0.5, 2.0, 3.9])  # any order: each seeks back or reads on
        np.testing.assert_array_equal(picked, whole[[31, 5, 20, 39]])
    with video.VideoReader(path) as r:  # consecutive spans (episodes of one file) decode it once
        parts = [r.span(0.0, 1.2), r.span(1.2, 2.5), r.span(2.5, 4.0)]
        assert [len(p) for p in parts] == [12, 13, 15] and r.decodes == 40
        np.testing.assert_array_equal(np.concatenate(parts), whole)
        np.testing.assert_array_equal(r.span(0.5, 0.7), whole[5:7])  # backwards: a seek, same frames
    with video.VideoReader(path) as r, pytest.raises(ValueError, match="no frames in"):
        r.span(5.0, 6.0)


def test_unknown_codec_and_odd_size_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"video codec must be one of \['av1', 'h264'\], got 'vp8'"):
        video.encode(moving_square(2), 10, "vp8")
    with pytest.raises(ValueError, match="even height and width"):
        video.encode(np.zeros((2, 63, 64, 3), np.uint8), 10, "av1")
    assert main(["collect", "--video=true", "--video_codec=vp8", f"--output={tmp_path / 'x'}"]) == 2
    assert not (tmp_path / "x").exists()


def lerobot_video_dataset(root, lengths=(6, 9, 5), fps=10):
    """Three episodes concatenated in one mp4 and one data file, as lerobot writes them (its
    image-to-video conversion leaves the episode rows without a ``tasks`` column)."""
    frames = moving_square(sum(lengths), seed=3)
    key = "observation.images.top"
    (root / "videos" / key / "chunk-000").mkdir(parents=True)
    (root / "videos" / key / "chunk-000/file-000.mp4").write_bytes(video.encode(frames, fps, "h264"))
    rows, eps, start = [], [], 0
    for e, n in enumerate(lengths):
        for i in range(n):
            rows.append({"observation.state": [float(e), float(i)], "action": [0.5, -0.5], "timestamp": i / fps,
                         "frame_index": i, "episode_index": e, "index": start + i, "task_index": e % 2})
        eps.append({"episode_index": e, "length": n, "data/chunk_index": 0, "data/file_index": 0,
                    "dataset_from_index": start, "dataset_to_index": start + n,
                    f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": start / fps, f"videos/{key}/to_timestamp": (start + n) / fps})
        start += n
    for d in ("data/chunk-000", "meta/episodes/chunk-000"):
        (root / d).mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "data/chunk-000/file-000.parquet")
    pq.write_table(pa.Table.from_pylist(eps), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": [0, 1], "task": ["stack the cups", "wipe the table"]}), root / "meta/tasks.parquet")
    features = {key: {"dtype": "video", "shape": [64, 64, 3], "names": ["height", "width", "channels"]},
                "observation.state": {"dtype": "float32", "shape": [2], "names": None},
                "action": {"dtype": "float32", "shape": [2], "names": None}}
    (root / "meta/info.json").write_text(json.dumps({
        "codebase_version": "v3.0", "fps": fps, "features": features,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}))
    return frames


def test_reads_lerobot_video_files_once_and_tasks_from_frames(tmp_path, monkeypatch):
    frames = lerobot_video_dataset(tmp_path)
    opened = []
    real = video.VideoReader.__init__
    monkeypatch.setattr(video.VideoReader, "__init__", lambda self, p: (opened.append(p), real(self, p))[1])
    ds = LeRobotDataset(tmp_path)
    assert [e["tasks"] for e in ds.episodes] == [["stack the cups"], ["wipe the table"], ["stack the cups"]]
    data = ds.load()
    assert len(opened) == 1  # one file, opened (and decoded front to back) once for three episodes
    assert list(data.lengths) == [6, 9, 5] and data.images.shape == (20, 1, 64, 64, 3)
    assert np.abs(data.images[:, 0].astype(int) - frames).mean() < 4.0
    np.testing.assert_array_equal(data.state[6], [1.0, 0.0])  # episode 1, frame 0
    assert main(["data", "check", f"--dataset={tmp_path}", f"--output={tmp_path / 'qc'}"]) in (0, 1)


def test_collect_video_true_writes_lerobot_layout_close_to_png(tmp_path):
    common = ["collect", "--env.tasks=[reach]", "--episodes_per_task=2", "--workers=1"]
    assert main([*common, f"--output={tmp_path / 'png'}"]) == 0
    assert main([*common, "--video=true", "--video_codec=h264", f"--output={tmp_path / 'mp4'}"]) == 0
    ds = LeRobotDataset(tmp_path / "mp4")
    key = "observation.images.front"
    assert ds.features[key]["dtype"] == "video" and ds.features[key]["info"]["video.codec"] == "h264"
    assert ds.info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert (tmp_path / "mp4/videos" / key / "chunk-000/file-001.mp4").is_file()
    assert key not in pq.read_schema(tmp_path / "mp4/data/chunk-000/file-000.parquet").names
    e = ds.episodes[1]
    assert e[f"videos/{key}/from_timestamp"] == 0.0 and e[f"videos/{key}/to_timestamp"] == e["length"] / ds.fps
    png, mp4 = LeRobotDataset(tmp_path / "png").load(), ds.load()
    np.testing.assert_array_equal(png.action, mp4.action)  # the same scenes, the same expert
    assert np.abs(png.images.astype(int) - mp4.images).mean() < 6.0  # of 255: lossy YUV 4:2:0, close
    written = json.loads((tmp_path / "mp4/manifest.json").read_text())["files"]
    assert any(k.startswith("videos/") for k in written)  # the streams are under the manifest's hashes


def test_every_episode_file_has_one_schema_with_lerobot_stats(tmp_path):
    """A collection keeping failures (rows that differ in what they achieved) and the optional
    domain column: lerobot refuses a dataset whose episode files differ in their columns.
    (Relabelling, which adds a column to some episodes only, is checked in test_quality.)"""
    out = tmp_path / "kept"
    assert main(["collect", "--env.tasks=[reach,push]", "--episodes_per_task=2", "--workers=1", "--keep_failures=true",
                 "--noise=1.5", f"--output={out}"]) == 0
    schemas = {pq.read_schema(f).remove_metadata() for f in (out / "meta/episodes").rglob("*.parquet")}
    assert len(schemas) == 1
    names = next(iter(schemas)).names
    for key in ("observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index",
                "observation.images.front"):
        assert {f"stats/{key}/{s}" for s in ("mean", "std", "min", "max", "count", *QUANTILES)} <= set(names), key
    assert "vlaforge/domain" in names and LeRobotDataset(out).episodes[0]["vlaforge/domain"] is None


def test_resume_refuses_another_domain(tmp_path):
    out = tmp_path / "ds"
    assert main(["collect", "--env.tasks=[reach]", "--episodes_per_task=1", "--workers=1", f"--output={out}"]) == 0
    before = sorted(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert main(["collect", "--env.tasks=[reach]", "--episodes_per_task=2", "--workers=1", "--resume=true",
                 "--domain.preset=strong", f"--output={out}"]) == 2
    assert sorted(p.read_bytes() for p in out.rglob("*") if p.is_file()) == before  # nothing written


def test_stats_quantiles_and_frame_counts(tmp_path):
    _, eps = write_dataset(tmp_path / "ds", episodes=3)
    stats = json.loads((tmp_path / "ds/meta/stats.json").read_text())
    frames = sum(len(e.action) for e in eps)
    img = stats["observation.images.front"]
    assert img["count"] == [frames]  # frames, as lerobot counts them (not pixels)
    assert np.shape(img["q50"]) == (3, 1, 1)
    # Per episode the quantiles are exact (np.quantile over every pixel, from a histogram).
    row = LeRobotDataset(tmp_path / "ds").episodes[0]
    pixels = eps[0].images[:, 0].reshape(-1, 3) / 255.0
    for name, q in QUANTILES.items():
        np.testing.assert_allclose(row[f"stats/observation.images.front/{name}"], np.quantile(pixels, q, axis=0), atol=1e-12)
        np.testing.assert_allclose(row[f"stats/action/{name}"], np.quantile(eps[0].action, q, axis=0), atol=1e-6)
    np.testing.assert_allclose(row["stats/observation.images.front/std"], pixels.std(0), atol=1e-9)
    # Pooled as lerobot pools them: the count-weighted mean of the episodes' quantiles.
    n = np.array([len(e.action) for e in eps], float)
    pooled = sum(k * np.quantile(e.action, 0.9, axis=0) for k, e in zip(n, eps)) / n.sum()
    np.testing.assert_allclose(stats["action"]["q90"], pooled, atol=1e-6)
    assert stats["frame_index"]["max"] == [max(len(e.action) for e in eps) - 1]


def test_resume_of_an_older_dataset_rewrites_rows_to_one_schema(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, episodes=2)
    for f in (root / "meta/episodes").rglob("*.parquet"):  # rows as an older writer left them: no quantiles
        t = pq.read_table(f)
        pq.write_table(t.select([c for c in t.column_names if not any(c.endswith(f"/{q}") for q in QUANTILES)]), f)
    w = DatasetWriter(root, make_features(["front"], 64, STATE_NAMES, ACTION_NAMES), fps=20, resume=True,
                      extra_columns={"note": pa.string()})
    w.add_episode(synthetic_episode(np.random.default_rng(9)), extra={"note": "new"})
    schemas = {pq.read_schema(f).remove_metadata() for f in (root / "meta/episodes").rglob("*.parquet")}
    assert len(schemas) == 1 and "stats/action/q01" in next(iter(schemas)).names
    assert [e["note"] for e in LeRobotDataset(root).episodes] == [None, None, "new"]
    assert LeRobotDataset(root).metadata_problems() == []
    with pytest.raises(ValueError, match=r"columns \['other'\] are not declared; allowed: \['note'\]"):
        w.add_episode(synthetic_episode(np.random.default_rng(1)), extra={"other": 1})


def test_video_dataset_resumes_and_rewrites(tmp_path):
    feats = make_features(["front"], 64, STATE_NAMES, ACTION_NAMES, video_codec="av1", fps=20)
    root = tmp_path / "ds"
    w = DatasetWriter(root, feats, fps=20)
    rng = np.random.default_rng(0)
    eps = [synthetic_episode(rng, length=8) for _ in range(2)]
    eps = [EpisodeFrames(moving_square(len(e.action), seed=i)[:, None], e.state, e.action, e.task) for i, e in enumerate(eps)]
    for e in eps:
        w.add_episode(e)
    (root / "videos/observation.images.front/chunk-000/file-002.mp4").write_bytes(b"orphan of a crash")
    w2 = DatasetWriter(root, feats, fps=20, resume=True)
    assert w2.num_episodes == 2 and not (root / "videos/observation.images.front/chunk-000/file-002.mp4").exists()
    data = LeRobotDataset(root).load()
    assert np.abs(data.images.astype(int) - np.concatenate([e.images for e in eps])).mean() < 4.0
