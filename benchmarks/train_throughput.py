"""Training throughput of the default VLA policy: fp32 vs bf16 autocast, and CPU attention kernels.

    python benchmarks/train_throughput.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import write
from vlaforge.config import PolicyConfig
from vlaforge.models.policy import build_policy

BATCH, STEPS = 64, 8


def batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 255, (BATCH, 1, 1, 64, 64, 3), dtype=torch.uint8, generator=g),
        "state": torch.randn(BATCH, 1, 4, generator=g),
        "tokens": torch.randint(1, 40, (BATCH, 12), generator=g),
        "action": torch.randn(BATCH, 8, 4, generator=g),
        "action_valid": torch.ones(BATCH, 8, dtype=torch.bool),
    }


def train_rate(precision: str, device: str) -> float:
    spec = {"image_size": 64, "cameras": ["front"], "state_dim": 4, "action_dim": 4, "vocab": ["<pad>", "<unk>"] + [str(i) for i in range(40)]}
    torch.manual_seed(0)
    model = build_policy(PolicyConfig(), spec).to(device)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    b = {k: v.to(device) for k, v in batch().items()}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")
    for i in range(STEPS + 3):
        if i == 3:
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model.loss(b)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()
    return BATCH * STEPS / (time.perf_counter() - t)


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
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for precision in ("fp32", "bf16") + (("fp16",) if device == "cuda" else ()):
            rows.append({"what": "train step", "device": device, "precision": precision,
                         "samples_per_s": round(train_rate(precision, device), 1)})
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
        for dtype in (torch.float32, torch.bfloat16):
            rows.append({"what": f"sdpa fwd+bwd ms ({backend.name})", "device": "cpu", "precision": str(dtype).split(".")[-1],
                         "samples_per_s": round(attention_ms(backend, dtype), 2)})
    cpu = {r["precision"]: r["samples_per_s"] for r in rows if r["what"] == "train step" and r["device"] == "cpu"}
    write("train_throughput", {"cpu_bf16_speedup": round(cpu["bf16"] / cpu["fp32"], 2)}, rows,
          "Default VLA training throughput (batch 64; attention rows are milliseconds per call)")


if __name__ == "__main__":
    main()
