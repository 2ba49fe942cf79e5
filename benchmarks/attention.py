"""Attention kernels: forward + backward time and peak memory vs sequence length.

    python benchmarks/attention.py [--max_len=4096]

Backends: naive (softmax(QK^T)V written out, the T x T matrix kept for backward), composed
(the same in bf16 matmuls with an fp32 softmax), torch SDPA's math kernel, its fused flash
kernel (CPU and CUDA) and, on CUDA, the memory-efficient kernel and the flash-attn package when
installed. Shape: batch 4, 4 heads of 32 (the policy's head size), a padding mask over the first
10% of keys on CPU (CUDA kernels run unmasked: torch's flash kernel takes no mask). A second
sweep times the CPU bf16 kernels that ``auto`` chooses between at the policy's training batch
(64) and lengths up to 256, where the choice is made. Every point runs in a fresh process, so
the CPU peak is that process's resident-set growth (on CUDA torch's max allocated). Writes
benchmarks/results/attention.{json,md} and attention.png.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import sys
import time

import matplotlib
import torch
from common import RESULTS, stage, write

from vlaforge.models.transformer import attention, flash_attn_available, naive_attention

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BATCH, HEADS, HEAD_DIM = 4, 4, 32
POLICY_BATCH, POLICY_LENGTHS = 64, (16, 32, 64, 96, 128, 192, 256)


def measure(backend: str, length: int, dtype_name: str, device: str, batch: int = BATCH, reps: int = 5) -> dict:
    """Median fwd + bwd milliseconds (of ``reps`` after one warm-up) and the peak memory growth
    of one configuration."""
    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    q, k, v = (torch.randn(batch, HEADS, length, HEAD_DIM, device=device, dtype=dtype, requires_grad=True)
               for _ in range(3))
    mask = None
    if device == "cpu":
        mask = torch.ones(batch, length, dtype=torch.bool)
        mask[:, : length // 10] = False
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    times = []
    for _ in range(reps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        y = naive_attention(q, k, v, mask) if backend == "naive" else attention(q, k, v, mask, backend)
        y.float().sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        q.grad = k.grad = v.grad = None
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"ms": statistics.median(times[1:]) * 1000, "peak_mb": peak - base}


def _fresh(*args) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def main() -> None:
    max_len = int(next((a.split("=")[1] for a in sys.argv[1:] if a.startswith("--max_len=")), 4096))
    lengths = [n for n in (64, 128, 256, 512, 1024, 2048, 4096, 8192) if n <= max_len]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows, figures = [], {}
    for device in devices:
        backends = ["naive", "composed", "math", "flash"] + (["mem_efficient"] if device == "cuda" else [])
        if device == "cuda" and flash_attn_available():
            backends.append("flash")  # with the package installed, flash routes through flash-attn
        dtypes = ["float32", "bfloat16"] if device == "cpu" else ["float16"]
        for dtype in dtypes:
            for backend in backends:
                if device == "cuda" and backend == "flash" and dtype == "float32":
                    continue
                with stage(f"{device} {dtype} {backend}"):
                    for n in lengths:
                        r = _fresh(backend, n, dtype, device)
                        rows.append({"device": device, "dtype": dtype, "backend": backend, "batch": BATCH, "tokens": n,
                                     "fwd+bwd ms": round(r["ms"], 2), "peak MB": round(r["peak_mb"], 1)})
                        print(rows[-1], flush=True)
    policy_rows = []
    with stage(f"cpu bfloat16 at batch {POLICY_BATCH}"):
        for n in POLICY_LENGTHS:
            for backend in ("composed", "math", "flash"):
                r = _fresh(backend, n, "bfloat16", "cpu", POLICY_BATCH, 15)
                policy_rows.append({"device": "cpu", "dtype": "bfloat16", "backend": backend, "batch": POLICY_BATCH,
                                    "tokens": n, "fwd+bwd ms": round(r["ms"], 2), "peak MB": round(r["peak_mb"], 1)})
                print(policy_rows[-1], flush=True)
    figures["cpu_bfloat16_policy_batch"] = {
        n: {r["backend"]: r["fwd+bwd ms"] for r in policy_rows if r["tokens"] == n} for n in POLICY_LENGTHS}
    for device in devices:
        for dtype in {r["dtype"] for r in rows if r["device"] == device}:
            sel = [r for r in rows if r["device"] == device and r["dtype"] == dtype]
            longest = max(r["tokens"] for r in sel)
            at = {r["backend"]: r for r in sel if r["tokens"] == longest}
            figures[f"{device}_{dtype}_at_{longest}"] = {
                b: {"ms": r["fwd+bwd ms"], "peak_mb": r["peak MB"]} for b, r in at.items()}
    _plot(rows)
    write("attention", figures, rows + policy_rows, "Attention kernels: fwd + bwd time and peak memory vs tokens "
          f"(batch {BATCH}, {HEADS} heads x {HEAD_DIM})", seeds={"inputs": 0})


def _plot(rows: list[dict]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({(r["device"], r["dtype"], r["backend"]) for r in rows}):
        sel = [r for r in rows if (r["device"], r["dtype"], r["backend"]) == key]
        label = " ".join(key)
        axes[0].plot([r["tokens"] for r in sel], [r["fwd+bwd ms"] for r in sel], marker="o", label=label)
        axes[1].plot([r["tokens"] for r in sel], [max(r["peak MB"], 0.1) for r in sel], marker="o", label=label)
    for ax, what in zip(axes, ("fwd + bwd ms", "peak MB")):
        ax.set(xscale="log", yscale="log", xlabel="tokens", ylabel=what)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "attention.png", dpi=120)


if __name__ == "__main__":
    main()
