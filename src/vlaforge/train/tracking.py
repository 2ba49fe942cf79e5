"""Experiment tracking: metrics.jsonl and run_info.json always, plus one backend.

| ``--tracking`` | where metrics go |
|---|---|
| ``mlflow`` (default) | a local MLflow file store under ``<run>/mlruns`` (``mlflow ui --backend-store-uri <run>/mlruns``) |
| ``wandb`` | Weights & Biases under ``<run>/wandb``; offline unless ``WANDB_MODE=online`` (``wandb sync`` uploads later) |
| ``console`` | one line per logging step on stdout |
| ``none`` | only metrics.jsonl |

Every backend also receives the run's description: the flattened config, the dataset's content
hash (``vlaforge.data.manifest``), the git commit of the code and the machine (``run_info``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import torch

from vlaforge.data.manifest import dataset_hash

BACKENDS = ("mlflow", "wandb", "console", "none")


# Benchmark outputs, not source: a chain of benchmarks run from one commit rewrites them, and
# that must not mark the later benchmarks of the chain as run from modified code.
OUTPUTS = ("benchmarks/results",)


def git_commit(where: Path | None = None) -> dict:
    """The commit of the git tree holding ``where`` (default: the vlaforge source tree) and
    whether it had uncommitted changes outside ``OUTPUTS``."""
    here = Path(where or Path(__file__).resolve().parent)
    excluded = [f":(top,exclude){p}" for p in OUTPUTS]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--", ":(top)", *excluded], cwd=here,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def system_info() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": socket.gethostname(), "platform": platform.platform(), "python": sys.version.split()[0],
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "gpu": gpu,
            "gpu_count": torch.cuda.device_count()}


def run_info(dataset: str | Path) -> dict:
    return {"dataset": str(dataset), "dataset_hash": dataset_hash(dataset), **git_commit(), "system": system_info()}


class Tracker:
    def __init__(self, run_dir: Path, backend: str, params: dict, info: dict, resume: bool) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown tracking backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.path = run_dir / "metrics.jsonl"
        self.backend = backend
        (run_dir / "run_info.json").write_text(json.dumps(info, indent=2))
        tags = flatten(info)
        self._mlflow = self._wandb = None
        if backend == "mlflow":
            # The file store keeps the run self-contained under run_dir/mlruns with no database
            # server; MLflow 3 keeps it in maintenance mode behind this switch.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            logging.getLogger("mlflow").setLevel(logging.ERROR)
            import mlflow

            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
            mlflow.set_experiment("vlaforge")
            run_id_file = run_dir / "mlflow_run_id"
            run_id = run_id_file.read_text().strip() if resume and run_id_file.is_file() else None
            run = mlflow.start_run(run_id=run_id, run_name=run_dir.name)
            run_id_file.write_text(run.info.run_id)
            if run_id is None:
                mlflow.log_params({k: str(v)[:250] for k, v in params.items()})
                mlflow.set_tags({k: str(v)[:250] for k, v in tags.items()})
            self._mlflow = mlflow
        elif backend == "wandb":
            import wandb

            os.environ.setdefault("WANDB_MODE", "offline")
            os.environ.setdefault("WANDB_SILENT", "true")
            id_file = run_dir / "wandb_run_id"
            run_id = id_file.read_text().strip() if resume and id_file.is_file() else uuid.uuid4().hex[:8]
            id_file.write_text(run_id)
            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "vlaforge"), dir=str(run_dir),
                                     name=run_dir.name, id=run_id, resume="allow", config=params | {"run_info": info})

    def log(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._mlflow is not None:
            self._mlflow.log_metrics(metrics, step=step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)
        if self.backend == "console":
            print(f"step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()), flush=True)

    def close(self) -> None:
        if self._mlflow is not None:
            self._mlflow.end_run()
        if self._wandb is not None:
            self._wandb.finish()


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out
