"""Episode store in the LeRobotDataset v3.0 layout.

    meta/info.json                                features, fps, totals, path templates
    meta/stats.json                               per-feature mean/std/min/max/count
    meta/tasks.parquet                            task string -> task_index
    meta/episodes/chunk-XXX/file-XXX.parquet      one row per episode (lengths, file locations)
    data/chunk-XXX/file-XXX.parquet               frame table; images as PNG {bytes, path} structs
    videos/<key>/chunk-XXX/file-XXX.mp4           a camera stream stored as video instead (data/video.py)

The writer puts each episode in its own data file and its own episode-metadata file, each written
to a temporary name and renamed, data before metadata. An episode listed in meta/episodes is
therefore complete on disk, and an interrupted collection leaves every finished episode readable.
Every episode-metadata file carries one schema (the ``lerobot`` package refuses a dataset whose
files differ): the same statistics columns as ``lerobot`` writes, and the extra columns the
writer was told of up front, null where an episode has no value.
The reader accepts several episodes per file (as the ``lerobot`` package writes them) and
recomputes the totals from meta/episodes rather than trusting info.json.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from vlaforge import files
from vlaforge.data import video
from vlaforge.files import sha256_file

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
IMAGE_PREFIX = "observation.images."
ENV_STATE = "observation.environment_state"
PARAPHRASES_PATH = "meta/paraphrases.json"  # vlaforge's addition: instruction -> other wordings
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # lerobot's, for quantile normalisation
FRAME_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


class DatasetError(ValueError):
    """A dataset that is missing, corrupt or inconsistent; the message names the file."""


def _atomic_write_table(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    files.atomic_write_bytes(path, sink.getvalue().to_pybytes())


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(payload: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))


def make_features(
    cameras: list[str], image_size: int, state_names: Sequence[str], action_names: Sequence[str],
    env_state_names: list[str] | None = None, video_codec: str = "", fps: int = 10
) -> dict:
    """LeRobot v3.0 feature spec for our observation/action contract (plus optional privileged
    state); with ``video_codec`` the cameras are stored as video streams at ``fps``."""
    if video_codec:
        video.check_codec(video_codec)
    features = {
        f"{IMAGE_PREFIX}{cam}": {
            "dtype": "video" if video_codec else "image",
            "shape": [image_size, image_size, 3],
            "names": ["height", "width", "channels"],
        } | ({"info": video.feature_info(video_codec, image_size, image_size, fps)} if video_codec else {})
        for cam in cameras
    }
    features["observation.state"] = {"dtype": "float32", "shape": [len(state_names)], "names": list(state_names)}
    features["action"] = {"dtype": "float32", "shape": [len(action_names)], "names": list(action_names)}
    if env_state_names:
        features[ENV_STATE] = {"dtype": "float32", "shape": [len(env_state_names)], "names": env_state_names}
    for key in FRAME_KEYS:
        features[key] = {"dtype": "float32" if key == "timestamp" else "int64", "shape": [1], "names": None}
    return features


@dataclass
class EpisodeFrames:
    """One episode in memory: images (T, V, H, W, 3) uint8, state (T, S), action (T, A),
    and optionally privileged env_state (T, E)."""

    images: np.ndarray
    state: np.ndarray
    action: np.ndarray
    task: str
    env_state: np.ndarray | None = None

    def arrays(self) -> list[tuple[str, np.ndarray]]:
        out = [("observation.state", self.state), ("action", self.action)]
        return out + ([(ENV_STATE, self.env_state)] if self.env_state is not None else [])


class DatasetWriter:
    """Appends episodes to a LeRobot v3.0 dataset directory, crash-safely.

    ``extra_columns`` declares the columns (name -> arrow type) that ``add_episode(extra=...)``
    may add to an episode's metadata row; every row carries all of them, null where not given."""

    def __init__(
        self,
        root: str | os.PathLike,
        features: dict,
        fps: int,
        robot_type: str = "vlaforge_tabletop_gripper",
        resume: bool = False,
        extra_info: dict | None = None,
        extra_columns: dict[str, pa.DataType] | None = None,
    ) -> None:
        self.root = Path(root)
        self.features, self.fps, self.robot_type = features, fps, robot_type
        self.extra_info = extra_info or {}
        self.extra_columns = dict(extra_columns or {})
        self.cameras = [k[len(IMAGE_PREFIX):] for k in features if k.startswith(IMAGE_PREFIX)]
        self.video_keys = [k for k, f in features.items() if f["dtype"] == "video"]
        for key in self.video_keys:
            video.check_codec(features[key].get("info", {}).get("video.codec", ""))
        existing = (self.root / "meta").exists() or (self.root / "data").exists()
        if existing and not resume:
            raise FileExistsError(
                f"dataset directory {self.root} already holds a dataset; pass resume=True (--resume) to add "
                "to it or choose another output, nothing was changed"
            )
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict] = []
        self.total_frames = 0
        self.schema: pa.Schema | None = None  # of an episode-metadata row: fixed by the first row
        self.stats = StatsAccumulator(_stat_keys(self.features))  # pooled over the rows written so far
        if existing:
            self._resume()

    def _resume(self) -> None:
        """Continue a dataset, repairing what an interrupted writer left behind.

        The episode's metadata row is the commit point (written after its data and video files):
        every listed episode is complete, and everything global is derived from the rows here
        and rewritten at once. Task indices are those of tasks.parquet plus, in episode order,
        the tasks of rows written after it (exactly the indices they were given); stats come
        from the rows' own statistics; orphaned data/video files and temporary files are
        removed. Rows written by an older writer (fewer statistics, an extra column missing)
        get the missing statistics computed and the missing columns null, and their files are
        rewritten, so every metadata file keeps one schema."""
        old = LeRobotDataset(self.root)
        if old.info["features"] != self.features or old.info["fps"] != self.fps:
            raise DatasetError(f"cannot resume into {self.root}: its features or fps differ from this run's")
        self.tasks = {t: i for i, t in enumerate(old.tasks)}
        for row in old.episodes:
            self.tasks.setdefault(row["tasks"][0], len(self.tasks))
        self.episodes = old.episodes
        self.total_frames = sum(e["length"] for e in old.episodes)
        columns = set(self._row_columns())
        unknown = sorted({k for row in self.episodes for k in row} - columns)
        if unknown:
            raise DatasetError(f"cannot resume into {self.root}: its episode rows hold columns this run does not "
                               f"write ({', '.join(unknown)}); nothing was changed")
        stale = [i for i, row in enumerate(self.episodes) if set(row) != columns]
        stats = {c for c in columns if c.startswith("stats/")}
        if any(not stats <= row.keys() for row in self.episodes):
            data = old.load(verify=False)
            starts = np.concatenate([[0], np.cumsum(data.lengths)[:-1]])
            for row, s, n in zip(self.episodes, starts, data.lengths):
                sl = slice(s, s + n)
                env = None if data.env_state is None else data.env_state[sl]
                ep = EpisodeFrames(data.images[sl], data.state[sl], data.action[sl], "", env)
                row.update(self._row_stats(ep, row["dataset_from_index"], self.tasks[row["tasks"][0]], row["episode_index"]))
        for row in self.episodes:
            row.update({c: None for c in self.extra_columns if c not in row})
        self.schema = self._schema_of(self.episodes[0])
        for row in self.episodes:
            self.stats.add(row)
        for f in sorted({(self.episodes[i]["meta/episodes/chunk_index"], self.episodes[i]["meta/episodes/file_index"])
                         for i in stale}):
            rows = [r for r in self.episodes if (r["meta/episodes/chunk_index"], r["meta/episodes/file_index"]) == f]
            _atomic_write_table(self.root / EPISODES_PATH.format(chunk_index=f[0], file_index=f[1]),
                                pa.Table.from_pylist(rows, schema=self.schema))
        used = {DATA_PATH.format(chunk_index=e["data/chunk_index"], file_index=e["data/file_index"]) for e in self.episodes}
        used |= {VIDEO_PATH.format(video_key=k, chunk_index=e[f"videos/{k}/chunk_index"],
                                   file_index=e[f"videos/{k}/file_index"]) for e in self.episodes for k in self.video_keys}
        for path in [*self.root.glob("data/chunk-*/*"), *self.root.glob("videos/*/chunk-*/*"), *self.root.glob("meta/**/*.tmp")]:
            if path.is_file() and path.relative_to(self.root).as_posix() not in used:
                path.unlink()
        self._write_meta()

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def _row_columns(self) -> list[str]:
        """Every column of an episode-metadata row, in order."""
        cols = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                "dataset_to_index", "meta/episodes/chunk_index", "meta/episodes/file_index"]
        cols += [f"stats/{k}/{s}" for k in _stat_keys(self.features) for s in STATS]
        cols += [f"videos/{k}/{c}" for k in self.video_keys
                 for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
        return cols + list(self.extra_columns)

    def _schema_of(self, row: dict) -> pa.Schema:
        """The arrow schema of every row: the fixed columns' types as inferred from ``row``, the
        extra columns' as declared."""
        fixed = pa.Table.from_pylist([{k: row[k] for k in row if k not in self.extra_columns}]).schema
        return pa.schema([*fixed, *(pa.field(k, t) for k, t in self.extra_columns.items())])

    def _validate(self, ep: EpisodeFrames) -> None:
        n = len(ep.action)
        if n == 0:
            raise ValueError("episode has no frames")
        if ep.images.dtype != np.uint8:
            raise ValueError(f"episode images must be uint8, got {ep.images.dtype}")
        shape = self.features[f"{IMAGE_PREFIX}{self.cameras[0]}"]["shape"]
        if ep.images.shape != (n, len(self.cameras), *shape):
            raise ValueError(f"episode images must have shape {(n, len(self.cameras), *shape)}, got {ep.images.shape}")
        if (ep.env_state is None) != (ENV_STATE not in self.features):
            raise ValueError(f"episode {ENV_STATE} must be given exactly when the dataset declares it")
        for key, arr in ep.arrays():
            dim = self.features[key]["shape"][0]
            if arr.shape != (n, dim):
                raise ValueError(f"episode {key} must have shape ({n}, {dim}), got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                bad = int(np.argwhere(~np.isfinite(arr))[0][0])
                raise ValueError(f"episode {key} contains NaN or inf (first at frame {bad}); episode not written")
        if not ep.task.strip():
            raise ValueError("episode task (instruction) is empty")

    def add_episode(
        self, ep: EpisodeFrames, encoded_images: list[list[bytes]] | None = None, extra: dict | None = None
    ) -> int:
        """Validate and write one episode; returns its index. Earlier episodes are never touched.

        ``encoded_images`` holds, per camera, what a worker already encoded (its frames' PNG
        bytes, or for a video feature the MP4 bytes of ``video.encode``), None to encode here;
        ``extra`` fills declared extra columns of the episode's metadata row (the collector
        records task and seed).
        """
        self._validate(ep)
        unknown = sorted(set(extra or {}) - set(self.extra_columns))
        if unknown:
            raise ValueError(f"episode metadata columns {unknown} are not declared; allowed: {sorted(self.extra_columns)}")
        n = len(ep.action)
        index = self.num_episodes
        chunk, file = divmod(index, CHUNKS_SIZE)
        task_index = self.tasks.setdefault(ep.task, len(self.tasks))
        start = self.total_frames
        columns: dict[str, pa.Array] = {}
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        videos = {}
        for v, cam in enumerate(self.cameras):
            key = f"{IMAGE_PREFIX}{cam}"
            encoded = encoded_images[v] if encoded_images else None
            if key in self.video_keys:
                codec = self.features[key]["info"]["video.codec"]
                path = self.root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
                files.atomic_write_bytes(path, encoded if encoded is not None else video.encode(ep.images[:, v], self.fps, codec))
                videos |= {f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
                           f"videos/{key}/from_timestamp": 0.0, f"videos/{key}/to_timestamp": n / self.fps}
                continue
            pngs = encoded if encoded is not None else [encode_png(img) for img in ep.images[:, v]]
            columns[key] = pa.array([{"bytes": b, "path": None} for b in pngs], type=image_type)
        for key, arr in ep.arrays():
            dim = arr.shape[1]
            columns[key] = pa.FixedSizeListArray.from_arrays(pa.array(arr.astype(np.float32).ravel()), dim)
        for key, values in _frame_columns(n, start, index, task_index, self.fps).items():
            columns[key] = pa.array(values)
        _atomic_write_table(self.root / DATA_PATH.format(chunk_index=chunk, file_index=file), pa.table(columns))
        row = {
            "episode_index": index,
            "tasks": [ep.task],
            "length": n,
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": start,
            "dataset_to_index": start + n,
            "meta/episodes/chunk_index": chunk,
            "meta/episodes/file_index": file,
        }
        row.update(self._row_stats(ep, start, task_index, index))
        row.update(videos)
        row.update({k: (extra or {}).get(k) for k in self.extra_columns})
        if self.schema is None:
            self.schema = self._schema_of(row)
        _atomic_write_table(self.root / EPISODES_PATH.format(chunk_index=chunk, file_index=file),
                            pa.Table.from_pylist([row], schema=self.schema))
        self.episodes.append(row)
        self.stats.add(row)
        self.total_frames += n
        self._write_meta()
        return index

    def _row_stats(self, ep: EpisodeFrames, start: int, task_index: int, index: int | None = None) -> dict:
        """The episode's own statistics, kept in its metadata row (as LeRobot v3.0 does) so the
        dataset's stats can always be re-derived from its finished episodes: for every feature
        lerobot computes them for, per dimension (D,) for vectors and frame columns, per channel
        (3,) over every pixel scaled to [0, 1] for cameras; count is the episode's frames."""
        n = len(ep.action)
        index = self.num_episodes if index is None else index
        arrays = [(key, arr.astype(np.float64)) for key, arr in ep.arrays()]
        arrays += [(key, np.asarray(v)[:, None]) for key, v in _frame_columns(n, start, index, task_index, self.fps).items()]
        row = {}
        for key, arr in arrays:
            row |= {f"stats/{key}/{stat}": fn(arr, axis=0).tolist() for stat, fn in (("mean", np.mean), ("std", np.std))}
            row |= {f"stats/{key}/min": arr.min(0).tolist(), f"stats/{key}/max": arr.max(0).tolist()}
            row |= {f"stats/{key}/{q}": np.quantile(arr, p, axis=0).astype(np.float64).tolist() for q, p in QUANTILES.items()}
            row[f"stats/{key}/count"] = [n]
        for v, cam in enumerate(self.cameras):
            row |= {f"stats/{IMAGE_PREFIX}{cam}/{stat}": value for stat, value in _pixel_stats(ep.images[:, v]).items()}
            row[f"stats/{IMAGE_PREFIX}{cam}/count"] = [n]  # frames, as lerobot counts them, not pixels
        return row

    def _write_meta(self) -> None:
        _atomic_write_table(self.root / "meta/tasks.parquet", _tasks_table(self.tasks))
        files.atomic_write_bytes(self.root / "meta/stats.json", json.dumps(self.stats.result(), indent=2).encode())
        n = self.num_episodes
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": n,
            "total_frames": self.total_frames,
            "total_tasks": len(self.tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": self.fps,
            "splits": {"train": f"0:{n}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.video_keys else None,
            "features": self.features,
            **self.extra_info,
        }
        files.atomic_write_bytes(self.root / "meta/info.json", json.dumps(info, indent=2).encode())


def _frame_columns(n: int, start: int, index: int, task_index: int, fps: int) -> dict[str, np.ndarray]:
    """The per-frame bookkeeping columns of an episode of ``n`` frames (each (n,))."""
    return {"timestamp": np.arange(n, dtype=np.float32) / np.float32(fps), "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": np.full(n, index, dtype=np.int64), "index": np.arange(start, start + n, dtype=np.int64),
            "task_index": np.full(n, task_index, dtype=np.int64)}


def _pixel_stats(images: np.ndarray) -> dict[str, list[float]]:
    """Per-channel statistics of (T, H, W, 3) uint8 frames scaled to [0, 1], exact, from each
    channel's 256-bin histogram: quantiles as np.quantile's linear interpolation over the pixels."""
    counts = np.stack([np.bincount(images[..., c].ravel(), minlength=256) for c in range(3)]).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts[0].sum()
    mean = counts @ values / total
    out = {"mean": mean.tolist(), "std": np.sqrt(np.maximum(counts @ values**2 / total - mean**2, 0.0)).tolist(),
           "min": [values[np.flatnonzero(c)[0]] for c in counts], "max": [values[np.flatnonzero(c)[-1]] for c in counts]}
    cum = np.cumsum(counts, axis=1)
    for name, p in QUANTILES.items():
        pos = p * (total - 1)  # the sorted pixels' fractional position
        lo, hi = np.floor(pos), np.ceil(pos)
        v_lo = values[[np.searchsorted(c, lo, side="right") for c in cum]]
        v_hi = values[[np.searchsorted(c, hi, side="right") for c in cum]]
        out[name] = (v_lo + (pos - lo) * (v_hi - v_lo)).tolist()
    return out


STATS = ("mean", "std", "min", "max", *QUANTILES, "count")


def _stat_keys(features: dict) -> list[str]:
    """Every feature lerobot keeps statistics of: all but strings."""
    return [k for k, f in features.items() if f["dtype"] != "string"]


class StatsAccumulator:
    """Dataset statistics pooled from per-episode ones (each row's ``stats/{key}/{stat}``), one
    row at a time, so a writer appending an episode updates them in O(1) instead of re-reading
    every row (which made writing a dataset quadratic in its episodes):
    mean = sum n_i m_i / N, var = sum n_i (s_i^2 + m_i^2) / N - mean^2 (population variance, as
    np.std); quantiles are the count-weighted mean of the episodes' quantiles, as lerobot pools
    them (exact for the median of identically distributed episodes, an approximation in the
    tails). Sums run in episode order, so a resumed collection, which folds its rows in the same
    order, derives byte-identical stats to an uninterrupted one."""

    def __init__(self, keys: list[str]) -> None:
        self.keys, self.sums = keys, {}

    def add(self, row: dict) -> None:
        for key in self.keys:
            if f"stats/{key}/count" not in row:
                continue
            n = float(row[f"stats/{key}/count"][0])
            m, s = (np.asarray(row[f"stats/{key}/{x}"], dtype=np.float64).ravel() for x in ("mean", "std"))
            lo, hi = (np.asarray(row[f"stats/{key}/{x}"], dtype=np.float64).ravel() for x in ("min", "max"))
            qs = {q: n * np.asarray(row[f"stats/{key}/{q}"], dtype=np.float64).ravel() for q in QUANTILES
                  if f"stats/{key}/{q}" in row}
            if key not in self.sums:
                self.sums[key] = {"n": n, "m": n * m, "ss": n * (s**2 + m**2), "min": lo, "max": hi, **qs}
                continue
            acc = self.sums[key]
            acc["n"] += n
            acc["m"] = acc["m"] + n * m
            acc["ss"] = acc["ss"] + n * (s**2 + m**2)
            acc["min"], acc["max"] = np.minimum(acc["min"], lo), np.maximum(acc["max"], hi)
            for q, v in qs.items():
                acc[q] = acc[q] + v if q in acc else v

    def result(self) -> dict:
        """stats.json's content. Image keys get LeRobot's (3, 1, 1) shape."""
        out = {}
        for key, acc in self.sums.items():
            total = acc["n"]
            mean = acc["m"] / total
            shape = (3, 1, 1) if key.startswith(IMAGE_PREFIX) else (-1,)
            out[key] = {"mean": mean.reshape(shape).tolist(),
                        "std": np.sqrt(np.maximum(acc["ss"] / total - mean**2, 0.0)).reshape(shape).tolist(),
                        "min": acc["min"].reshape(shape).tolist(), "max": acc["max"].reshape(shape).tolist()}
            out[key] |= {q: (acc[q] / total).reshape(shape).tolist() for q in QUANTILES if q in acc}
            out[key]["count"] = [int(total)]
        return out


def aggregate_stats(rows: list[dict], keys: list[str]) -> dict:
    """The dataset statistics of ``rows`` (see ``StatsAccumulator``)."""
    acc = StatsAccumulator(keys)
    for row in rows:
        acc.add(row)
    return acc.result()


def _tasks_table(tasks: dict[str, int]) -> pa.Table:
    """tasks.parquet as pandas writes it (``lerobot`` reads it back as a frame indexed by task)."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "vlaforge"},
        "pandas_version": "2.2.0",
    }
    table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()), "task": pa.array(list(tasks), pa.string())})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _read_table(path: Path, columns: list[str] | None = None, filters: list | None = None) -> pa.Table:
    """``filters`` (pyarrow's row filters) skip the row groups whose statistics rule them out."""
    if not path.is_file():
        raise DatasetError(f"dataset file is missing: {path}")
    return _parquet(path, lambda: pq.read_table(path, columns=columns, filters=filters))


def _read_schema(path: Path) -> pa.Schema:
    return _parquet(path, lambda: pq.read_schema(path))


def _parquet(path: Path, read: Callable[[], Any]) -> Any:
    """``read()`` of the parquet file ``path``, its failure told as a DatasetError naming the file."""
    try:
        return read()
    except Exception as e:  # pyarrow raises several types for truncated/garbled files
        raise DatasetError(f"corrupt or truncated dataset file {path}: {e}") from None


def _read_json(path: Path, kind: type, what: str):
    """A JSON file that must hold ``kind`` (``what`` says what it should be); a one-line error otherwise."""
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"corrupt dataset file {path}: {e}") from None
    if not isinstance(value, kind):
        raise DatasetError(f"{path} must hold {what}, got a {type(value).__name__}")
    return value


class LeRobotDataset:
    """Reads a LeRobot v3.0 dataset directory.

    ``row_stats=False`` leaves the per-episode statistics columns out of ``episodes`` (about 110
    of them per row: hundreds of MB of Python objects for 10^4 episodes); checks that need them
    read them file by file (``stat_rows``). Training opens datasets this way."""

    def __init__(self, root: str | os.PathLike, row_stats: bool = True) -> None:
        self.root = Path(root)
        info_path = self.root / "meta/info.json"
        if not info_path.is_file():
            raise DatasetError(f"not a dataset: {info_path} is missing")
        self.info = _read_json(info_path, dict, "an object with codebase_version, fps and features")
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(f"{info_path}: codebase_version {version!r} is not supported (need {CODEBASE_VERSION})")
        features = self.info.get("features")
        if not isinstance(features, dict) or not all(isinstance(f, dict) and "dtype" in f for f in features.values()):
            raise DatasetError(f"{info_path}: 'features' must map each feature name to {{dtype, shape, names}}")
        self.features: dict = features
        fps = self.info.get("fps")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < 10_000:
            raise DatasetError(f"{info_path}: 'fps' must be a number in (0, 10000), got {fps!r}")
        self.fps: int = int(fps)
        self.image_keys = [k for k, f in self.features.items() if f["dtype"] in ("image", "video")]
        if not self.image_keys:
            raise DatasetError(f"{info_path}: dataset has no image features")
        self.tasks = self._read_tasks()
        para_path = self.root / PARAPHRASES_PATH
        self.paraphrases: dict[str, list[str]] = (
            _read_json(para_path, dict, "an object mapping instructions to lists of wordings") if para_path.is_file() else {})
        stats_path = self.root / "meta/stats.json"
        self.stats = _read_json(stats_path, dict, "an object mapping features to mean/std/min/max") if stats_path.is_file() else {}
        self.episode_files = sorted((self.root / "meta/episodes").glob("chunk-*/file-*.parquet"))
        self.row_stats = row_stats
        rows = []
        for f in self.episode_files:
            columns = None if row_stats else [c for c in _read_schema(f).names if not c.startswith("stats/")]
            rows += _read_table(f, columns).to_pylist()
        self.episodes = sorted(rows, key=lambda r: r["episode_index"])
        if not self.episodes:
            raise DatasetError(f"dataset {self.root} has no episodes")
        if any(not e.get("tasks") for e in self.episodes):
            self._tasks_from_frames()

    def _tasks_from_frames(self) -> None:
        """Fill the ``tasks`` of episode rows that lack it (lerobot's image-to-video conversion
        writes none) from the task_index of the episode's frames."""
        named: dict[int, list[str]] = {}
        for e, rows in self.episode_tables(["episode_index", "task_index"]):
            indices = sorted(set(rows["task_index"].to_pylist()))
            bad = [i for i in indices if not 0 <= i < len(self.tasks)]
            if bad:
                raise DatasetError(f"episode {e['episode_index']}: task_index {bad[0]} is not in {self.root / 'meta/tasks.parquet'}")
            named[e["episode_index"]] = [self.tasks[i] for i in indices]
        for e in self.episodes:
            if not e.get("tasks"):
                e["tasks"] = named[e["episode_index"]]

    def _read_tasks(self) -> list[str]:
        table = _read_table(self.root / "meta/tasks.parquet")
        names = [n for n in table.column_names if n != "task_index"]
        if "task_index" not in table.column_names or not names:
            raise DatasetError(f"{self.root / 'meta/tasks.parquet'} must hold task strings and task_index")
        col = "task" if "task" in names else names[0]
        pairs = sorted(zip(table["task_index"].to_pylist(), table[col].to_pylist()))
        return [t for _, t in pairs]

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def stat_rows(self) -> Iterator[dict]:
        """Each episode's statistics columns, in episode order, one metadata file in memory at a time."""
        for f in self.episode_files:
            columns = ["episode_index", *(c for c in _read_schema(f).names if c.startswith("stats/"))]
            yield from sorted(_read_table(f, columns).to_pylist(), key=lambda r: r["episode_index"])

    def episode_tables(self, columns: list[str] | None = None) -> Iterator[tuple[dict, pa.Table]]:
        """(meta/episodes row, that episode's frame rows) for every episode, reading each data
        file once: stored bytes as written, for content hashes and exact rewrites."""
        tables: dict[Path, pa.Table] = {}
        for e in self.episodes:
            path = self.root / DATA_PATH.format(chunk_index=e["data/chunk_index"], file_index=e["data/file_index"])
            if path not in tables:
                tables.clear()  # episodes are ordered by file: one table held at a time
                tables[path] = _read_table(path, columns)
            table = tables[path]
            yield e, table.filter(pc.equal(table["episode_index"], e["episode_index"]))

    def manifest_problems(self) -> list[str]:
        """Every file ``manifest.json`` lists whose size or sha256 differs (a flipped byte in a
        parquet file can decode to different values without any error); none for a dataset
        without a manifest (written elsewhere)."""
        path = self.root / "manifest.json"
        if not path.is_file():
            return []
        try:
            listed = json.loads(path.read_text())["files"]
            entries = [(rel, entry["bytes"], entry["sha256"]) for rel, entry in listed.items()]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            return [f"corrupt dataset file {path}: {e!r}"]
        out = []
        for rel, size, digest in entries:
            f = self.root / rel
            if not f.is_file():
                out.append(f"{f} is listed in {path} but missing")
            elif f.stat().st_size != size or sha256_file(f) != digest:
                out.append(f"{f} does not match its sha256 in {path}: the file changed after the dataset was written "
                           "(corruption, an interrupted collection: `vlaforge collect --resume`, or an edit: "
                           "`vlaforge data manifest` records it)")
        return out

    def metadata_problems(self, totals: bool = True) -> list[str]:
        """Where the global metadata disagrees with the episodes (what an interrupted writer or an
        edit leaves): stats.json against the rows' own statistics, a row's task missing from
        tasks.parquet, a data file whose task_index names another task, and with ``totals`` the
        totals in info.json (harmless to loading, which counts the episodes itself)."""
        out, meta = [], self.root / "meta"
        frames = sum(e["length"] for e in self.episodes)
        for key, value in (("total_episodes", self.num_episodes), ("total_frames", frames)) if totals else ():
            if key in self.info and self.info[key] != value:
                out.append(f"{meta / 'info.json'}: {key} is {self.info[key]}, the episodes hold {value}")
        keys = [k for k in _stat_keys(self.features) if k in self.stats]
        derived = aggregate_stats(self.episodes if self.row_stats else self.stat_rows(), keys)
        for key in keys:
            entry = self.stats[key]
            try:
                counts = np.asarray(entry.get("count", [frames]), dtype=np.float64).ravel()[:1].tolist()
                stored = {stat: np.asarray(entry[stat], dtype=np.float64).ravel() for stat in derived.get(key, {})
                          if stat != "count"}
            except (AttributeError, KeyError, TypeError, ValueError):
                out.append(f"{meta / 'stats.json'}: {key} must hold mean, std, min, max and count as lists of numbers")
                continue
            if not key.startswith(IMAGE_PREFIX) and counts != [frames]:
                out.append(f"{meta / 'stats.json'}: {key} counts {counts} frames, the episodes hold {frames}")
            elif any(v.shape != np.shape(np.ravel(derived[key][stat])) or
                     not np.allclose(v, np.ravel(derived[key][stat]), rtol=1e-6, atol=1e-9) for stat, v in stored.items()):
                out.append(f"{meta / 'stats.json'}: {key} differs from the statistics of the episodes")
        for e, rows in self.episode_tables(["episode_index", "task_index"]):
            task = e["tasks"][0]
            if task not in self.tasks:
                out.append(f"{meta / 'tasks.parquet'} lacks the task {task!r} of episode {e['episode_index']}")
                continue
            named = {self.tasks[i] if 0 <= i < len(self.tasks) else None for i in rows["task_index"].to_pylist()}
            if not named <= set(e["tasks"]):
                out.append(f"episode {e['episode_index']}: its frames' task_index names {sorted(map(str, named))} "
                           f"in {meta / 'tasks.parquet'}, its row says {e['tasks']}")
        return out

    def verify(self) -> None:
        """Raise on the first manifest or metadata problem (see ``manifest_problems``,
        ``metadata_problems``), naming the file and the repair."""
        for check, repair in ((self.manifest_problems, "restore a missing or corrupt file from its source; "
                                                       "`vlaforge data manifest` records an intended edit"),
                              (lambda: self.metadata_problems(totals=False),
                               "an interrupted collection is repaired by `vlaforge collect --resume` with the same "
                               "arguments")):
            problems = check()
            if problems:
                raise DatasetError(f"{problems[0]} (`vlaforge data check` lists every problem; {repair})")

    def load(self, check_finite: bool = True, verify: bool = True, episodes: Sequence[int] | None = None) -> "EpisodeArrays":
        """Decode every frame: the in-memory arrays the sampler trains from. Quality control
        loads with ``check_finite=False`` to report NaN episodes instead of refusing them;
        ``verify`` first checks the files against the dataset's manifest and its metadata
        against its episodes (``verify()``). ``episodes`` (positions in ``self.episodes``)
        decodes only those, in dataset order, reading only the row groups that hold them: the
        streaming sampler's window."""
        if verify:
            self.verify()
        for key in ("observation.state", "action"):
            if key not in self.features:
                raise DatasetError(f"{self.root}: feature {key!r} is missing from meta/info.json")
        chosen = self.episodes if episodes is None else [self.episodes[i] for i in sorted(set(episodes))]
        by_file: dict[tuple[int, int], list[dict]] = {}
        for e in chosen:
            by_file.setdefault((e["data/chunk_index"], e["data/file_index"]), []).append(e)
        images, states, actions, env_states, ep_idx, task_idx = [], [], [], [], [], []
        has_env_state = ENV_STATE in self.features
        lengths, ep_tasks = [], []
        with contextlib.ExitStack() as stack:
            readers = _VideoFiles(self.root, self.info, stack)
            for (chunk, file), eps in sorted(by_file.items()):
                path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
                table = _read_table(path, filters=None if episodes is None else
                                    [("episode_index", "in", [e["episode_index"] for e in eps])])
                missing = [k for k in ("observation.state", "action", "episode_index", "task_index") if k not in table.column_names]
                if missing:
                    raise DatasetError(f"dataset file {path} lacks columns {missing}")
                col_ep = table["episode_index"].to_numpy()
                for e in eps:
                    rows = np.flatnonzero(col_ep == e["episode_index"])
                    if len(rows) != e["length"]:
                        raise DatasetError(
                            f"dataset file {path}: episode {e['episode_index']} has {len(rows)} frames, "
                            f"meta/episodes says {e['length']}"
                        )
                    sub = table.take(pa.array(rows))
                    views = []
                    for key in self.image_keys:
                        if self.features[key]["dtype"] == "video":
                            views.append(readers.span(key, e))
                        else:
                            views.append(np.stack([_decode_image(v, path, self.root) for v in sub[key].to_pylist()]))
                    images.append(np.stack(views, axis=1))
                    st = np.asarray(sub["observation.state"].to_pylist(), dtype=np.float32)
                    ac = np.asarray(sub["action"].to_pylist(), dtype=np.float32)
                    for name, arr in (("observation.state", st), ("action", ac)) if check_finite else ():
                        if not np.all(np.isfinite(arr)):
                            raise DatasetError(f"dataset file {path}: {name} of episode {e['episode_index']} has NaN/inf")
                    states.append(st)
                    actions.append(ac)
                    if has_env_state:
                        env_states.append(np.asarray(sub[ENV_STATE].to_pylist(), dtype=np.float32))
                    ep_idx.append(np.full(len(rows), len(lengths), dtype=np.int64))
                    task_idx.append(sub["task_index"].to_numpy().astype(np.int64))
                    lengths.append(len(rows))
                    ep_tasks.append(e.get("vlaforge/task") or e["tasks"][0])
        expected = tuple(self.features[self.image_keys[0]]["shape"])
        imgs = np.concatenate(images)
        if imgs.shape[2:] != expected:
            raise DatasetError(f"{self.root}: images have shape {imgs.shape[2:]}, meta/info.json says {expected}")
        return EpisodeArrays(
            images=imgs,
            state=np.concatenate(states),
            action=np.concatenate(actions),
            env_state=np.concatenate(env_states) if has_env_state else None,
            episode=np.concatenate(ep_idx),
            task_index=np.concatenate(task_idx),
            lengths=np.asarray(lengths),
            tasks=self.tasks,
            cameras=[k[len(IMAGE_PREFIX):] if k.startswith(IMAGE_PREFIX) else k for k in self.image_keys],
            episode_tasks=ep_tasks,
            paraphrases=self.paraphrases,
        )




def _decode_image(value, path: Path, root: Path) -> np.ndarray:
    if isinstance(value, dict):
        payload = value.get("bytes")
        if payload is None and value.get("path"):
            image = (path.parent / value["path"]).resolve()
            if not image.is_relative_to(root.resolve()) or not image.is_file():
                raise DatasetError(f"dataset file {path}: image path {value['path']!r} must name a file inside {root}")
            payload = image.read_bytes()
    else:
        payload = value
    try:
        return decode_png(payload)
    except Exception as e:
        raise DatasetError(f"dataset file {path}: an image cannot be decoded ({e})") from None


class _VideoFiles:
    """The open video files of a load, one reader per file: episodes read in order decode each
    file once, front to back (opening the file anew for each episode decoded it from its first
    frame every time: quadratic in the episodes per file)."""

    def __init__(self, root: Path, info: dict, stack: contextlib.ExitStack) -> None:
        self.root, self.info, self.stack = root, info, stack
        self.open: dict[Path, video.VideoReader] = {}

    def span(self, key: str, episode: dict) -> np.ndarray:
        """The episode's frames of video feature ``key``: (length, H, W, 3) uint8."""
        try:
            path = self.root / self.info["video_path"].format(
                video_key=key, chunk_index=episode[f"videos/{key}/chunk_index"], file_index=episode[f"videos/{key}/file_index"])
            t0, t1 = episode[f"videos/{key}/from_timestamp"], episode[f"videos/{key}/to_timestamp"]
        except (KeyError, TypeError, AttributeError) as e:
            raise DatasetError(f"{self.root}: episode {episode['episode_index']} lacks the video location of {key!r} "
                               f"(meta/info.json video_path and videos/{key}/* columns): {e!r}") from None
        if path not in self.open:
            if not path.is_file():
                raise DatasetError(f"dataset file is missing: {path}")
            try:
                self.open[path] = self.stack.enter_context(video.VideoReader(path))
            except ValueError as e:
                raise DatasetError(str(e)) from None
        try:
            frames = self.open[path].span(t0, t1)
        except ValueError as e:
            raise DatasetError(str(e)) from None
        if len(frames) != episode["length"]:
            raise DatasetError(f"video {path}: episode {episode['episode_index']} has {len(frames)} frames in "
                               f"[{t0}, {t1}) s, meta/episodes says {episode['length']}")
        return frames


@dataclass
class EpisodeArrays:
    """Every frame of a dataset, decoded; ``episode`` maps frames to 0..E-1."""

    images: np.ndarray  # (N, V, H, W, 3) uint8
    state: np.ndarray  # (N, S) float32
    action: np.ndarray  # (N, A) float32
    episode: np.ndarray  # (N,)
    task_index: np.ndarray  # (N,)
    lengths: np.ndarray  # (E,)
    tasks: list[str]
    cameras: list[str]
    env_state: np.ndarray | None = None  # (N, E) privileged task points, if recorded
    episode_tasks: list[str] = field(default_factory=list)  # (E,) the suite task of each episode, if recorded
    paraphrases: dict[str, list[str]] = field(default_factory=dict)  # instruction -> other wordings
