"""Training from disk with bounded memory: throughput and peak memory of the in-memory and the
streaming loader as the dataset grows.

    python benchmarks/scale.py [--sizes=[1,4,16]] [--steps=300] [--window=64]

The 1x dataset is the quickstart's collection (PNG frames); the larger ones are that collection
merged with itself k times (`vlaforge data merge`): the same frames repeated, which leaves what is
measured (bytes to hold or to read per sample) as it would be with k times more collected
episodes. The 1x collection is also stored as AV1 video to stream from. Each (size, loader) pair
trains the default recipe for ``--steps`` steps in a fresh process on one core pair; measured are
that process's peak resident memory (its VmHWM, sampled while it runs), its wall time (the in-memory loader
decodes everything before the first step) and the median training samples per second after the
first 10% of steps. The targets: streaming memory flat as the data grows, and streaming throughput
within 10% of in-memory. Writes benchmarks/results/scale.{json,md}. Run it on an idle machine.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import arg, cache_root, record_stage, stage, write

from vlaforge.cli import parse
from vlaforge.data.collect import collect
from vlaforge.data.config import DataConfig
from vlaforge.data.tools import merge
from vlaforge.train.trainer import available_memory


def high_water_kb(pid: int) -> int:
    """VmHWM (peak resident set since exec, kB) of a running process; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def train_process(data: Path, out: Path, loader: str, steps: int, window: int) -> dict:
    """Train in a child process: its peak RSS, wall time and steady samples/s."""
    cmd = [sys.executable, "-m", "vlaforge", "train", f"--dataset={data}", f"--output_dir={out}", f"--steps={steps}",
           f"--loader={loader}", f"--stream_window={window}", "--tracking=none", "--log_every=10",
           f"--ckpt_every={steps}", "--verify_data=false"]
    t = time.perf_counter()
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None:  # the child's own high-water mark (wait4's ru_maxrss counts the forked parent)
        peak = max(peak, high_water_kb(proc.pid))
        time.sleep(0.2)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        log.seek(0)
        raise SystemExit(f"training failed ({cmd}):\n{log.read()[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [r["samples_per_s"] for r in rows if r["step"] > steps // 10]
    summary = json.loads((out / "train_summary.json").read_text())
    return {"peak_rss_mb": peak / 1024, "wall_s": wall, "samples_per_s": statistics.median(steady),
            "loader": summary["loader"], "loader_reason": summary["loader_reason"]}


def main(argv: list[str]) -> None:
    sizes = [int(x) for x in arg("sizes", "[1,4,16]", argv).strip("[]").split(",")]
    steps, window = int(arg("steps", "300", argv)), int(arg("window", "64", argv))
    root = cache_root("runs/bench_scale")
    qs = parse("quickstart", [])
    data: dict[str, Path] = {}
    for name, video in (("1x", False), ("1x-av1", True)):
        data[name] = root / name
        done = (data[name] / "done").is_file()
        with stage(f"collect {name}", reused=done):
            if not done:
                collect(dataclasses.replace(qs.collect, output=str(data[name]), resume=(data[name] / "meta").exists(),
                                            video=video), False)
                (data[name] / "done").write_text("")
    for k in sizes:
        if k == 1:
            continue
        data[f"{k}x"] = root / f"{k}x"
        done = data[f"{k}x"].is_dir()
        with stage(f"merge {k}x", reused=done):
            if not done:
                merge(DataConfig(action="merge", datasets=[str(data["1x"])] * k, output=str(data[f"{k}x"])))
    runs = [(f"{k}x", loader) for k in sizes for loader in ("memory", "stream")]
    runs += [("1x-av1", "memory"), ("1x-av1", "stream")]
    figures: dict = {"steps": steps, "window_episodes": window, "sizes": sizes, "runs": {}, "not_run": {}}
    free = available_memory()
    for name, loader in list(runs):
        info = json.loads((data[name] / "meta/info.json").read_text())
        decoded = info["total_frames"] * sum(3 * f["shape"][0] * f["shape"][1] for f in info["features"].values()
                                             if f["dtype"] in ("image", "video"))
        if loader == "memory" and 2 * decoded > 0.8 * free:  # load() concatenates: twice the frames at its peak
            figures["not_run"][f"{name} {loader}"] = (f"decoded frames {decoded / 1e9:.1f} GB; loading them peaks at "
                                                      f"twice that, over 80% of the {free / 1e9:.1f} GB available")
            runs.remove((name, loader))
    for name, loader in runs:
        out = root / "train" / f"{name}-{loader}"
        shutil.rmtree(out, ignore_errors=True)  # timings are measured afresh on every invocation
        t = time.perf_counter()
        r = train_process(data[name], out, loader, steps, window)
        record_stage(f"train {name} {loader}", time.perf_counter() - t)
        meta = json.loads((data[name] / "meta/info.json").read_text())
        r["frames"], r["episodes"] = meta["total_frames"], meta["total_episodes"]
        r["dataset_mb"] = sum(p.stat().st_size for p in data[name].rglob("*") if p.is_file()) / 1e6
        figures["runs"][f"{name} {loader}"] = r
        print(f"{name} {loader}: {r['samples_per_s']:.0f} samples/s, peak {r['peak_rss_mb']:.0f} MB", flush=True)
    compared = [n for n in [f"{k}x" for k in sizes] + ["1x-av1"] if f"{n} memory" in figures["runs"]]
    for name in compared:
        m, s = figures["runs"][f"{name} memory"], figures["runs"][f"{name} stream"]
        figures["runs"][f"{name} stream"]["throughput_vs_memory"] = s["samples_per_s"] / m["samples_per_s"]
    streams = [figures["runs"][f"{k}x stream"]["peak_rss_mb"] for k in sizes]
    figures["stream_rss_growth"] = max(streams) / min(streams)
    figures["meets_target"] = {
        "memory_flat": figures["stream_rss_growth"] <= 1.1,
        "throughput_within_10pct": all(figures["runs"][f"{n} stream"]["throughput_vs_memory"] >= 0.9 for n in compared)}
    rows = [{"dataset": name, "loader": loader, "episodes": r["episodes"], "frames": r["frames"],
             "dataset MB": f"{r['dataset_mb']:.0f}", "peak RSS MB": f"{r['peak_rss_mb']:.0f}",
             "samples/s": f"{r['samples_per_s']:.0f}",
             "vs memory": f"{r['throughput_vs_memory']:.2f}" if "throughput_vs_memory" in r else "",
             "wall s": f"{r['wall_s']:.0f}"}
            for (name, loader), r in zip(runs, figures["runs"].values())]
    rows += [{"dataset": k.split()[0], "loader": k.split()[1], "episodes": "", "frames": "", "dataset MB": "",
              "peak RSS MB": "not run", "samples/s": why, "vs memory": "", "wall s": ""}
             for k, why in figures["not_run"].items()]
    write("scale", figures, rows, f"In-memory vs streaming training data, {steps} steps per run",
          seeds={"collect": qs.collect.seed, "train": [0]})


if __name__ == "__main__":
    main(sys.argv[1:])
