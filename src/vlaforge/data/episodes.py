"""Episodes as the dataset tools handle them: decoded whole (``load_episodes``) and written, a
chosen subset of one or several datasets, as a new dataset (``write_episodes``). Quality control,
relabelling, merge, split and delete all write through here; an input is never modified.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from vlaforge.data.dataset import PARAPHRASES_PATH, DatasetWriter, EpisodeFrames, LeRobotDataset
from vlaforge.data.manifest import write_manifest
from vlaforge.files import atomic_dir


@dataclass
class Episode:
    index: int
    row: dict  # its meta/episodes row
    images: np.ndarray  # (T, V, H, W, 3)
    state: np.ndarray
    action: np.ndarray
    env_state: np.ndarray | None

    @property
    def task(self) -> str:
        return self.row["tasks"][0]


def load_episodes(ds: LeRobotDataset) -> list[Episode]:
    data = ds.load(check_finite=False, verify=False)  # check_dataset reports what verify would refuse
    starts = np.concatenate([[0], np.cumsum(data.lengths)[:-1]])
    return [Episode(i, row, data.images[s:s + n], data.state[s:s + n], data.action[s:s + n],
                    None if data.env_state is None else data.env_state[s:s + n])
            for i, (row, s, n) in enumerate(zip(ds.episodes, starts, data.lengths))]


def _comparable(features: dict) -> dict:
    """Features as far as their frames must agree: a video stream's codec settings may differ."""
    return {k: {a: b for a, b in f.items() if a != "info"} | {"dtype": "image" if f["dtype"] == "video" else f["dtype"]}
            for k, f in features.items()}


def write_episodes(sources: list[tuple[LeRobotDataset, list[Episode] | None, dict[int, dict]]], output: str | Path,
                   extra_info: dict | None = None) -> Path:
    """Write, in order, the episodes each source keeps (``keep``: episode index -> {frames: kept
    frame indices or None, task, extra}) to a new dataset at ``output``, then its manifest. A
    source given without its episodes (None) is decoded when its turn comes and released after,
    so a merge holds one input in memory at a time.

    PNG frames keep their stored bytes (and so their content hash); a video stream is copied when
    its file holds that one whole episode, else encoded anew from the decoded frames (one more
    lossy generation). The output takes the first source's features, fps and ``vlaforge`` info
    (``extra_info`` replaces the latter); every source must agree on the features' frames."""
    out = Path(output)
    first = sources[0][0]
    for ds, _, _ in sources:
        if out.resolve() == ds.root.resolve():
            raise ValueError("the output must be a new directory: an input dataset is never modified")
        if _comparable(ds.features) != _comparable(first.features) or list(ds.features) != list(first.features) \
                or ds.fps != first.fps:
            diff = sorted(k for k in {*ds.features, *first.features}
                          if _comparable(ds.features).get(k) != _comparable(first.features).get(k))
            raise ValueError(f"{ds.root} and {first.root} differ in fps ({ds.fps} vs {first.fps}) or in the features "
                             f"{diff or '(none)'}: only datasets of one observation/action layout can be combined")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty; choose another --output (nothing was changed)")
    info = {k: v for k, v in first.info.items() if k == "vlaforge"} if extra_info is None else extra_info
    # Every vlaforge/* column of the inputs plus those the specs add, declared up front so every
    # row of the output carries all of them (a relabelled episode's relabelled_from, null elsewhere).
    columns: dict[str, pa.DataType] = {}
    for ds, _, keep in sources:
        ours = pa.Table.from_pylist([{k: v for k, v in e.items() if k.startswith("vlaforge/")} for e in ds.episodes])
        for f in ours.schema:  # a column null in every row is typed as a string
            columns.setdefault(f.name, pa.string() if pa.types.is_null(f.type) else f.type)
        for spec in keep.values():
            for k, v in spec.get("extra", {}).items():
                columns.setdefault(k, pa.Table.from_pylist([{k: v}]).schema.field(k).type)
    paraphrases: dict[str, list[str]] = {}
    with atomic_dir(out) as tmp:  # renamed into place once whole (onto an empty out); removed on failure
        writer = DatasetWriter(tmp, first.features, first.fps, robot_type=first.info.get("robot_type", "unknown"),
                               extra_info=info, extra_columns=columns)
        for ds, eps, keep in sources:
            for k, v in ds.paraphrases.items():
                paraphrases.setdefault(k, v)
            pngs_of = [k for k in ds.image_keys if ds.features[k]["dtype"] == "image"]
            stored = ds.episode_tables([*pngs_of, "episode_index"])  # one data file in memory at a time
            sharing = _episodes_per_video_file(ds)
            for ep, (_, rows) in zip(eps if eps is not None else load_episodes(ds), stored):
                if ep.index not in keep:
                    continue
                spec = keep[ep.index]
                frames = np.arange(len(ep.action)) if spec.get("frames") is None else np.asarray(spec["frames"])
                whole = spec.get("frames") is None
                encoded = [_stored(ds, ep.row, rows, key, frames, whole, writer.features[key], sharing)
                           for key in ds.image_keys]
                extra = {k: v for k, v in ep.row.items() if k.startswith("vlaforge/")} | spec.get("extra", {})
                writer.add_episode(EpisodeFrames(ep.images[frames], ep.state[frames], ep.action[frames],
                                                 spec.get("task", ep.task),
                                                 None if ep.env_state is None else ep.env_state[frames]),
                                   encoded_images=encoded, extra=extra)
        if paraphrases:
            (tmp / PARAPHRASES_PATH).write_text(json.dumps(paraphrases, indent=2))
        write_manifest(tmp)
    return out


def _video_file(row: dict, key: str) -> tuple[int, int]:
    return row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"]


def _episodes_per_video_file(ds: LeRobotDataset) -> Counter:
    """(camera, chunk, file) -> how many of ``ds``'s episodes that video file holds."""
    keys = [k for k in ds.image_keys if ds.features[k]["dtype"] == "video"]
    return Counter((key, *_video_file(e, key)) for e in ds.episodes for key in keys)


def _stored(ds: LeRobotDataset, row: dict, rows: pa.Table, key: str, frames: np.ndarray, whole: bool,
            target: dict, sharing: Counter) -> list[bytes] | bytes | None:
    """What can be copied instead of encoded for camera ``key`` of one episode written as
    ``target`` (the output's feature): its PNG bytes, or its MP4 file when that holds exactly
    this whole episode in the same codec (``sharing``: episodes per video file); None to
    encode the decoded frames."""
    source = ds.features[key]
    if target["dtype"] == "image":
        return [rows[key][int(f)].as_py()["bytes"] for f in frames] if source["dtype"] == "image" else None
    if source != target or not whole or row[f"videos/{key}/from_timestamp"] != 0:
        return None
    chunk, file = _video_file(row, key)
    if sharing[key, chunk, file] != 1:
        return None
    return (ds.root / ds.info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)).read_bytes()
