"""Shared by the benchmark scripts: machine description and JSON + markdown output."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"

# benchmarks/metaworld.py would shadow the metaworld package for every script run from here, and
# spawned workers inherit sys.path: keep this directory last on it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__, "python": sys.version.split()[0]}


def write(name: str, figures: dict, rows: list[dict], title: str) -> Path:
    """Write results/<name>.json (machine, command, figures, rows) and a markdown table of rows."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "command": " ".join(["python", *sys.argv]), "figures": figures, "rows": rows}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    cols = list(rows[0]) if rows else []
    md = [f"# {title}", "", f"Machine: {payload['machine']}", "", f"Command: `{payload['command']}`", ""]
    md += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return RESULTS / f"{name}.json"


def train_and_eval(data: Path, run: Path, steps: int, episodes: int, **train: object) -> dict:
    """Train on ``data`` into ``run`` (32-sample batches, no tracking; other TrainConfig fields
    from ``train``) and evaluate on the train split; finished stages are reused, so a re-run resumes."""
    from vlaforge.config import EvalConfig, TrainConfig
    from vlaforge.eval.rollout import evaluate
    from vlaforge.train.trainer import train as train_policy

    if not (run / "policy").exists():
        train_policy(TrainConfig(dataset=str(data), output_dir=str(run), steps=steps, batch_size=32, tracking="none",
                                 ckpt_every=500, resume=(run / "checkpoints").exists(), **train))
    out = run / "eval" / "train"
    if (out / "results.json").is_file():
        return json.loads((out / "results.json").read_text())
    return evaluate(EvalConfig(policy=str(run / "policy"), split="train", episodes=episodes, videos_per_task=0,
                               output_dir=str(out)))


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
