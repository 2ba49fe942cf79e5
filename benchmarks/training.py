"""Training engine throughput: fp32 vs bf16 (and fp16 on CUDA) step time, samples/s, model FLOPs
utilisation and peak memory of the default policy; why bf16 gains what it gains (wider models,
the CPU attention kernels); the overhead of gradient accumulation; DDP with 2 processes.

    python benchmarks/training.py [--ddp_steps=45]

Each configuration runs in a fresh process, so the CPU peak (resident-set growth over the
process's state after building the model: activations, gradients, optimizer state) is its own;
on CUDA the peak is torch's max allocated memory. MFU is the model's FLOPs per second (counted by
torch's FlopCounterMode over one forward + backward) over the peak of a large dense matmul
measured on the same device and dtype: an attainable peak, not the data-sheet one, which this
virtual machine does not expose. Writes benchmarks/results/training.{json,md}.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from common import cache_root, record_stage, stage, write
from parallel import dataset, run_mode
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vlaforge.models.config import PolicyConfig
from vlaforge.models.policy import build_policy
from vlaforge.train import amp
from vlaforge.train.trainer import BCObjective, train_step

BATCH, STEPS, WARMUP = 64, 12, 4
SPEC = {"image_size": 64, "cameras": ["front"], "state_dim": 4, "action_dim": 4,
        "vocab_size": 42}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def batch(n: int = BATCH) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 255, (n, 1, 1, 64, 64, 3), dtype=torch.uint8, generator=g),
        "state": torch.randn(n, 1, 4, generator=g),
        "tokens": torch.randint(1, 40, (n, 12), generator=g),
        "action": torch.randn(n, 8, 4, generator=g),
        "action_valid": torch.ones(n, 8, dtype=torch.bool),
    }


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def gemm_peak(precision: str, device: str) -> float:
    """GFLOP/s of a 2048^3 (CPU) or 8192^3 (CUDA) matmul: the attainable peak MFU divides by."""
    n = 2048 if device == "cpu" else 8192
    a, b = (torch.randn(n, n, device=device, dtype=DTYPES[precision]) for _ in range(2))
    for i in range(8):
        if i == 3:
            _sync(device)
            t = time.perf_counter()
        a @ b
    _sync(device)
    return 2 * n**3 * 5 / (time.perf_counter() - t) / 1e9


def _setup(precision: str, dev: torch.device, d_model: int = 128) -> tuple:
    """The policy's loss module, AdamW and the precision's loss scaler, seeded."""
    torch.manual_seed(0)
    module = BCObjective(build_policy(PolicyConfig(d_model=d_model), SPEC)).to(dev)
    return module, torch.optim.AdamW(module.parameters(), 1e-3), amp.grad_scaler(precision, dev)


def step_stats(precision: str, device: str, d_model: int = 128, accumulate: int = 1) -> dict:
    """ms per optimizer step, samples/s, GFLOP per step and peak memory of the trainer's
    ``train_step`` (AdamW, clipping) over a global batch of 64 in ``accumulate`` micro-batches."""
    dev = torch.device(device)
    module, opt, scaler = _setup(precision, dev, d_model)
    micro = [{k: v[i::accumulate] for k, v in batch().items()} for i in range(accumulate)]
    base = _rss_mb()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    with FlopCounterMode(display=False) as counter:
        train_step(module, opt, scaler, micro, precision, dev, 1.0)
    times = []
    for i in range(STEPS + WARMUP - 1):
        _sync(device)
        t = time.perf_counter()
        train_step(module, opt, scaler, micro, precision, dev, 1.0)
        _sync(device)
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times[WARMUP - 1:])  # the median: this shared VM has slow outliers
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _rss_mb()
    return {"ms": seconds * 1000, "samples_per_s": BATCH / seconds, "gflop": counter.get_total_flops() / 1e9,
            "peak_mb": peak - base, "params": sum(p.numel() for p in module.parameters())}


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::mkldnn_convolution", "aten::convolution_backward")
CAST_OPS = ("aten::copy_", "aten::_to_copy")


def time_shares(precision: str) -> dict:
    """Shares of a CPU training step's self time: matmuls and convolutions (what bf16 speeds up),
    attention kernels, dtype casts, and the rest (element-wise, norms, optimizer)."""
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device("cpu")
    module, opt, scaler = _setup(precision, dev)
    data = [batch()]  # made once: only the training step is profiled
    for _ in range(WARMUP):
        train_step(module, opt, scaler, data, precision, dev, 1.0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            train_step(module, opt, scaler, data, precision, dev, 1.0)
    ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(ops.values())
    matmul = sum(v for k, v in ops.items() if k in MATMUL_OPS)
    attention = sum(v for k, v in ops.items() if "scaled_dot_product" in k)
    casts = sum(v for k, v in ops.items() if k in CAST_OPS)
    return {"matmul_conv": matmul / total, "attention": attention / total, "casts": casts / total,
            "other": 1 - (matmul + attention + casts) / total}


def attention_ms(backend: SDPBackend, dtype: torch.dtype) -> float:
    """fwd + bwd ms of the default policy's attention shape (64 x 4 heads x 62 tokens x 32)."""
    q, k, v = (torch.randn(BATCH, 4, 62, 32, dtype=dtype, requires_grad=True) for _ in range(3))
    for i in range(8):
        if i == 3:
            t = time.perf_counter()
        with sdpa_kernel(backend):
            F.scaled_dot_product_attention(q, k, v).float().sum().backward()
    return (time.perf_counter() - t) / 5 * 1000


def _fresh(pool_fn, *args):
    with mp.get_context("spawn").Pool(1) as pool:  # a fresh process per configuration: its own peak
        return pool.apply(pool_fn, args)


def _median_of_runs(precisions: tuple[str, ...], *args, repeats: int = 3) -> dict[str, dict]:
    """Per precision, the run with the median step time out of ``repeats`` fresh processes,
    interleaved so that a slow spell of this shared machine does not land on one precision."""
    runs = {p: [] for p in precisions}
    for _ in range(repeats):
        for p in precisions:
            runs[p].append(_fresh(step_stats, p, *args))
    return {p: sorted(r, key=lambda s: s["ms"])[len(r) // 2] for p, r in runs.items()}


def main() -> None:
    ddp_steps = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--ddp_steps=")), 45)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows, figures = [], {"global_batch": BATCH, "steps_timed": STEPS}

    def row(what: str, device: str, precision: str, s: dict, peak: float) -> dict:
        tflops = s["gflop"] / (s["ms"] / 1000) / 1000
        r = {"what": what, "device": device, "precision": precision, "ms/step": round(s["ms"], 1),
             "samples/s": round(s["samples_per_s"], 1), "model TFLOP/s": round(tflops, 3),
             "MFU": f"{tflops * 1000 / peak:.1%}", "peak MB": round(s["peak_mb"], 1)}
        rows.append(r)
        return r

    started = time.perf_counter()
    for device in devices:
        precisions = ("fp32", "bf16") + (("fp16",) if device == "cuda" else ())
        peaks = {p: _fresh(gemm_peak, p, device) for p in precisions}
        figures[f"{device}_gemm_peak_gflops"] = {p: round(v, 1) for p, v in peaks.items()}
        for p in precisions:
            rows.append({"what": "dense matmul peak (MFU's denominator)", "device": device, "precision": p,
                         "ms/step": "", "samples/s": "", "model TFLOP/s": round(peaks[p] / 1000, 3), "MFU": "100%",
                         "peak MB": ""})
        default = _median_of_runs(precisions, device)
        for p, s in default.items():
            row(f"train step, default policy ({s['params'] / 1e6:.2f}M params, {s['gflop']:.1f} GFLOP)", device, p,
                s, peaks[p])
        figures[f"{device}_bf16_speedup"] = round(default["bf16"]["samples_per_s"] / default["fp32"]["samples_per_s"], 2)
        figures[f"{device}_bf16_memory_ratio"] = round(default["bf16"]["peak_mb"] / default["fp32"]["peak_mb"], 2)
        for width in (256, 512):
            wide = _median_of_runs(("fp32", "bf16"), device, width, repeats=1 if width == 512 else 3)
            for p, s in wide.items():
                row(f"train step, d_model={width} ({s['params'] / 1e6:.2f}M params)", device, p, s, peaks[p])
            figures[f"{device}_bf16_speedup_d{width}"] = round(wide["bf16"]["samples_per_s"] / wide["fp32"]["samples_per_s"], 2)
        one = default["bf16"]
        for k in (4, 8):
            s = _median_of_runs(("bf16",), device, 128, k)["bf16"]
            r = row(f"accumulate={k} (micro-batch {BATCH // k}, effective {BATCH})", device, "bf16", s, peaks["bf16"])
            figures[f"{device}_accumulate{k}_overhead"] = round(s["ms"] / one["ms"] - 1, 3)
            r["what"] += f": {s['ms'] / one['ms'] - 1:+.0%} time per step"
    record_stage("step timings, matmul peaks, accumulation", time.perf_counter() - started)
    started = time.perf_counter()
    shares = {p: _fresh(time_shares, p) for p in ("fp32", "bf16")}
    figures["cpu_step_time_shares"] = {p: {k: round(v, 3) for k, v in sh.items()} for p, sh in shares.items()}
    gemm_ratio = figures["cpu_gemm_peak_gflops"]["bf16"] / figures["cpu_gemm_peak_gflops"]["fp32"]
    f = shares["fp32"]["matmul_conv"]
    # Amdahl: only the matmul/convolution share runs faster, and at most by the dense-matmul ratio.
    figures["cpu_bf16_speedup_bound"] = round(1 / ((1 - f) + f / gemm_ratio), 2)
    for p, sh in shares.items():
        rows.append({"what": "share of step time: " + ", ".join(f"{k} {v:.0%}" for k, v in sh.items()),
                     "device": "cpu", "precision": p, "ms/step": "", "samples/s": "", "model TFLOP/s": "", "MFU": "",
                     "peak MB": ""})
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
        for p in ("fp32", "bf16"):
            rows.append({"what": f"attention fwd+bwd ({backend.name} kernel), ms/call", "device": "cpu",
                         "precision": p, "ms/step": round(attention_ms(backend, DTYPES[p]), 2), "samples/s": "",
                         "model TFLOP/s": "", "MFU": "", "peak MB": ""})
    record_stage("time shares, attention kernels", time.perf_counter() - started)
    root = cache_root("runs/bench_training")
    data = dataset(root)
    modes = [("1 process, fp32", ["--precision=fp32"]), ("1 process", [])]
    if torch.cuda.device_count() != 1:  # DDP needs a GPU per process under NCCL
        modes.append(("dp=2 (DDP)", ["--parallel.dp=2"]))
    for label, args in modes:
        with stage(f"vlaforge train {label}"):
            r = run_mode(root, label, args, ddp_steps, data)
        precision = "fp32" if args[:1] == ["--precision=fp32"] else "bf16"
        rows.append({"what": f"vlaforge train, {label.split(',')[0]}, tabletop data (peak MB: whole process)",
                     "device": devices[-1], "precision": precision, "ms/step": round(1000 * BATCH / r["samples/s"], 1),
                     "samples/s": r["samples/s"], "model TFLOP/s": "", "MFU": "", "peak MB": r["peak RSS per process (MB)"]})
        figures[f"train_cli_{re.sub(r'[^a-z0-9]+', '_', label.lower()).strip('_')}_samples_per_s"] = r["samples/s"]
    figures["train_cli_bf16_speedup"] = round(figures["train_cli_1_process_samples_per_s"]
                                              / figures["train_cli_1_process_fp32_samples_per_s"], 2)
    write("training", figures, rows, "Training engine: precision, MFU, accumulation, DDP (global batch 64)",
          seeds={"synthetic_batches": 0, "init": 0, "collect_scenes_from": 0, "train": 0})


if __name__ == "__main__":
    main()
