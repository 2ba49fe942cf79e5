"""Crash-safe file writes and content hashes, shared by every layer (imports nothing of vlaforge).

A file or directory is written under a temporary sibling name and renamed into place, so a
process killed at any instant leaves either the old version or the new one, never half of one.
Readers skip names ending in ``.tmp``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def tmp_path(path: str | os.PathLike) -> Path:
    """The temporary sibling ``path`` is written under before the rename."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, payload: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(payload, indent=indent))


@contextmanager
def atomic_dir(out: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out`` to fill; on success it becomes ``out``
    (an existing ``out`` is swapped out only with ``replace``), on any error it is removed.

    ``replace`` moves the old directory aside before the rename: a kill in between leaves
    ``out.old`` beside ``out.tmp``, both whole."""
    out = Path(out)
    tmp = tmp_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists() and replace:
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)  # an existing non-empty out raises OSError: nothing is lost


def read_jsonl(path: str | os.PathLike, writer: str, damaged: str) -> list:
    """The rows of an append-only JSON-lines file. A torn last line (``writer`` was killed while
    writing it) is dropped with a warning; a broken line before it is a ValueError naming the
    file, the line and ``damaged`` (what to do about it)."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not JSON; {damaged}") from None
            warnings.warn(f"{path}: dropping a torn last line ({writer} was killed while writing it)", stacklevel=3)
    return rows


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
