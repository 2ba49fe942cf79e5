"""Dataset tools: ``vlaforge data convert|merge|split|delete``. Each writes a new dataset (with its
own manifest) and leaves its inputs untouched.

    convert   a LeRobot v2.1 dataset (per-episode files, JSON-lines metadata) to v3.0
    merge     several datasets of one observation/action layout, episodes in input order
    split     the episodes named by --episodes and/or --tasks to --output, the rest to --rest
    delete    every episode except those named by --episodes and/or --tasks
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from vlaforge.data import video
from vlaforge.data.config import DataConfig
from vlaforge.data.dataset import (
    ENV_STATE,
    IMAGE_PREFIX,
    DatasetError,
    DatasetWriter,
    EpisodeFrames,
    LeRobotDataset,
    _decode_image,
    _read_json,
    _read_table,
)
from vlaforge.data.episodes import load_episodes, write_episodes
from vlaforge.data.manifest import dataset_hash, write_manifest
from vlaforge.files import atomic_dir


def _chosen(ds: LeRobotDataset, cfg: DataConfig) -> set[int]:
    """Indices of the episodes named by --episodes and/or --tasks (both given: either)."""
    if not cfg.episodes and not cfg.tasks:
        raise ValueError(f"data {cfg.action} needs --episodes=[i,...] and/or --tasks=[task,...] to name episodes")
    bad = [i for i in cfg.episodes if not 0 <= i < ds.num_episodes]
    if bad:
        raise ValueError(f"--episodes: {bad} not in {cfg.dataset} (episodes 0..{ds.num_episodes - 1})")
    named = {e.get("vlaforge/task") for e in ds.episodes} | {t for e in ds.episodes for t in e["tasks"]}
    unknown = sorted(set(cfg.tasks) - named)
    if unknown:
        raise ValueError(f"--tasks: {unknown} not in {cfg.dataset}; it holds {sorted(t for t in named if t)}")
    return {i for i, e in enumerate(ds.episodes)
            if i in cfg.episodes or e.get("vlaforge/task") in cfg.tasks or set(e["tasks"]) & set(cfg.tasks)}


def split(cfg: DataConfig) -> dict:
    """The chosen episodes to ``output``, the others (with ``rest``) to ``rest``."""
    if not cfg.output:
        raise ValueError(f"data {cfg.action} needs --output=DIR (a new dataset; the input is never modified)")
    ds = LeRobotDataset(cfg.dataset)
    chosen = _chosen(ds, cfg)
    if cfg.action == "delete":
        chosen = set(range(ds.num_episodes)) - chosen
    parts = [(cfg.output, chosen)] + ([(cfg.rest, set(range(ds.num_episodes)) - chosen)] if cfg.rest else [])
    if any(not keep for _, keep in parts):
        raise ValueError(f"data {cfg.action} would write a dataset without episodes; nothing was written")
    eps = load_episodes(ds)
    for out, keep in parts:
        write_episodes([(ds, eps, {i: {} for i in sorted(keep)})], out)
    return {"dataset": cfg.dataset, "outputs": {out: len(keep) for out, keep in parts}}


def merge(cfg: DataConfig) -> dict:
    """``datasets`` in order into ``output``; the provenance (paths, content hashes) goes to its info."""
    if len(cfg.datasets) < 2 or not cfg.output:
        raise ValueError("data merge needs two or more --datasets=[A,B,...] and --output=DIR")
    sources = []
    for path in cfg.datasets:
        ds = LeRobotDataset(path)
        sources.append((ds, None, {i: {} for i in range(ds.num_episodes)}))  # decoded in turn
    infos = [ds.info.get("vlaforge") for ds, _, _ in sources]
    info = {"vlaforge": infos[0]} if all(i == infos[0] for i in infos) and infos[0] else {}
    info["merged_from"] = [{"path": str(ds.root), "episodes": ds.num_episodes, "hash": dataset_hash(ds.root)}
                           for ds, _, _ in sources]
    write_episodes(sources, cfg.output, extra_info=info)
    return {"datasets": cfg.datasets, "output": cfg.output, "episodes": sum(ds.num_episodes for ds, _, _ in sources)}


# --- LeRobot v2.1 -> v3.0 -------------------------------------------------------------------------

V21_SUPPORTED = {"observation.state", "action", ENV_STATE, "timestamp", "frame_index", "episode_index", "index",
                 "task_index"}


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DatasetError(f"not a LeRobot v2.1 dataset: {path} is missing")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise DatasetError(f"corrupt dataset file {path}: {e}") from None


def convert(cfg: DataConfig) -> dict:
    """A LeRobot v2.1 dataset to v3.0 at ``output``.

    v2.1 keeps one parquet file per episode (``data/chunk-XXX/episode_XXXXXX.parquet``), one mp4
    per episode and camera (``videos/chunk-XXX/<key>/episode_XXXXXX.mp4``) and its metadata as
    JSON lines (meta/episodes.jsonl, meta/tasks.jsonl). The cameras, state, action and privileged
    state carry over (PNG bytes and per-episode mp4 files copied as they are); any other feature
    is named in the summary and in the output's info as dropped, since our episodes hold only
    those. Statistics are recomputed from the frames."""
    if not cfg.output:
        raise ValueError("data convert needs --output=DIR (the v3.0 dataset; the input is never modified)")
    root = Path(cfg.dataset)
    if not (root / "meta/info.json").is_file():
        raise DatasetError(f"not a dataset: {root / 'meta/info.json'} is missing")
    info = _read_json(root / "meta/info.json", dict, "an object with codebase_version, fps and features")
    if info.get("codebase_version") != "v2.1":
        raise DatasetError(f"{root / 'meta/info.json'}: codebase_version {info.get('codebase_version')!r}; "
                           "data convert reads v2.1 (v3.0 is read as it is)")
    features, fps = info["features"], int(info["fps"])
    cams = [k for k, f in features.items() if f["dtype"] in ("image", "video")]
    if not cams or "observation.state" not in features or "action" not in features:
        raise DatasetError(f"{root}: need camera features, observation.state and action; it has {sorted(features)}")
    shapes = {tuple(features[k]["shape"]) for k in cams}
    if len(shapes) != 1:
        raise DatasetError(f"{root}: cameras of different shapes {sorted(shapes)} cannot share one episode array")
    dropped = sorted(k for k in features if k not in V21_SUPPORTED and k not in cams)
    # Our cameras are observation.images.<name> (lerobot's v2.1 datasets also use e.g. observation.image);
    # a stream in a codec we do not write is encoded anew in AV1.
    renamed = {k: k if k.startswith(IMAGE_PREFIX) else IMAGE_PREFIX + k.rsplit(".", 1)[-1] for k in cams}
    copy = {k: features[k]["dtype"] == "image" or features[k].get("info", {}).get("video.codec") in video.CODECS
            for k in cams}
    out_features = {}
    for k, f in features.items():
        if k in cams and f["dtype"] == "video" and not copy[k]:
            f = f | {"info": video.feature_info("av1", f["shape"][0], f["shape"][1], fps)}
        if k not in dropped:
            out_features[renamed.get(k, k)] = f
    tasks = {t["task_index"]: t["task"] for t in _jsonl(root / "meta/tasks.jsonl")}
    episodes = sorted(_jsonl(root / "meta/episodes.jsonl"), key=lambda e: e["episode_index"])
    chunks = int(info.get("chunks_size", 1000))
    extra = {"vlaforge_converted_from": {"path": str(root), "codebase_version": "v2.1", "dropped_features": dropped,
                                         "renamed_features": {k: v for k, v in renamed.items() if k != v}}}
    with atomic_dir(cfg.output) as tmp:
        writer = DatasetWriter(tmp, out_features, fps, robot_type=info.get("robot_type", "unknown"), extra_info=extra,
                               extra_columns={"vlaforge/source_episode": pa.int64()})
        for e in episodes:
            index, chunk = e["episode_index"], e["episode_index"] // chunks
            path = root / info["data_path"].format(episode_chunk=chunk, episode_index=index)
            table = _read_table(path)
            n = table.num_rows
            images, encoded = [], []
            for key in cams:
                if features[key]["dtype"] == "image":
                    cells = table[key].to_pylist()
                    images.append(np.stack([_decode_image(c, path, root) for c in cells]))
                    encoded.append([c["bytes"] if isinstance(c, dict) else c for c in cells])
                    continue
                mp4 = root / info["video_path"].format(episode_chunk=chunk, video_key=key, episode_index=index)
                if not mp4.is_file():
                    raise DatasetError(f"dataset file is missing: {mp4}")
                with video.VideoReader(mp4) as r:
                    images.append(r.span(0.0, n / fps))
                encoded.append(mp4.read_bytes() if copy[key] else None)
            task_index = table["task_index"][0].as_py()
            if task_index not in tasks:
                raise DatasetError(f"{path}: task_index {task_index} is not in {root / 'meta/tasks.jsonl'}")
            vec = {k: np.asarray(table[k].to_pylist(), dtype=np.float32) for k in ("observation.state", "action", ENV_STATE)
                   if k in out_features}
            writer.add_episode(EpisodeFrames(np.stack(images, axis=1), vec["observation.state"], vec["action"],
                                             tasks[task_index], vec.get(ENV_STATE)),
                               encoded_images=encoded, extra={"vlaforge/source_episode": index})
        write_manifest(tmp)
    return {"dataset": str(root), "output": cfg.output, "episodes": len(episodes), "dropped_features": dropped,
            "renamed_features": extra["vlaforge_converted_from"]["renamed_features"]}

