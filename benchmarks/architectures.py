"""Architecture ablation: every action head x backbone, trained on the same data with the same
recipe and budget over several training seeds, and the cost of observation history for
transformer vs Mamba.

    python benchmarks/architectures.py [--part=all|scaling|ablation] [--seeds=3] [--steps=1100]
                                       [--episodes=25] [--only=dit-mamba-mlp,regression-transformer-moe,...]

Ablation: the small experiment cell (4 tabletop tasks x 25 demonstrations, collected once; the
cell of benchmarks/small_cell.py); each configuration trains the quickstart's recipe (its
TrainConfig defaults: grounding co-training, peak lr 3e-3, batch 64, bf16 autocast) for
``steps`` optimizer steps with training seeds 0 .. n-1, and is evaluated on the same
``episodes`` new scenes per task of the train split. Reported per configuration: every seed's
success, mean, sd, the pooled Wilson interval, mean success per task, parameters, training
wall time and samples/s (median over the run's log), and batch-1 ``Policy.act`` latency p50/p99
of the seed-0 policy (all cores, after warm-up); each configuration against the first and each
Mamba configuration against its transformer twin, paired by seed and scene. Finished runs are
kept (runs/bench_architectures/<key>/<config>/seed<i>/result.json), so an interrupted run
continues. Run it on an idle machine: wall times and latencies are figures.

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
from common import RESULTS, arg, cache_root, collect_once, seeded_text, small_cell, stage, write

from vlaforge.eval.config import EvalConfig, QuickstartConfig
from vlaforge.eval.rollout import evaluate
from vlaforge.eval.stats import paired, seed_summary
from vlaforge.models.config import PolicyConfig
from vlaforge.registry import BACKBONES, FFNS, HEADS
from vlaforge.runtime.policy import load_policy
from vlaforge.seeds import EVAL_SEEDS
from vlaforge.train.checkpoint import latest_checkpoint
from vlaforge.train.trainer import train

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GRID = [(h, b, "mlp") for h in ("regression", "tokenized", "dit", "flow") for b in ("transformer", "mamba")]
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


def run_config(run: Path, head: str, backbone: str, ffn: str, data: Path, steps: int, episodes: int,
               seed: int) -> dict:
    """Train one configuration with the quickstart's recipe into ``run`` and evaluate it; the
    evaluation's results.json plus the run's cost. A finished run (result.json) is reused and an
    interrupted training resumed."""
    done = run / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    policy_dir = run / "train" / "policy"
    recipe = QuickstartConfig().train
    t = time.perf_counter()
    if not policy_dir.exists():
        cfg = dataclasses.replace(recipe, dataset=str(data), output_dir=str(run / "train"), steps=steps, seed=seed,
                                  tracking="none", resume=latest_checkpoint(run / "train" / "checkpoints") is not None,
                                  policy=dataclasses.replace(recipe.policy, head=head, backbone=backbone, ffn=ffn))
        train(cfg, show_progress=False)
    seconds = time.perf_counter() - t
    log = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "train" / "train_summary.json").read_text())
    ev = evaluate(EvalConfig(policy=str(policy_dir), split="train", episodes=episodes, videos_per_task=0,
                             output_dir=str(run / "eval")), show_progress=False)
    result = ev | {"head": head, "backbone": backbone, "ffn": ffn, "seed": seed, "params": summary["params"],
                   "train_seconds": seconds, "final_loss": log[-1]["loss"],
                   "samples_per_s": statistics.median(r["samples_per_s"] for r in log[1:] or log)}
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
    """Every head x backbone (``--only`` picks configurations, a ``moe`` feed-forward included)
    trained with the quickstart's recipe on the small experiment cell, ``--seeds`` training seeds
    each, evaluated on the same scenes; each configuration against the first, paired by seed and
    scene."""
    n, steps, episodes = int(arg("seeds", "3")), int(arg("steps", "1100")), int(arg("episodes", "25"))
    if n < 2:
        raise SystemExit(f"--seeds must be >= 2 (sd and paired intervals need them), got {n}")
    only = [tuple(name.split("-")) for name in arg("only", "").split(",") if name]
    for name in only:
        if len(name) != 3:
            raise SystemExit(f"--only takes head-backbone-ffn names such as dit-mamba-mlp, got {'-'.join(name)!r}")
        HEADS.get(name[0]), BACKBONES.get(name[1]), FFNS.get(name[2])  # unknown names fail before any work
    grid = only or GRID
    root = cache_root("runs/bench_architectures")
    cell = small_cell()
    data = collect_once(cell, root / "data")
    runs: dict[str, list[dict]] = {f"{h}-{b}-{f}": [] for h, b, f in grid}
    for seed in range(n):
        for h, b, f in grid:
            name = f"{h}-{b}-{f}"
            with stage(f"{name} seed {seed}", reused=(root / name / f"seed{seed}" / "result.json").is_file()):
                runs[name].append(run_config(root / name / f"seed{seed}", h, b, f, data, steps, episodes, seed))
            print(f"{name} seed {seed}: {runs[name][-1]['success_rate']:.1%}", flush=True)
    configs, first = {}, next(iter(runs))
    for name, rs in runs.items():
        with stage(f"latency {name}"):
            latency = latency_ms(root / name / "seed0" / "train" / "policy")
        configs[name] = seed_summary(rs) | {
            "head": rs[0]["head"], "backbone": rs[0]["backbone"], "ffn": rs[0]["ffn"], "params": rs[0]["params"],
            "samples_per_s": [r["samples_per_s"] for r in rs], "train_seconds": [r["train_seconds"] for r in rs],
            "final_loss": [r["final_loss"] for r in rs], "latency_ms_p50_p99": list(latency),
            "moe": [{k: r[k] for k in ("moe_dropped", "moe_balance_loss") if k in r} for r in rs]}
    comparisons = {f"{name} - {first}": paired(rs, runs[first]) for name, rs in runs.items() if name != first}
    for h, f in dict.fromkeys((h, f) for h, _, f in grid):  # the backbone alone, head and ffn held
        a, b = f"{h}-mamba-{f}", f"{h}-transformer-{f}"
        if a in runs and b in runs:
            comparisons[f"{a} - {b}"] = paired(runs[a], runs[b])
    rows = [{"config": name, "success": seeded_text(c),
             "per seed": " / ".join(f"{100 * x:.0f}" for x in c["per_seed"]),
             "params (M)": round(c["params"] / 1e6, 2),
             "train samples/s": round(statistics.median(c["samples_per_s"]), 1),
             "act p50 ms": round(c["latency_ms_p50_p99"][0], 1)} for name, c in configs.items()]
    protocol = {"steps": steps, "recipe": "quickstart train defaults (grounding 250 scenes per task, lr 3e-3)",
                "eval_split": "train", "episodes_per_task": episodes, "tasks": cell.env.tasks,
                "demos_per_task": cell.episodes_per_task, "seeds": n}
    write("architectures", {"protocol": protocol, "configs": configs, "comparisons": comparisons}, rows,
          f"Architecture ablation on the small cell: {steps} steps, {n} training seeds per configuration",
          seeds={"collect": cell.seed, "train": list(range(n)), "eval_scenes_from": EVAL_SEEDS})


if __name__ == "__main__":
    main()
