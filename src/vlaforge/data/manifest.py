"""Dataset versions: a manifest of content hashes, the dataset hash runs record, and diffs.

``manifest.json`` at the dataset root lists the sha256 of every content file (``meta/``,
``data/``, ``videos/``) and of every episode (its frames' image bytes, state, action and
privileged state, and its instruction, independent of where in the dataset it sits). The
dataset hash is the sha256 of the sorted file list, so it changes if and only if the content
does: reports, configs, DVC files or a rewritten-but-identical manifest beside the data leave
it alone. Training records it in ``run_info.json`` and MLflow (tag ``dataset_hash``);
``vlaforge data diff A B`` says which episodes were added, removed or kept between two
versions (directories or saved manifests).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

from vlaforge.data.dataset import DatasetError, LeRobotDataset
from vlaforge.files import atomic_write_json, sha256_file

MANIFEST = "manifest.json"
CONTENT_DIRS = ("meta", "data", "videos")
EPISODE_COLUMNS_SKIPPED = ("index", "episode_index", "frame_index", "timestamp", "task_index")


def file_hashes(root: str | os.PathLike) -> dict[str, dict]:
    """{relative path: {sha256, bytes}} of every content file (temporary files excluded)."""
    root = Path(root)
    out = {}
    for top in CONTENT_DIRS:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                out[path.relative_to(root).as_posix()] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def hash_of_files(files: dict[str, dict]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\0{files[rel]['sha256']}\n".encode())
    return digest.hexdigest()


def dataset_hash(root: str | os.PathLike) -> str:
    """The content hash of a dataset directory (see the module docstring)."""
    files = file_hashes(root)
    if not files:
        raise DatasetError(f"{root} holds no dataset content ({', '.join(CONTENT_DIRS)})")
    return hash_of_files(files)


def episode_hashes(ds: LeRobotDataset) -> list[dict]:
    """Per episode: index, task, length and the sha256 of its content."""
    out = []
    for e, rows in ds.episode_tables():
        digest = hashlib.sha256(json.dumps(e["tasks"]).encode())
        for name in sorted(c for c in rows.column_names if c not in EPISODE_COLUMNS_SKIPPED):
            for value in rows[name].to_pylist():
                payload = value["bytes"] if isinstance(value, dict) and "bytes" in value else value
                digest.update(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        for key in (k for k in ds.image_keys if ds.features[k]["dtype"] == "video"):  # its stream: file and span
            path = ds.root / ds.info["video_path"].format(video_key=key, chunk_index=e[f"videos/{key}/chunk_index"],
                                                          file_index=e[f"videos/{key}/file_index"])
            digest.update(sha256_file(path).encode() + json.dumps(
                [e[f"videos/{key}/from_timestamp"], e[f"videos/{key}/to_timestamp"]]).encode())
        out.append({"index": e["episode_index"], "task": e["tasks"][0], "length": e["length"], "sha256": digest.hexdigest()})
    return out


def build_manifest(root: str | os.PathLike) -> dict:
    ds = LeRobotDataset(root)
    files = file_hashes(root)
    return {"format": 1, "hash": hash_of_files(files), "episodes": episode_hashes(ds), "files": files,
            "total_episodes": ds.num_episodes, "total_frames": sum(e["length"] for e in ds.episodes)}


def write_manifest(root: str | os.PathLike) -> dict:
    """Write ``manifest.json`` atomically beside the data; returns it."""
    manifest = build_manifest(root)
    path = Path(root) / MANIFEST
    atomic_write_json(path, manifest, indent=1)
    return manifest


def read_manifest(source: str | os.PathLike) -> dict:
    """A dataset version: a manifest file, or a dataset directory (its manifest is rebuilt, so
    a stale manifest.json never misleads)."""
    p = Path(source)
    if p.is_dir():
        return build_manifest(p)
    if not p.is_file():
        raise FileNotFoundError(f"{p} is neither a dataset directory nor a manifest file")
    try:
        m = json.loads(p.read_text())
        m["hash"], m["episodes"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DatasetError(f"{p} is not a vlaforge manifest: {e}") from None
    return m


def _take(episodes: list[dict], wanted: Counter) -> list[dict]:
    """The episodes whose content hash is still wanted, each hash as often as it is."""
    left, out = Counter(wanted), []
    for e in episodes:
        if left[e["sha256"]] > 0:
            left[e["sha256"]] -= 1
            out.append(e)
    return out


def diff_manifests(a: dict, b: dict) -> dict:
    """Episodes added, removed and kept (by content) from version ``a`` to ``b``, task counts
    and the content files that changed."""
    ha = Counter(e["sha256"] for e in a["episodes"])
    hb = Counter(e["sha256"] for e in b["episodes"])
    tasks_a = Counter(e["task"] for e in a["episodes"])
    tasks_b = Counter(e["task"] for e in b["episodes"])
    fa, fb = a.get("files", {}), b.get("files", {})
    return {
        "same": a["hash"] == b["hash"],
        "hash": [a["hash"], b["hash"]],
        "episodes": [len(a["episodes"]), len(b["episodes"])],
        "added": _take(b["episodes"], hb - ha),
        "removed": _take(a["episodes"], ha - hb),
        "kept": sum((ha & hb).values()),
        "tasks": {t: [tasks_a.get(t, 0), tasks_b.get(t, 0)] for t in sorted(set(tasks_a) | set(tasks_b))
                  if tasks_a.get(t, 0) != tasks_b.get(t, 0)},
        "files_changed": sorted(k for k in set(fa) | set(fb) if fa.get(k, {}).get("sha256") != fb.get(k, {}).get("sha256")),
    }
