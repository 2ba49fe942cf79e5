"""Episode store in the LeRobotDataset v3.0 layout.

    meta/info.json                                features, fps, totals, path templates
    meta/stats.json                               per-feature mean/std/min/max/count
    meta/tasks.parquet                            task string -> task_index
    meta/episodes/chunk-XXX/file-XXX.parquet      one row per episode (lengths, file locations)
    data/chunk-XXX/file-XXX.parquet               frame table; images as PNG {bytes, path} structs

The writer puts each episode in its own data file and its own episode-metadata file, each written
to a temporary name and renamed, data before metadata. An episode listed in meta/episodes is
therefore complete on disk, and an interrupted collection leaves every finished episode readable.
The reader accepts several episodes per file (as the ``lerobot`` package writes them) and
recomputes the totals from meta/episodes rather than trusting info.json.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
IMAGE_PREFIX = "observation.images."
ENV_STATE = "observation.environment_state"
PARAPHRASES_PATH = "meta/paraphrases.json"  # vlaforge's addition: instruction -> other wordings


class DatasetError(ValueError):
    """A dataset that is missing, corrupt or inconsistent; the message names the file."""


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def _atomic_write_table(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    _atomic_write_bytes(path, sink.getvalue().to_pybytes())


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(payload: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))


def make_features(
    cameras: list[str], image_size: int, state_names: list[str], action_names: list[str], env_state_names: list[str] | None = None
) -> dict:
    """LeRobot v3.0 feature spec for our observation/action contract (plus optional privileged state)."""
    features = {
        f"{IMAGE_PREFIX}{cam}": {
            "dtype": "image",
            "shape": [image_size, image_size, 3],
            "names": ["height", "width", "channels"],
        }
        for cam in cameras
    }
    features["observation.state"] = {"dtype": "float32", "shape": [len(state_names)], "names": state_names}
    features["action"] = {"dtype": "float32", "shape": [len(action_names)], "names": action_names}
    if env_state_names:
        features[ENV_STATE] = {"dtype": "float32", "shape": [len(env_state_names)], "names": env_state_names}
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64")):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
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
    """Appends episodes to a LeRobot v3.0 dataset directory, crash-safely."""

    def __init__(
        self,
        root: str | os.PathLike,
        features: dict,
        fps: int,
        robot_type: str = "vlaforge_tabletop_gripper",
        resume: bool = False,
        extra_info: dict | None = None,
    ) -> None:
        self.root = Path(root)
        self.features, self.fps, self.robot_type = features, fps, robot_type
        self.extra_info = extra_info or {}
        self.cameras = [k[len(IMAGE_PREFIX):] for k in features if k.startswith(IMAGE_PREFIX)]
        existing = (self.root / "meta").exists() or (self.root / "data").exists()
        if existing and not resume:
            raise FileExistsError(
                f"dataset directory {self.root} already holds a dataset; pass resume=True (--resume) to add "
                "to it or choose another output, nothing was changed"
            )
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict] = []
        self.total_frames = 0
        self._sums: dict[str, list] = {}
        if existing:
            old = LeRobotDataset(self.root)
            if old.info["features"] != features or old.info["fps"] != fps:
                raise DatasetError(f"cannot resume into {self.root}: its features or fps differ from this run's")
            self.tasks = {t: i for i, t in enumerate(old.tasks)}
            self.episodes = old.episodes
            self.total_frames = sum(e["length"] for e in old.episodes)
            self._seed_sums(old.stats)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

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

        ``extra`` adds columns to the episode's metadata row (the collector records task and seed).
        """
        self._validate(ep)
        n = len(ep.action)
        index = self.num_episodes
        chunk, file = divmod(index, CHUNKS_SIZE)
        task_index = self.tasks.setdefault(ep.task, len(self.tasks))
        start = self.total_frames
        columns: dict[str, pa.Array] = {}
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        for v, cam in enumerate(self.cameras):
            pngs = encoded_images[v] if encoded_images else [encode_png(img) for img in ep.images[:, v]]
            columns[f"{IMAGE_PREFIX}{cam}"] = pa.array([{"bytes": b, "path": None} for b in pngs], type=image_type)
        for key, arr in ep.arrays():
            dim = arr.shape[1]
            columns[key] = pa.FixedSizeListArray.from_arrays(pa.array(arr.astype(np.float32).ravel()), dim)
        columns["timestamp"] = pa.array(np.arange(n, dtype=np.float32) / self.fps)
        columns["frame_index"] = pa.array(np.arange(n, dtype=np.int64))
        columns["episode_index"] = pa.array(np.full(n, index, dtype=np.int64))
        columns["index"] = pa.array(np.arange(start, start + n, dtype=np.int64))
        columns["task_index"] = pa.array(np.full(n, task_index, dtype=np.int64))
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
        for key, arr in ep.arrays():
            for stat, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
                row[f"stats/{key}/{stat}"] = fn(arr, axis=0).astype(np.float64).tolist()
            row[f"stats/{key}/count"] = [n]
        row.update(extra or {})
        _atomic_write_table(self.root / EPISODES_PATH.format(chunk_index=chunk, file_index=file), pa.Table.from_pylist([row]))
        self.episodes.append(row)
        self.total_frames += n
        self._accumulate(ep)
        self._write_meta()
        return index

    def _accumulate(self, ep: EpisodeFrames) -> None:
        for key, arr in ep.arrays():
            self._accumulate_rows(key, arr.astype(np.float64))
        imgs = ep.images.astype(np.float64) / 255.0
        for v, cam in enumerate(self.cameras):
            self._accumulate_rows(f"{IMAGE_PREFIX}{cam}", imgs[:, v].reshape(-1, 3))

    def _accumulate_rows(self, key: str, rows: np.ndarray) -> None:
        """Running count, sum, sum of squares, min and max of ``rows`` (N, D) for ``key``."""
        s = self._sums.setdefault(key, [0, 0.0, 0.0, None, None])
        s[0] += len(rows)
        s[1] = s[1] + rows.sum(0)
        s[2] = s[2] + (rows**2).sum(0)
        s[3] = rows.min(0) if s[3] is None else np.minimum(s[3], rows.min(0))
        s[4] = rows.max(0) if s[4] is None else np.maximum(s[4], rows.max(0))

    def _seed_sums(self, stats: dict) -> None:
        """Start the running sums from the statistics of the episodes found on resume."""
        for key, st in stats.items():
            if "count" not in st:
                continue
            c = int(np.asarray(st["count"]).ravel()[0])
            mean = np.asarray(st["mean"], dtype=np.float64).reshape(-1)
            std = np.asarray(st["std"], dtype=np.float64).reshape(-1)
            self._sums[key] = [
                c, mean * c, (std**2 + mean**2) * c,
                np.asarray(st["min"], dtype=np.float64).reshape(-1), np.asarray(st["max"], dtype=np.float64).reshape(-1),
            ]

    def _stats(self) -> dict:
        out = {}
        for key, (count, s1, s2, lo, hi) in self._sums.items():
            mean = s1 / count
            std = np.sqrt(np.maximum(s2 / count - mean**2, 0.0))
            shape = (3, 1, 1) if key.startswith(IMAGE_PREFIX) else (-1,)
            out[key] = {
                "mean": mean.reshape(shape).tolist(),
                "std": std.reshape(shape).tolist(),
                "min": lo.reshape(shape).tolist(),
                "max": hi.reshape(shape).tolist(),
                "count": [int(count)],
            }
        return out

    def _write_meta(self) -> None:
        _atomic_write_table(self.root / "meta/tasks.parquet", _tasks_table(self.tasks))
        _atomic_write_bytes(self.root / "meta/stats.json", json.dumps(self._stats(), indent=2).encode())
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
            "video_path": None,
            "features": self.features,
            **self.extra_info,
        }
        _atomic_write_bytes(self.root / "meta/info.json", json.dumps(info, indent=2).encode())


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


def _read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"dataset file is missing: {path}")
    try:
        return pq.read_table(path, columns=columns)
    except Exception as e:  # pyarrow raises several types for truncated/garbled files
        raise DatasetError(f"corrupt or truncated dataset file {path}: {e}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LeRobotDataset:
    """Reads a LeRobot v3.0 dataset directory fully into memory."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        info_path = self.root / "meta/info.json"
        if not info_path.is_file():
            raise DatasetError(f"not a dataset: {info_path} is missing")
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"corrupt dataset file {info_path}: {e}") from None
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(f"{info_path}: codebase_version {version!r} is not supported (need {CODEBASE_VERSION})")
        self.features: dict = self.info["features"]
        self.fps: int = int(self.info["fps"])
        self.image_keys = [k for k, f in self.features.items() if f["dtype"] in ("image", "video")]
        if not self.image_keys:
            raise DatasetError(f"{info_path}: dataset has no image features")
        self.tasks = self._read_tasks()
        para_path = self.root / PARAPHRASES_PATH
        try:
            self.paraphrases: dict[str, list[str]] = json.loads(para_path.read_text()) if para_path.is_file() else {}
        except json.JSONDecodeError as e:
            raise DatasetError(f"corrupt dataset file {para_path}: {e}") from None
        stats_path = self.root / "meta/stats.json"
        self.stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
        ep_files = sorted((self.root / "meta/episodes").glob("chunk-*/file-*.parquet"))
        rows = []
        for f in ep_files:
            rows += _read_table(f).to_pylist()
        self.episodes = sorted(rows, key=lambda r: r["episode_index"])
        if not self.episodes:
            raise DatasetError(f"dataset {self.root} has no episodes")

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

    def verify(self) -> int:
        """Check every file ``manifest.json`` lists against its recorded size and sha256 (a flipped
        byte in a parquet file can decode to different values without any error); -> the number
        of files checked, 0 for a dataset without a manifest (written elsewhere)."""
        path = self.root / "manifest.json"
        if not path.is_file():
            return 0
        try:
            files = json.loads(path.read_text())["files"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DatasetError(f"corrupt dataset file {path}: {e}") from None
        for rel, entry in files.items():
            f = self.root / rel
            if not f.is_file():
                raise DatasetError(f"{f} is listed in {path} but missing")
            if f.stat().st_size != entry.get("bytes") or sha256_file(f) != entry.get("sha256"):
                raise DatasetError(f"{f} does not match its sha256 in {path}: the file changed after the dataset was "
                                   "written (corruption, an interrupted collection: `vlaforge collect --resume`, or an "
                                   "edit: `vlaforge data manifest` records it)")
        return len(files)

    def load(self, check_finite: bool = True, verify: bool = True) -> "EpisodeArrays":
        """Decode every frame: the in-memory arrays the sampler trains from. Quality control
        loads with ``check_finite=False`` to report NaN episodes instead of refusing them;
        ``verify`` first checks the files against the dataset's manifest (``verify()``)."""
        if verify:
            self.verify()
        for key in ("observation.state", "action"):
            if key not in self.features:
                raise DatasetError(f"{self.root}: feature {key!r} is missing from meta/info.json")
        by_file: dict[tuple[int, int], list[dict]] = {}
        for e in self.episodes:
            by_file.setdefault((e["data/chunk_index"], e["data/file_index"]), []).append(e)
        images, states, actions, env_states, ep_idx, task_idx = [], [], [], [], [], []
        has_env_state = ENV_STATE in self.features
        lengths, ep_tasks = [], []
        for (chunk, file), eps in sorted(by_file.items()):
            path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
            table = _read_table(path)
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
                        views.append(_decode_video(self.root, self.info, key, e))
                    else:
                        views.append(np.stack([_decode_image(v, path) for v in sub[key].to_pylist()]))
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


def _decode_image(value, path: Path) -> np.ndarray:
    if isinstance(value, dict):
        payload = value.get("bytes")
        if payload is None and value.get("path"):
            payload = (path.parent / value["path"]).read_bytes()
    else:
        payload = value
    try:
        return decode_png(payload)
    except Exception as e:
        raise DatasetError(f"dataset file {path}: an image cannot be decoded ({e})") from None


def _decode_video(root: Path, info: dict, key: str, episode: dict) -> np.ndarray:
    """Frames of one episode from a LeRobot video file (needs PyAV: pip install av)."""
    try:
        import av
    except ImportError:
        raise DatasetError(f"feature {key!r} is stored as video; install PyAV (pip install av) to read it") from None
    path = root / info["video_path"].format(
        video_key=key, chunk_index=episode[f"videos/{key}/chunk_index"], file_index=episode[f"videos/{key}/file_index"]
    )
    t0, t1 = episode[f"videos/{key}/from_timestamp"], episode[f"videos/{key}/to_timestamp"]
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            t = float(frame.pts * frame.time_base)
            if t0 - 1e-4 <= t < t1 - 1e-4:
                frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames[: episode["length"]])


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
