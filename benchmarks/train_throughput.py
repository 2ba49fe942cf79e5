"""Training step of the default VLA policy: fp32 vs bf16 (and fp16 on CUDA) step time, throughput
and peak memory; and the CPU attention kernels.

    python benchmarks/train_throughput.py

Each configuration runs in a fresh process, so the CPU peak (resident-set growth over the
process's state after building the model, which is what activations, gradients and optimizer
state add) is its own. On CUDA the peak is torch's max allocated memory.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time

import torch
import torch.nn.functional as F
from common import write
from torch.nn.attention import SDPBackend, sdpa_kernel

from vlaforge.config import PolicyConfig
from vlaforge.models.policy import build_policy
from vlaforge.train import amp

BATCH, STEPS, WARMUP = 64, 8, 3


def batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 255, (BATCH, 1, 1, 64, 64, 3), dtype=torch.uint8, generator=g),
        "state": torch.randn(BATCH, 1, 4, generator=g),
        "tokens": torch.randint(1, 40, (BATCH, 12), generator=g),
        "action": torch.randn(BATCH, 8, 4, generator=g),
        "action_valid": torch.ones(BATCH, 8, dtype=torch.bool),
    }


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_step_stats(precision: str, device: str) -> dict:
    """ms per step, samples/s and peak memory (MB) of AdamW steps at ``precision``."""
    spec = {"image_size": 64, "cameras": ["front"], "state_dim": 4, "action_dim": 4,
            "vocab": ["<pad>", "<unk>"] + [str(i) for i in range(40)]}
    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_policy(PolicyConfig(), spec).to(dev)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    b = {k: v.to(dev) for k, v in batch().items()}
    scaler = amp.grad_scaler(precision, dev)
    base = _rss_mb()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    for i in range(STEPS + WARMUP):
        if i == WARMUP:
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
        with amp.autocast(precision, dev):
            loss = model.loss(b)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t) / STEPS
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _rss_mb()
    return {"ms": seconds * 1000, "samples_per_s": BATCH / seconds, "peak_mb": peak - base}


def attention_ms(backend: SDPBackend, dtype: torch.dtype) -> float:
    q, k, v = (torch.randn(BATCH, 4, 62, 32, dtype=dtype, requires_grad=True) for _ in range(3))
    for i in range(8):
        if i == 3:
            t = time.perf_counter()
        with sdpa_kernel(backend):
            F.scaled_dot_product_attention(q, k, v).float().sum().backward()
    return (time.perf_counter() - t) / 5 * 1000


def main() -> None:
    rows = []
    ctx = mp.get_context("spawn")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for precision in ("fp32", "bf16") + (("fp16",) if device == "cuda" else ()):
            with ctx.Pool(1) as pool:  # a fresh process per configuration: its own memory peak
                s = pool.apply(train_step_stats, (precision, device))
            rows.append({"what": "train step", "device": device, "precision": precision, "ms": round(s["ms"], 1),
                         "samples_per_s": round(s["samples_per_s"], 1), "peak_mb": round(s["peak_mb"], 1)})
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
        for dtype in (torch.float32, torch.bfloat16):
            rows.append({"what": f"sdpa fwd+bwd ({backend.name})", "device": "cpu", "precision": str(dtype).split(".")[-1],
                         "ms": round(attention_ms(backend, dtype), 2), "samples_per_s": "", "peak_mb": ""})
    steps = {(r["device"], r["precision"]): r for r in rows if r["what"] == "train step"}
    figures = {"batch": BATCH, "steps_timed": STEPS,
               "cpu_bf16_speedup": round(steps["cpu", "bf16"]["samples_per_s"] / steps["cpu", "fp32"]["samples_per_s"], 2),
               "cpu_bf16_memory_ratio": round(steps["cpu", "bf16"]["peak_mb"] / steps["cpu", "fp32"]["peak_mb"], 2)}
    write("train_throughput", figures, rows, "Default VLA training step (batch 64): time, throughput, peak memory")


if __name__ == "__main__":
    main()
