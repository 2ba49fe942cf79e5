"""``vlaforge runs``: the training runs under a directory, one line each, from their files."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def _last_metrics(path: Path) -> dict:
    last = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    last = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut by a crash ends the readable log
    return last


def list_runs(root: str | Path) -> list[dict]:
    """Every directory under ``root`` holding a training run (its ``metrics.jsonl``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs directory {root} does not exist")
    rows = []
    for metrics in sorted(root.rglob("metrics.jsonl")):
        run = metrics.parent
        cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
        info = json.loads((run / "run_info.json").read_text()) if (run / "run_info.json").is_file() else {}
        last = _last_metrics(metrics)
        commit = info.get("commit")
        rows.append({
            "run": str(run.relative_to(root)),
            "status": "finished" if (run / "policy").is_dir() else "stopped" if (run / "checkpoints").is_dir() else "started",
            "step": f"{last.get('step', 0)}/{cfg.get('steps', '?')}",
            "loss": last.get("loss"),
            "optimizer": (cfg.get("optim") or {}).get("name"),
            "precision": cfg.get("precision"),
            "dataset": (info.get("dataset_hash") or "")[:12],
            "commit": (commit[:10] + ("+dirty" if info.get("dirty") else "")) if commit else "",
        })
    return rows
