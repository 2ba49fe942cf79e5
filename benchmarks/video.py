"""Camera streams as video instead of PNG: bytes per frame, fidelity, encode and decode speed, and
whether a policy trained on the video data succeeds as often as one trained on the PNG data.

    python benchmarks/video.py [--seeds=3] [--steps=1100] [--episodes=25] [--train=[png,av1]]

Collects the small experiment cell (4 tabletop tasks x 25 demos) three times from the same scenes:
PNG frames in parquet, AV1 video (SVT-AV1, LeRobot's default settings) and H.264 video. The expert
and the scenes are the same, so the three datasets differ only in how the frames are stored.
Measured on each: image bytes per frame, the whole dataset's bytes, the mean absolute pixel error
and PSNR against the PNG frames (PNG is lossless), the frames per second of encoding (one process)
and of decoding a whole dataset (LeRobotDataset.load, best of 3), and of random access (frames
fetched at random timestamps across the episode files, each a seek). Then the small cell's
default recipe is trained on each dataset named by ``--train`` for every seed and evaluated on
the same train-split scenes; each arm against PNG paired by seed and scene (t interval over the
seeds, pooled paired bootstrap, McNemar). Writes benchmarks/results/video.{json,md}. The speed
figures need an idle machine; trained policies are cached, so a re-run re-measures only speed.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from common import arg, cache_root, paired_text, small_cell, stage, write

from vlaforge.cli import parse
from vlaforge.data import video
from vlaforge.data.collect import collect
from vlaforge.data.dataset import DATA_PATH, IMAGE_PREFIX, LeRobotDataset, encode_png
from vlaforge.eval.config import EvalConfig
from vlaforge.eval.rollout import evaluate
from vlaforge.eval.stats import paired, seed_summary
from vlaforge.train.checkpoint import latest_checkpoint
from vlaforge.train.trainer import train

STORAGE = {"png": "", "av1": "av1", "h264": "h264"}  # dataset name -> video codec ("" = PNG in parquet)


def image_bytes(root: Path) -> int:
    """Bytes that hold the camera frames: the PNG payloads in the data files, or the mp4 files."""
    videos = sum(p.stat().st_size for p in (root / "videos").rglob("*.mp4"))
    if videos:
        return videos
    total = 0
    for path in sorted((root / "data").rglob("*.parquet")):
        table = pq.read_table(path, columns=[c for c in pq.read_schema(path).names if c.startswith(IMAGE_PREFIX)])
        for col in table.columns:
            total += sum(len(v["bytes"]) for v in col.to_pylist())
    return total


def dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def random_access_fps(ds: LeRobotDataset, fetches: int = 300, seed: int = 0) -> float:
    """Frames per second of fetching single frames at random (episode, frame) pairs, each from a
    freshly opened file (the access pattern of a streaming loader that shuffles across files)."""
    rng = np.random.default_rng(seed)
    key = ds.image_keys[0]
    picks = [(ds.episodes[i], int(rng.integers(ds.episodes[i]["length"]))) for i in rng.integers(ds.num_episodes, size=fetches)]
    t = time.perf_counter()
    for e, f in picks:
        path = ds.root / ds.info["video_path"].format(video_key=key, chunk_index=e[f"videos/{key}/chunk_index"],
                                                       file_index=e[f"videos/{key}/file_index"])
        with video.VideoReader(path) as r:
            r.at([e[f"videos/{key}/from_timestamp"] + f / ds.fps])
    return fetches / (time.perf_counter() - t)


def png_random_access_fps(ds: LeRobotDataset, fetches: int = 300, seed: int = 0) -> float:
    """The same access pattern on PNG-in-parquet: read one image cell of the episode's file, decode it."""
    from vlaforge.data.dataset import decode_png

    rng = np.random.default_rng(seed)
    key = ds.image_keys[0]
    picks = [(ds.episodes[i], int(rng.integers(ds.episodes[i]["length"]))) for i in rng.integers(ds.num_episodes, size=fetches)]
    t = time.perf_counter()
    for e, f in picks:
        path = ds.root / DATA_PATH.format(chunk_index=e["data/chunk_index"], file_index=e["data/file_index"])
        cell = pq.read_table(path, columns=[key])[key][f].as_py()
        decode_png(cell["bytes"])
    return fetches / (time.perf_counter() - t)


def main(argv: list[str]) -> None:
    n, steps, episodes = int(arg("seeds", "3", argv)), int(arg("steps", "1100", argv)), int(arg("episodes", "25", argv))
    arms = arg("train", "[png,av1]", argv).strip("[]").split(",")
    if n < 2 or any(a not in STORAGE for a in arms) or arms[0] != "png":
        raise SystemExit(f"need --seeds >= 2 and --train starting with png, from {list(STORAGE)}; got {n}, {arms}")
    root = cache_root("runs/bench_video")
    cell = small_cell()
    data: dict[str, Path] = {}
    for name, codec in STORAGE.items():  # the same scenes and expert, stored three ways
        data[name] = root / name
        done = (data[name] / "done").is_file()
        with stage(f"collect {name}", reused=done):
            if not done:
                collect(dataclasses.replace(cell, output=str(data[name]), resume=(data[name] / "meta").exists(),
                                            video=bool(codec), video_codec=codec or "av1"), False)
                (data[name] / "done").write_text("")
    loaded = {}
    figures: dict = {"tasks": cell.env.tasks, "demos_per_task": cell.episodes_per_task, "steps": steps,
                     "eval_episodes_per_task": episodes, "codecs": {k: video.CODECS[k] for k in STORAGE if k != "png"},
                     "storage": {}}
    for name in STORAGE:
        ds = LeRobotDataset(data[name])
        with stage(f"decode {name}"):
            seconds = best_of(lambda: loaded.__setitem__(name, ds.load(verify=False)))
        frames = len(loaded[name].images) * len(loaded[name].cameras)
        with stage(f"random access {name}"):
            access = random_access_fps(ds) if name != "png" else png_random_access_fps(ds)
        figures["storage"][name] = {"frames": frames, "image_bytes": image_bytes(data[name]),
                                    "dataset_bytes": dir_bytes(data[name]), "decode_fps": frames / seconds,
                                    "random_access_fps": access}
    ref = loaded["png"].images.astype(np.int16)
    sample = ref[:: max(1, len(ref) // 2000), 0].astype(np.uint8)  # ~2000 frames for the encode timing
    for name, codec in STORAGE.items():
        s = figures["storage"][name]
        s["bytes_per_frame"] = s["image_bytes"] / s["frames"]
        s["vs_png"] = figures["storage"]["png"]["image_bytes"] / s["image_bytes"] if name != "png" else 1.0
        err = np.abs(loaded[name].images.astype(np.int16) - ref)
        mse = float((err.astype(np.float64) ** 2).mean())
        s["mean_abs_error"] = float(err.mean())
        s["psnr_db"] = float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)
        with stage(f"encode {name}"):
            t = time.perf_counter()
            video.encode(sample, 20, codec) if codec else [encode_png(f) for f in sample]
            s["encode_fps"] = len(sample) / (time.perf_counter() - t)
    results: dict[str, list[dict]] = {a: [] for a in arms}
    seconds: dict[str, list[float]] = {a: [] for a in arms}
    for seed in range(n):
        for name in arms:
            run = root / "runs" / name / f"seed{seed}"
            done = (run / "policy").exists()
            with stage(f"train {name} seed {seed}", reused=done):
                t = time.perf_counter()
                if not done:
                    train(dataclasses.replace(parse("train", [f"--steps={steps}"]), dataset=str(data[name]), output_dir=str(run),
                                              seed=seed, tracking="none",
                                              resume=latest_checkpoint(run / "checkpoints") is not None), False)
                seconds[name].append(time.perf_counter() - t)
            with stage(f"eval {name} seed {seed}"):
                r = evaluate(EvalConfig(policy=str(run / "policy"), split="train", episodes=episodes, videos_per_task=0,
                                        output_dir=str(run / "eval")), False)
            results[name].append(r)
            print(f"{name} seed {seed}: {r['success_rate']:.1%}", flush=True)
    figures["success"] = {a: seed_summary(results[a]) for a in arms}
    figures["comparisons"] = {f"{a} - png": paired(results[a], results["png"]) for a in arms[1:]}
    rows = [{"storage": k, "bytes/frame": f"{s['bytes_per_frame']:.0f}", "vs PNG": f"{s['vs_png']:.1f}x",
             "dataset MB": f"{s['dataset_bytes'] / 1e6:.1f}", "mean |err|": f"{s['mean_abs_error']:.2f}",
             "PSNR dB": f"{s['psnr_db']:.1f}", "encode fps": f"{s['encode_fps']:.0f}", "decode fps": f"{s['decode_fps']:.0f}",
             "random access fps": f"{s['random_access_fps']:.0f}",
             "success": (f"{100 * figures['success'][k]['mean']:.1f}% (sd {100 * figures['success'][k]['sd']:.1f})"
                         if k in figures["success"] else "")}
            for k, s in figures["storage"].items()]
    rows += [{"storage": k, "bytes/frame": "", "vs PNG": "", "dataset MB": "", "mean |err|": "", "PSNR dB": "",
              "encode fps": "", "decode fps": "", "random access fps": "",
              "success": paired_text(c)}
             for k, c in figures["comparisons"].items()]
    figures["per_seed_success"] = {a: [r["success_rate"] for r in results[a]] for a in arms}
    figures["train_seconds"] = {a: seconds[a] for a in arms}
    figures["mean_train_seconds"] = {a: statistics.fmean(seconds[a]) for a in arms}
    write("video", figures, rows, f"Video vs PNG storage on the small cell, {n} training seeds",
          seeds={"collect": cell.seed, "train": list(range(n)), "eval_scenes_from": EvalConfig().seed})


if __name__ == "__main__":
    main(sys.argv[1:])
