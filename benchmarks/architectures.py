"""Architecture ablation: every action head x backbone x feed-forward, trained on the same
tabletop data with the same budget, and the cost of observation history for transformer vs Mamba.

    python benchmarks/architectures.py [--part=all|scaling|ablation] [--steps=1000] [--episodes=20]
                                       [--only=dit-mamba-mlp,...]

Ablation: the quickstart's dataset (7 tasks x 150 demonstrations); each configuration trains
``steps`` optimizer steps of batch 64 (bf16 autocast, seed 0) and is evaluated on
``episodes`` new scenes per task of the train split. Reported: success with its Wilson 95%
interval, parameters, training samples/s (median over the run's log) and batch-1
``Policy.act`` latency p50/p99 (all cores, after warm-up). Finished configurations are kept
(runs/bench_architectures/<name>/result.json), so an interrupted run continues.

Scaling: the fusion backbone alone (4 layers, d_model 128, batch 8) on the token sequence of a
policy with T history frames (25 + 34 T tokens): forward + backward time and peak memory, each
point in a fresh process; and the per-new-frame inference cost at batch 1, where the transformer
re-runs the whole sequence while Mamba steps its recurrent state over the 34 new tokens.

Writes benchmarks/results/architectures.{json,md} (ablation) and
architectures_scaling.{json,md,png}.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import resource
import statistics
import time
from pathlib import Path

import matplotlib
import torch
from common import RESULTS, arg, cache_root, stage, write

from vlaforge.data.collect import collect
from vlaforge.data.config import CollectConfig
from vlaforge.eval.config import EvalConfig
from vlaforge.eval.rollout import evaluate
from vlaforge.models.config import PolicyConfig
from vlaforge.registry import BACKBONES, FFNS, HEADS
from vlaforge.runtime.policy import load_policy
from vlaforge.seeds import EVAL_SEEDS
from vlaforge.train.checkpoint import latest_checkpoint
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GRID = [(h, b, f) for f in ("mlp", "moe") for h in ("regression", "tokenized", "dit", "flow")
        for b in ("transformer", "mamba")]
TOKENS_FIXED, TOKENS_PER_FRAME = 25, 34  # text 16 + chunk 8 + aux 1; 33 keypoint tokens + 1 proprio per frame
HISTORY = (1, 2, 4, 8, 16, 32, 64)


def latency_ms(policy_dir: Path, calls: int = 100) -> tuple[float, float]:
    """p50, p99 of one ``Policy.act`` on a fixed observation (batch 1)."""
    import numpy as np

    policy = load_policy(policy_dir)
    spec = policy.meta["spec"]
    obs = {"image": np.zeros((len(spec["cameras"]), spec["image_size"], spec["image_size"], 3), np.uint8),
           "state": np.zeros(spec["state_dim"], np.float32), "instruction": "pick up the red cube"}
    times = []
    for i in range(calls + 10):
        policy.reset()
        t = time.perf_counter()
        policy.act(obs)
        if i >= 10:
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1000, times[int(0.99 * (len(times) - 1))] * 1000


def run_config(root: Path, head: str, backbone: str, ffn: str, data: Path, steps: int, episodes: int) -> dict:
    name = f"{head}-{backbone}-{ffn}"
    out = root / name
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    policy_dir = out / "train" / "policy"
    if not policy_dir.exists():
        cfg = TrainConfig(dataset=str(data), output_dir=str(out / "train"), steps=steps, tracking="none",
                          resume=latest_checkpoint(out / "train" / "checkpoints") is not None,
                          policy=PolicyConfig(head=head, backbone=backbone, ffn=ffn))
        train(cfg, show_progress=True)
    log = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "train" / "train_summary.json").read_text())
    ev = evaluate(EvalConfig(policy=str(policy_dir), split="train", episodes=episodes, videos_per_task=0,
                             output_dir=str(out / "eval")), show_progress=True)
    p50, p99 = latency_ms(policy_dir)
    result = {"name": name, "head": head, "backbone": backbone, "ffn": ffn, "params": summary["params"],
              "steps": steps, "samples_per_s": statistics.median(r["samples_per_s"] for r in log[1:] or log),
              "final_loss": log[-1]["loss"], "success": ev["success_rate"], "ci95": ev["ci95"],
              "episodes": ev["episodes"], "per_task": {k: v["success_rate"] for k, v in ev["per_task"].items()},
              "latency_ms_p50": p50, "latency_ms_p99": p99, "threads": torch.get_num_threads()}
    for key in ("moe_dropped", "moe_balance_loss"):
        if key in log[-1]:
            result[key] = log[-1][key]
    done.write_text(json.dumps(result, indent=2))
    return result


def backbone_cost(backbone: str, frames: int, batch: int = 8) -> dict:
    """fwd + bwd ms and peak MB of the fusion blocks on a (batch, tokens, 128) sequence; and
    the batch-1 cost of adding one frame at inference."""
    from vlaforge.models.transformer import Block

    torch.manual_seed(0)
    cfg = PolicyConfig(backbone=backbone)
    blocks = torch.nn.ModuleList([Block(cfg.d_model, BACKBONES.get(backbone)(cfg), FFNS.get("mlp")(cfg))
                                  for _ in range(cfg.n_layers)])
    tokens = TOKENS_FIXED + TOKENS_PER_FRAME * frames
    x = torch.randn(batch, tokens, cfg.d_model)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(4):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = x
            for block in blocks:
                h = block(h)
        h.float().square().mean().backward()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    with torch.no_grad():
        one = x[:1]
        t = time.perf_counter()
        for _ in range(3):
            if backbone == "transformer":  # attention has no state: the whole sequence again
                h = one
                for block in blocks:
                    h = block(h)
            else:  # Mamba: the recurrent state absorbs the new frame's tokens one by one
                caches = [b.mixer.init_cache(1) for b in blocks]
                for i in range(TOKENS_PER_FRAME):
                    h = one[:, i]
                    for block, cache in zip(blocks, caches):
                        h = block.step(h, cache)
        frame_ms = (time.perf_counter() - t) / 3 * 1000
    return {"tokens": tokens, "train_ms": statistics.median(times[1:]) * 1000, "peak_mb": peak,
            "new_frame_ms": frame_ms}


def scaling() -> list[dict]:
    rows = []
    for backbone in ("transformer", "mamba"):
        for frames in HISTORY:
            with stage(f"{backbone} {frames} frames"), mp.get_context("spawn").Pool(1) as pool:
                r = pool.apply(backbone_cost, (backbone, frames))
            rows.append({"backbone": backbone, "history frames": frames, **{k: round(v, 2) for k, v in r.items()}})
            print(rows[-1], flush=True)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for backbone in ("transformer", "mamba"):
        sel = [r for r in rows if r["backbone"] == backbone]
        for ax, key in zip(axes, ("train_ms", "peak_mb", "new_frame_ms")):
            ax.plot([r["history frames"] for r in sel], [max(r[key], 0.1) for r in sel], marker="o", label=backbone)
    titles = ("fwd + bwd ms (batch 8)", "peak MB (batch 8)", "ms to take in one new frame (batch 1)")
    for ax, title in zip(axes, titles):
        ax.set(xscale="log", yscale="log", xlabel="observation history (frames)", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "architectures_scaling.png", dpi=120)
    return rows


def main() -> None:
    part = arg("part", "all")
    if part not in ("all", "scaling", "ablation"):
        raise SystemExit(f"--part must be all, scaling or ablation, got {part!r}")
    if part in ("all", "scaling"):
        rows = scaling()
        write("architectures_scaling", {"rows": rows}, rows,
              "Fusion backbone cost vs observation history (4 layers, d_model 128, bf16 autocast), 2 CPU cores",
              seeds={"inputs": 0})
    if part in ("all", "ablation"):
        ablation()


def ablation() -> None:
    steps, episodes = int(arg("steps", "1000")), int(arg("episodes", "20"))
    only = [tuple(n.split("-")) for n in arg("only", "").split(",") if n]
    for h, b, f in only:
        HEADS.get(h), BACKBONES.get(b), FFNS.get(f)  # unknown names fail before any work
    root = cache_root("runs/bench_architectures")
    data = root / "data"
    with stage("collect", reused=(data / "meta").exists()):
        collect(dataclasses.replace(CollectConfig(episodes_per_task=150), output=str(data),
                                    resume=(data / "meta").exists()), show_progress=True)
    results = []
    for h, b, f in only or GRID:
        with stage(f"{h}-{b}-{f}", reused=(root / f"{h}-{b}-{f}" / "result.json").is_file()):
            results.append(run_config(root, h, b, f, data, steps, episodes))
    rows = [{"head": r["head"], "backbone": r["backbone"], "ffn": r["ffn"],
             "success": f"{r['success']:.1%} [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}]",
             "params (M)": round(r["params"] / 1e6, 2), "train samples/s": round(r["samples_per_s"], 1),
             "act p50 ms": round(r["latency_ms_p50"], 1), "act p99 ms": round(r["latency_ms_p99"], 1)}
            for r in results]
    protocol = {"steps": steps, "batch_size": 64, "precision": "bf16", "eval_split": "train",
                "episodes_per_task": episodes, "dataset": "quickstart collect, 150 demos x 7 tasks"}
    write("architectures", {"protocol": protocol, "results": results}, rows,
          f"Architecture ablation: {steps} steps each, {episodes} episodes per task, 2 CPU cores",
          seeds={"collect_scenes_from": 0, "train": 0, "eval_scenes_from": EVAL_SEEDS})


if __name__ == "__main__":
    main()
