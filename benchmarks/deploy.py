"""Deployment methods on one trained policy: model size, batch-1 act() latency (p50/p99) and the
success change on the same evaluation, in one table.

    python benchmarks/deploy.py --policy=runs/bench_sim2real/train_none/policy \\
                                --dataset=runs/bench_sim2real/data_none        # reuse a trained policy
    python benchmarks/deploy.py                                               # collect + train its own first

Methods: fp32 eager (the baseline), bf16 autocast, torch.compile, dynamic int8, torchao int8 and
int4 weight-only, PT2E static int8 (calibrated on the dataset), ONNX Runtime fp32 and int8,
unstructured / channel / head pruning at several sparsities with 300 fine-tuning steps each
(a sparsity-against-success curve), int4 QAT (300 steps from the
policy, then int4-weight), a distilled student (d_model 64, 2 layers, learning the fp32
policy's chunks for 2000 steps). Latency: 1 thread and all threads, after warm-up. Success: the train
split's tasks on new scene seeds, the same seeds for every method; the change against fp32 with
Newcombe's 95% interval. Writes benchmarks/results/deploy.{json,md} and deploy_pruning.png.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from common import RESULTS, write

from vlaforge.config import CollectConfig, EnvConfig, EvalConfig, OptimConfig, PolicyConfig, PruneConfig, TrainConfig
from vlaforge.data.collect import collect
from vlaforge.deploy.latency import bench_latency
from vlaforge.deploy.prune import prune
from vlaforge.deploy.quantize import quantize
from vlaforge.eval.rollout import brief, evaluate
from vlaforge.eval.stats import difference_interval
from vlaforge.train.checkpoint import latest_checkpoint
from vlaforge.train.trainer import train

ROOT = Path("runs/bench_deploy")
TASKS = ["pick_place", "open_drawer", "press_button"]
RUNTIME_ONLY = ("bf16", "compile")
# Sparsity against success, each point fine-tuned for 300 steps with its mask held.
SPARSITY_SWEEP = [("unstructured", 0.25), ("unstructured", 0.5), ("unstructured", 0.75), ("unstructured", 0.9),
                  ("channels", 0.25), ("channels", 0.5), ("channels", 0.75), ("heads", 0.25), ("heads", 0.5)]  # numerics of eager within bf16 rounding / exactly: latency only


def _arg(name: str, default: str) -> str:
    return next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith(f"--{name}=")), default)


def base_policy() -> tuple[Path, Path]:
    policy, dataset = _arg("policy", ""), _arg("dataset", "")
    if policy:
        if not dataset:
            raise SystemExit("--policy needs --dataset (calibration and fine-tuning data)")
        return Path(policy), Path(dataset)
    data = ROOT / "data"
    collect(CollectConfig(env=EnvConfig(tasks=TASKS), episodes_per_task=80, output=str(data),
                          resume=(data / "meta").exists()), show_progress=False)
    run = ROOT / "train"
    if not (run / "policy").exists():
        train(TrainConfig(dataset=str(data), output_dir=str(run), steps=2000, tracking="none",
                          resume=latest_checkpoint(run / "checkpoints") is not None), show_progress=False)
    return run / "policy", data


def deployed(policy: Path, dataset: Path) -> dict[str, Path]:
    """Every method's policy directory (made once, reused on re-runs)."""
    out = {"fp32": policy}
    for method in ("dynamic-int8", "int8-weight", "int4-weight", "static-int8", "onnx-int8"):
        d = ROOT / method
        if not d.exists():
            quantize(str(policy), str(d), method, dataset=str(dataset))
        out[method] = d
    onnx = ROOT / "onnx-fp32"
    if not onnx.exists():
        from vlaforge.deploy.artifact import write_deployed
        from vlaforge.deploy.onnx import write_onnx

        write_deployed(policy, onnx, lambda tmp: write_onnx(policy, tmp, int8=False))
    out["onnx-fp32"] = onnx
    for method, sparsity in SPARSITY_SWEEP:
        run = ROOT / f"prune-{method}-{sparsity:g}"
        if not (run / "policy").exists():
            prune(PruneConfig(policy=str(policy), dataset=str(dataset), method=method, sparsity=sparsity, steps=300,
                              output_dir=str(run)))
        out[f"prune-{method}-{sparsity:g}"] = run / "policy"
    student = ROOT / "distill-small"
    if not (student / "policy").exists():  # a quarter-width, two-layer student of the fp32 policy
        train(TrainConfig(dataset=str(dataset), output_dir=str(student), steps=2000, teacher=str(policy),
                          policy=PolicyConfig(d_model=64, n_layers=2, n_heads=2, vision_channels=[16, 32, 32]),
                          tracking="none", resume=latest_checkpoint(student / "checkpoints") is not None),
              show_progress=False)
    out["distill-small"] = student / "policy"
    qat = ROOT / "qat-int4"
    if not (qat / "policy").exists():
        train(TrainConfig(dataset=str(dataset), output_dir=str(qat), steps=300, init_from=str(policy), qat="int4-weight",
                          optim=OptimConfig(lr=3e-4, warmup_steps=30), tracking="none"), show_progress=False)
    if not (ROOT / "qat-int4-deployed").exists():
        quantize(str(qat / "policy"), str(ROOT / "qat-int4-deployed"), "int4-weight")
    out["qat-int4"] = ROOT / "qat-int4-deployed"
    return out


def size_bytes(d: Path) -> int:
    info = d / "deploy.json"
    return json.loads(info.read_text())["size_bytes"] if info.is_file() else (d / "model.safetensors").stat().st_size


def main() -> None:
    episodes = int(_arg("episodes", "30"))
    ROOT.mkdir(parents=True, exist_ok=True)
    policy, dataset = base_policy()
    methods = deployed(policy, dataset)
    runtimes = ["eager", *RUNTIME_ONLY, "dynamic-int8", "int8-weight", "int4-weight", "static-int8", "onnx-fp32",
                "onnx-int8"]
    lat1 = {r["runtime"]: r for r in bench_latency(str(policy), runtimes, calls=300, warmup=30, threads=1)}
    latn = {r["runtime"]: r for r in bench_latency(str(policy), ["eager", "onnx-fp32", "onnx-int8", "static-int8"],
                                                    calls=300, warmup=30, threads=os.cpu_count() or 1)}
    # The student is another network: its own eager latency (its action difference is to itself).
    small1, smalln = (bench_latency(str(methods["distill-small"]), ["eager"], calls=300, warmup=30, threads=t)[0]
                      for t in (1, os.cpu_count() or 1))
    results = {}
    for name, d in methods.items():
        out = ROOT / "eval" / name
        f = out / "results.json"
        results[name] = json.loads(f.read_text()) if f.is_file() else evaluate(EvalConfig(
            policy=str(d), split="train", tasks=TASKS, episodes=episodes, output_dir=str(out), videos_per_task=0), False)
    base = results["fp32"]
    k0 = brief(base)["successes"]
    rows = []
    for name in ["fp32", *RUNTIME_ONLY, *[m for m in methods if m != "fp32"]]:
        runtime = {"fp32": "eager", "qat-int4": "int4-weight"}.get(name, name)
        l1 = lat1.get(runtime) if not name.startswith("prune") else lat1["eager"]
        if name == "distill-small":
            l1, latn[name] = small1, smalln
        row = {"method": name, "size MB": f"{size_bytes(methods.get(name, policy)) / 1e6:.2f}",
               "p50 ms (1 thread)": f"{l1['p50_ms']:.2f}" if l1 else "",
               "p99 ms (1 thread)": f"{l1['p99_ms']:.2f}" if l1 else "",
               "speed-up (1 thread)": f"{lat1['eager']['p50_ms'] / l1['p50_ms']:.2f}x" if l1 else "",
               "p50 ms (all threads)": f"{latn[runtime]['p50_ms']:.2f}" if runtime in latn else ""}
        if name in results:
            r = results[name]
            k = brief(r)["successes"]
            lo, hi = difference_interval(k, r["episodes"], k0, base["episodes"])
            row["success"] = f"{100 * r['success_rate']:.1f}%"
            row["change vs fp32"] = f"{100 * (r['success_rate'] - base['success_rate']):+.1f} [{100 * lo:+.0f}, {100 * hi:+.0f}]"
        else:
            row["success"], row["change vs fp32"] = "as fp32 (same numerics)", ""
        rows.append(row)
    figures = {"policy": str(policy), "dataset": str(dataset), "tasks": TASKS, "episodes_per_task": episodes,
               "latency_1_thread": lat1, "latency_all_threads": latn, "latency_distill_small_1_thread": small1,
               "success": {n: {"success_rate": r["success_rate"], "ci95": r["ci95"]} for n, r in results.items()}}
    figures["pruning_curve"] = pruning_curve(results, RESULTS / "deploy_pruning.png")
    write("deploy", figures, rows, "Deployment methods: size, batch-1 act() latency, success change")


def pruning_curve(results: dict, out: Path) -> dict:
    """Success against sparsity per pruning method (sparsity 0 = the fp32 policy), as a plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for method in dict(SPARSITY_SWEEP):
        pts = [(0.0, results["fp32"])] + [(s, results[f"prune-{m}-{s:g}"]) for m, s in SPARSITY_SWEEP if m == method]
        curves[method] = [{"sparsity": s, "success_rate": r["success_rate"], "ci95": r["ci95"]} for s, r in pts]
        rate = [100 * r["success_rate"] for _, r in pts]
        err = [[100 * (r["success_rate"] - r["ci95"][0]) for _, r in pts], [100 * (r["ci95"][1] - r["success_rate"]) for _, r in pts]]
        ax.errorbar([s for s, _ in pts], rate, yerr=err, marker="o", capsize=3, label=method)
    ax.set(xlabel="sparsity (weights / channels / heads removed)", ylabel="success % (95% CI)", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return curves


if __name__ == "__main__":
    main()
