"""Deployment methods on one trained policy: model size, batch-1 act() latency (p50/p99) and the
success change on the same evaluation, in one table.

    python benchmarks/deploy.py --policy=runs/bench_sim2real/train_none/policy \\
                                --dataset=runs/bench_sim2real/data_none        # reuse a trained policy
    python benchmarks/deploy.py                                               # collect + train its own first

Methods: fp32 eager (the baseline), bf16 autocast, torch.compile, dynamic int8, torchao int8 and
int4 weight-only, PT2E static int8 (calibrated on the dataset), ONNX Runtime fp32 and int8,
OpenVINO fp32,
unstructured / channel / head / channel+head ("structured") pruning at several sparsities with
300 fine-tuning steps each (a sparsity-against-success curve), the structured prunes sliced (their
dead units cut out of the tensors, the only form in which pruning can speed a policy up) and
some of them exported to ONNX Runtime and OpenVINO (sliced before export; the "vs dense, same
runtime" column compares each with the unpruned policy in the same runtime), int4 QAT (300 steps from the
policy, then int4-weight), a distilled student (d_model 64, 2 layers, learning the fp32
policy's chunks for 2000 steps). Every row's latency is measured on that row's own policy
directory (1 thread and all threads, after warm-up) and every row's success is evaluated, bf16
and compile included. Success: the train split's tasks on new scene seeds, the same seeds for
every method; the change against fp32 with Newcombe's 95% interval. A loopback load test of the
policy server (4 clients x 50 requests) on fp32 and ONNX Runtime. Writes
benchmarks/results/deploy.{json,md} and deploy_pruning.png.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from common import RESULTS, arg, cache_root, cached_json, stage, write

from vlaforge.data.collect import collect
from vlaforge.data.config import CollectConfig
from vlaforge.deploy.artifact import deploy
from vlaforge.deploy.base import DeployOptions
from vlaforge.deploy.config import PruneConfig
from vlaforge.deploy.latency import cpu_threads, time_policy
from vlaforge.deploy.prune import prune
from vlaforge.deploy.server import load_test
from vlaforge.envs.config import EnvConfig
from vlaforge.eval.config import EvalConfig
from vlaforge.eval.rollout import brief, evaluate
from vlaforge.eval.stats import difference_interval
from vlaforge.models.config import PolicyConfig
from vlaforge.runtime.policy import load_policy, load_torch_policy
from vlaforge.seeds import EVAL_SEEDS
from vlaforge.train.checkpoint import latest_checkpoint
from vlaforge.train.config import OptimConfig, TrainConfig
from vlaforge.train.trainer import train

TASKS = ["pick_place", "open_drawer", "press_button"]
MULTI_THREAD = ("fp32", "onnx-fp32", "onnx-int8", "openvino-fp32", "static-int8", "distill-small")
# Sparsity against success, each point fine-tuned for 300 steps with its mask held.
SPARSITY_SWEEP = [("unstructured", 0.25), ("unstructured", 0.5), ("unstructured", 0.75), ("unstructured", 0.9),
                  ("channels", 0.25), ("channels", 0.5), ("channels", 0.75), ("heads", 0.25), ("heads", 0.5),
                  ("structured", 0.5), ("structured", 0.75)]
# Pruned policies run by the graph runtimes (the export slices first): where pruning pays off.
PRUNED_RUNTIMES = [(f"prune-{p}", rt) for p in ("channels-0.75", "heads-0.5", "structured-0.5", "structured-0.75")
                   for rt in ("onnx-fp32", "openvino-fp32")]


def base_policy(root: Path) -> tuple[Path, Path]:
    """``--policy``/``--dataset`` when given, else the benchmark's own 3-task policy made in ``root``."""
    policy, dataset = arg("policy", ""), arg("dataset", "")
    if policy:
        if not dataset:
            raise SystemExit("--policy needs --dataset (calibration and fine-tuning data)")
        return Path(policy), Path(dataset)
    data = root / "data"
    with stage("collect", reused=(data / "meta").exists()):
        collect(CollectConfig(env=EnvConfig(tasks=TASKS), episodes_per_task=80, output=str(data),
                              resume=(data / "meta").exists()), show_progress=False)
    run = root / "train"
    done = (run / "policy").exists()
    with stage("train", reused=done):
        if not done:
            train(TrainConfig(dataset=str(data), output_dir=str(run), steps=2000, tracking="none",
                              resume=latest_checkpoint(run / "checkpoints") is not None), show_progress=False)
    return run / "policy", data


def deployed(root: Path, policy: Path, dataset: Path) -> dict[str, Path]:
    """Every method's policy directory (made once per cache root, reused on re-runs)."""
    makers = {m: (lambda d, m=m: deploy(policy, d, m, DeployOptions(dataset=str(dataset))))
              for m in ("bf16", "compile", "dynamic-int8", "int8-weight", "int4-weight", "static-int8", "onnx-int8",
                        "onnx-fp32", "openvino-fp32")}
    for method, sparsity in SPARSITY_SWEEP:
        makers[f"prune-{method}-{sparsity:g}"] = lambda d, m=method, sp=sparsity: prune(PruneConfig(
            policy=str(policy), dataset=str(dataset), method=m, sparsity=sp, steps=300, output_dir=str(d)))
    # The structured prunes with their dead channels / heads cut out of the tensors (made after them).
    for method, sparsity in SPARSITY_SWEEP:
        if method != "unstructured":
            makers[f"sliced-{method}-{sparsity:g}"] = lambda d, m=method, sp=sparsity: deploy(
                root / f"prune-{m}-{sp:g}" / "policy", d, "sliced")
    for pruned, runtime in PRUNED_RUNTIMES:
        makers[f"{pruned}+{runtime}"] = lambda d, p=pruned, rt=runtime: deploy(root / p / "policy", d, rt)
    # A quarter-width, two-layer student of the fp32 policy.
    makers["distill-small"] = lambda d: train(TrainConfig(
        dataset=str(dataset), output_dir=str(d), steps=2000, teacher=str(policy),
        policy=PolicyConfig(d_model=64, n_layers=2, n_heads=2, vision_channels=[16, 32, 32]),
        tracking="none", resume=latest_checkpoint(d / "checkpoints") is not None), show_progress=False)
    makers["qat-int4"] = lambda d: train(TrainConfig(
        dataset=str(dataset), output_dir=str(d), steps=300, init_from=str(policy), qat="int4-weight",
        optim=OptimConfig(lr=3e-4, warmup_steps=30), tracking="none"), show_progress=False)
    trained = {"distill-small", "qat-int4", *(f"prune-{m}-{sp:g}" for m, sp in SPARSITY_SWEEP)}
    out = {"fp32": policy}
    for name, make in makers.items():
        d = root / name
        made = d / "policy" if name in trained else d
        with stage(f"make {name}", reused=made.exists()):
            if not made.exists():
                make(d)
        out[name] = made
    with stage("make qat-int4 deployed", reused=(root / "qat-int4-deployed").exists()):
        if not (root / "qat-int4-deployed").exists():
            deploy(out["qat-int4"], root / "qat-int4-deployed", "int4-weight")
    out["qat-int4"] = root / "qat-int4-deployed"
    return out


def timed(d: Path, threads: int) -> dict:
    """act() latency of the directory as load_policy runs it (its deploy runtime; pruned and
    distilled policies eager on their own weights) with ``threads`` torch and ONNX Runtime threads."""
    with cpu_threads(threads):
        return time_policy(load_policy(d), load_torch_policy(d), calls=300, warmup=30)


def size_bytes(d: Path) -> int:
    info = d / "deploy.json"
    return json.loads(info.read_text())["size_bytes"] if info.is_file() else (d / "model.safetensors").stat().st_size


def main() -> None:
    episodes = int(arg("episodes", "30"))
    root = cache_root("runs/bench_deploy")
    policy, dataset = base_policy(root)
    methods = deployed(root, policy, dataset)
    threads = os.cpu_count() or 1
    lat1, latn = {}, {}
    with stage("latency"):
        for name, d in methods.items():
            lat1[name] = timed(d, 1)
            if name in MULTI_THREAD:
                latn[name] = timed(d, threads)
    with stage("server load test"):  # loopback HTTP: 4 clients x 50 /act requests on each runtime
        server = {name: load_test(load_policy(methods[name]), clients=4, requests=50) for name in ("fp32", "onnx-fp32")}
    results = {}
    for name, d in methods.items():
        out = root / "eval" / name
        results[name] = cached_json(out / "results.json", name=f"eval {name}", make=lambda d=d, out=out: evaluate(
            EvalConfig(policy=str(d), split="train", tasks=TASKS, episodes=episodes, output_dir=str(out),
                       videos_per_task=0), False))
    base = results["fp32"]
    k0 = brief(base)["successes"]
    rows = []
    for name in methods:
        l1, r = lat1[name], results[name]
        k = brief(r)["successes"]
        lo, hi = difference_interval(k, r["episodes"], k0, base["episodes"])
        rows.append({"method": name, "size MB": f"{size_bytes(methods[name]) / 1e6:.2f}",
                     "p50 ms (1 thread)": f"{l1['p50_ms']:.2f}", "p99 ms (1 thread)": f"{l1['p99_ms']:.2f}",
                     "speed-up (1 thread)": f"{lat1['fp32']['p50_ms'] / l1['p50_ms']:.2f}x",
                     "vs dense, same runtime": f"{lat1[dense_runtime(name)]['p50_ms'] / l1['p50_ms']:.2f}x"
                                               if dense_runtime(name) else "",
                     f"p50 ms ({threads} threads)": f"{latn[name]['p50_ms']:.2f}" if name in latn else "",
                     "success": f"{100 * r['success_rate']:.1f}%",
                     "change vs fp32": f"{100 * (r['success_rate'] - base['success_rate']):+.1f} "
                                       f"[{100 * lo:+.0f}, {100 * hi:+.0f}]"})
    figures = {"policy": str(policy), "dataset": str(dataset), "tasks": TASKS, "episodes_per_task": episodes,
               "latency_1_thread": lat1, "latency_all_threads": latn, "server_load_test": server,
               "success": {n: {"success_rate": r["success_rate"], "successes": brief(r)["successes"],
                               "episodes": r["episodes"], "ci95": r["ci95"]} for n, r in results.items()}}
    figures["pruning_curve"] = pruning_curve(results, RESULTS / "deploy_pruning.png")
    write("deploy", figures, rows, "Deployment methods: size, batch-1 act() latency, success change",
          seeds={"collect_scenes_from": 0, "train": 0, "eval_scenes_from": EVAL_SEEDS, "latency_observation": 0})


def dense_runtime(name: str) -> str:
    """The unpruned row a sliced or pruned-and-exported row is compared with ('' for other rows)."""
    if name.startswith("sliced-"):
        return "fp32"
    return name.partition("+")[2]


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
