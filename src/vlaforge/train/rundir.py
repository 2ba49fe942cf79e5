"""The run directory every training loop writes (train, pretrain, safe RL): the refusal to
overwrite a finished or started run without ``--resume``, config.yaml, and metrics.jsonl cut back
to the checkpoint being resumed, so a resumed run's log has no repeated or missing rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlaforge.config import save_yaml
from vlaforge.files import atomic_write_text, read_jsonl


def open_run_dir(root: str | Path, resume: bool, started: bool, what: str) -> Path:
    """``root`` made ready: ``started`` says it already holds a run (a checkpoint or an output);
    a start over one, or a resume of none, is refused naming the flag that fixes it."""
    root = Path(root)
    if resume and not started:
        raise FileNotFoundError(f"--resume given but {root} holds no {what} checkpoint")
    if not resume and started:
        raise FileExistsError(f"{root} already holds a {what} run; pass --resume to continue it or choose another "
                              "--output_dir (nothing was changed)")
    root.mkdir(parents=True, exist_ok=True)
    return root


def save_config(root: Path, cfg: Any) -> None:
    save_yaml(cfg, root / "config.yaml")


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics log (``files.read_jsonl``: a torn last line is dropped)."""
    return read_jsonl(path, "the run", "the metrics log is damaged")


def truncate_metrics(path: Path, keep: Callable[[dict], bool]) -> list[dict]:
    """Rewrite ``path`` with the rows ``keep`` accepts (those up to the resumed checkpoint); -> them."""
    rows = [row for row in read_metrics(path) if keep(row)]
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    return rows
