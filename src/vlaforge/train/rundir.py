"""The run directory every training loop writes (train, pretrain, safe RL): the refusal to
overwrite a finished or started run without ``--resume``, config.yaml, and metrics.jsonl cut back
to the checkpoint being resumed, so a resumed run's log has no repeated or missing rows.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlaforge.config import save_yaml
from vlaforge.files import atomic_write_text


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
    """The rows of a metrics log; a torn last line (killed while writing it) is dropped with a
    warning, a broken line before it is an error naming the file and line."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: dropping a torn last line (the run was killed while writing it)", stacklevel=3)
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON; the metrics log is damaged") from None
    return rows


def truncate_metrics(path: Path, keep: Callable[[dict], bool]) -> list[dict]:
    """Rewrite ``path`` with the rows ``keep`` accepts (those up to the resumed checkpoint); -> them."""
    rows = [row for row in read_metrics(path) if keep(row)]
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    return rows
