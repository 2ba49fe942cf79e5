"""Metric tracking: metrics.jsonl always, plus a local MLflow store under the run directory."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path


class Tracker:
    def __init__(self, run_dir: Path, backend: str, params: dict, resume: bool) -> None:
        if backend not in ("mlflow", "none"):
            raise ValueError(f"unknown tracking backend {backend!r}; use mlflow or none")
        self.path = run_dir / "metrics.jsonl"
        self._mlflow = None
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
            self._mlflow = mlflow

    def log(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._mlflow is not None:
            self._mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        if self._mlflow is not None:
            self._mlflow.end_run()


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out
