"""Each parallelism of `vlaforge train` at 2 processes against 1 process, same global batch:
throughput, the share of the weights a rank holds, and the peak resident memory of a process.

    python benchmarks/parallel.py [--steps=60]

On CPU (gloo) both processes share the machine's cores, so this measures what the modes cost in
communication and save in memory, not a speed-up; on a multi-GPU machine (NCCL) the same
command line scales. Writes benchmarks/results/parallel_<device>.{json,md}.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from common import cache_root, stage, write

from vlaforge.data.collect import collect
from vlaforge.data.config import CollectConfig
from vlaforge.envs.config import EnvConfig

PEAK_OF_CHILDREN = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
                    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
GLOBAL_BATCH = 64
MODES = {"1 process": [], "dp=2 (DDP)": ["--parallel.dp=2"], "fsdp=2 (FSDP2)": ["--parallel.fsdp=2"],
         "tp=2 (tensor)": ["--parallel.tp=2"], "pp=2 (pipeline, 1F1B, 4 micro-batches)": ["--parallel.pp=2"]}


def dataset(root: Path) -> Path:
    """Two tabletop tasks, 20 demonstrations each (collected once)."""
    data = root / "data"
    with stage("collect", reused=(data / "meta").exists()):
        collect(CollectConfig(env=EnvConfig(tasks=["reach", "push"]), episodes_per_task=20, output=str(data),
                              resume=(data / "meta").exists()), show_progress=False)
    return data


def run_mode(root: Path, label: str, args: list[str], steps: int, data: Path) -> dict:
    """Train ``steps`` steps of global batch 64 with ``args`` (2 processes when a parallelism is given)."""
    cores = os.cpu_count() or 1
    nproc = 2 if any(a.startswith("--parallel.") for a in args) else 1
    data_ranks = 2 if any(a.startswith(("--parallel.dp", "--parallel.fsdp")) for a in args) else 1
    out = root / re.sub(r"\W+", "_", label).strip("_")
    shutil.rmtree(out, ignore_errors=True)
    train = ["-m", "vlaforge", "train", f"--dataset={data}", f"--output_dir={out}", f"--steps={steps}",
             f"--batch_size={GLOBAL_BATCH // data_ranks}", "--tracking=none", f"--log_every={steps // 3}",
             f"--ckpt_every={steps}", f"--threads={max(1, cores // nproc)}", *args]
    cmd = [sys.executable, *train] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *train]
    # A fresh wrapper process per mode: its children's peak RSS is this mode's alone.
    wrapper = [sys.executable, "-c", PEAK_OF_CHILDREN, *cmd]
    proc = subprocess.run(wrapper, check=True, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // nproc))))
    peak_kb = int(proc.stdout.strip().splitlines()[-1])
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "train_summary.json").read_text())
    rate = sum(m["samples_per_s"] for m in log[1:]) / max(1, len(log) - 1)  # the first window holds start-up
    return {"mode": label, "processes": nproc, "samples/s": round(rate, 1),
            "weights held by rank 0": f"{summary['local_param_fraction']:.0%}",
            "peak RSS per process (MB)": round(peak_kb / 1024), "final loss": round(log[-1]["loss"], 4)}


def main() -> None:
    steps = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--steps=")), 60)
    root = cache_root("runs/bench_parallel")
    data = dataset(root)
    rows = []
    for label, args in MODES.items():
        with stage(label):
            rows.append(run_mode(root, label, args, steps, data))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    write(f"parallel_{'cuda' if torch.cuda.is_available() else 'cpu'}", {"device": device, "global_batch": GLOBAL_BATCH,
          "steps": steps}, rows, f"vlaforge train parallelisms, 2 processes vs 1, global batch {GLOBAL_BATCH} ({device})",
          seeds={"collect_scenes_from": 0, "train": 0})


if __name__ == "__main__":
    main()
