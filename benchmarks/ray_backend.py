"""Rollouts on the Ray backend against the local process pool: episodes per second as workers grow.

    python benchmarks/ray_backend.py [--episodes_per_task=6] [--workers=[1,2,4]] [--repeats=2]

The workload is a real collection: `vlaforge collect` of every tabletop task with the default settings
(scripted expert rollouts, rendered and PNG-encoded in the workers, written by the driver), run
in a fresh process per (backend, workers, repeat) so that the backend's start-up is counted
afresh. The backend `ray` starts a Ray cluster on this machine with one CPU per worker (the
path a user without a cluster takes; a running cluster would save its start-up). Each episode's
metadata file is written as the driver commits the episode, so the files' modification times
give every episode's completion time. Reported per run: time to the first episode (imports,
cluster start, worker start, one episode), the steady rate (episodes per second after every
worker has delivered once: (N - W) / (t_N - t_W)) and the whole wall time; per (backend, workers)
the median over repeats, and Ray's steady rate and start-up against the local pool's at the
same worker count. Writes benchmarks/results/ray_backend.{json,md}. Run it on an idle machine.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import arg, cache_root, record_stage, write

from vlaforge.data.config import CollectConfig


def run_collect(out: Path, backend: str, workers: int, episodes_per_task: int) -> dict:
    """One collection in a fresh process; per-episode completion times from the metadata files."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "vlaforge", "collect", f"--output={out}", f"--backend={backend}",
           f"--workers={workers}", f"--episodes_per_task={episodes_per_task}"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"collection failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    done = sorted(p.stat().st_mtime - start for p in (out / "meta" / "episodes").rglob("*.parquet"))
    w = min(workers, len(done) - 1)
    return {"episodes": len(done), "first_episode_s": done[0], "wall_s": wall,
            "steady_episodes_per_s": (len(done) - 1 - w) / (done[-1] - done[w])}


def main(argv: list[str]) -> None:
    per_task = int(arg("episodes_per_task", "6", argv))
    counts = [int(x) for x in arg("workers", "[1,2,4]", argv).strip("[]").split(",")]
    repeats = int(arg("repeats", "2", argv))
    root = cache_root("runs/bench_ray_backend")
    runs: dict[str, list[dict]] = {}
    for r in range(repeats):  # repeats interleaved, so a slow spell of the machine hits every setting
        for workers in counts:
            for backend in ("local", "ray"):
                t = time.perf_counter()
                res = run_collect(root / f"{backend}-{workers}", backend, workers, per_task)
                record_stage(f"collect {backend} workers={workers} repeat {r}", time.perf_counter() - t)
                runs.setdefault(f"{backend} {workers}", []).append(res)
                print(f"{backend} x{workers}: first episode {res['first_episode_s']:.1f} s, "
                      f"{res['steady_episodes_per_s']:.2f} episodes/s, wall {res['wall_s']:.1f} s", flush=True)
    summary = {}
    for key, rs in runs.items():
        summary[key] = {m: statistics.median(x[m] for x in rs) for m in ("first_episode_s", "steady_episodes_per_s",
                                                                         "wall_s")}
        summary[key]["episodes"] = rs[0]["episodes"]
    base = summary[f"local {counts[0]}"]["steady_episodes_per_s"]
    for key, s in summary.items():
        backend, workers = key.split()
        local = summary[f"local {workers}"]
        s["speedup_vs_local_1"] = s["steady_episodes_per_s"] / base
        if backend == "ray":
            s["steady_vs_local"] = s["steady_episodes_per_s"] / local["steady_episodes_per_s"]
            s["extra_startup_s"] = s["first_episode_s"] - local["first_episode_s"]
    figures = {"episodes_per_task": per_task, "workers": counts,
               "repeats": repeats, "cores": os.cpu_count(), "runs": runs, "summary": summary}
    rows = [{"backend": key.split()[0], "workers": int(key.split()[1]), "episodes": s["episodes"],
             "first episode s": f"{s['first_episode_s']:.1f}", "episodes/s": f"{s['steady_episodes_per_s']:.2f}",
             "vs local x1": f"{s['speedup_vs_local_1']:.2f}",
             "ray / local": f"{s['steady_vs_local']:.2f}" if "steady_vs_local" in s else "",
             "wall s": f"{s['wall_s']:.1f}"} for key, s in summary.items()]
    write("ray_backend", figures, rows, f"Collection rollouts on the local pool and on Ray, median of {repeats} runs",
          seeds={"collect": CollectConfig().seed})


if __name__ == "__main__":
    main(sys.argv[1:])
