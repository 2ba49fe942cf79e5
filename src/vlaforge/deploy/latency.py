"""Batch-1 latency of a policy's ``act`` on every runtime (``vlaforge bench latency``).

Each runtime is timed on the same observations after a warm-up (which also absorbs
torch.compile's compilation); p50 and p99 over ``calls`` calls, threads stated. ``act`` includes
the Python around the network (tokenizer, normaliser, history), as a control loop pays it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vlaforge.runtime.policy import Policy, RuntimePolicy, example_inputs, load_torch_policy

RUNTIMES = ("eager", "bf16", "compile", "dynamic-int8", "int8-weight", "int4-weight", "static-int8", "onnx-fp32",
            "onnx-int8")


def _torch_predict(model: torch.nn.Module, bf16: bool = False) -> Callable:
    @torch.no_grad()
    def predict(images, states, tokens):
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return model(images, states, tokens)[0].float().numpy()

    return predict


def runtime(base: Policy, name: str, workdir: Path, threads: int) -> Policy:
    """``base`` on the runtime ``name``."""
    if name == "eager":
        return RuntimePolicy(base, _torch_predict(base.model))
    if name == "bf16":
        return RuntimePolicy(base, _torch_predict(base.model, bf16=True))
    if name == "compile":
        return RuntimePolicy(base, _torch_predict(torch.compile(base.model)))
    if name in ("dynamic-int8", "int8-weight", "int4-weight"):
        from vlaforge.runtime.torch_methods import TORCH_METHODS

        return RuntimePolicy(base, _torch_predict(TORCH_METHODS[name](base.model)))
    if name == "static-int8":  # calibrated on random inputs: the timing does not depend on the ranges
        from vlaforge.runtime.pt2e import module_predict, static_int8

        quant = static_int8(base, [example_inputs(base, seed=s) for s in range(4)])
        return RuntimePolicy(base, module_predict(torch.compile(quant)))
    if name in ("onnx-fp32", "onnx-int8"):
        from vlaforge.deploy.onnx import export_onnx, quantize_int8
        from vlaforge.runtime.onnx import onnx_predict, session

        path = workdir / "model.onnx"
        if not path.exists():
            export_onnx(base, path)
        if name == "onnx-int8":
            quantize_int8(path, workdir / "model.int8.onnx")
            path = workdir / "model.int8.onnx"
        return RuntimePolicy(base, onnx_predict(session(path, threads)))
    raise ValueError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}")


def observation(policy: Policy, seed: int = 0) -> dict:
    """A realistic observation for timing: random pixels, a state, a tabletop instruction (tokens
    are padded to a fixed length, so its words do not change the time)."""
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, policy.image_shape, dtype=np.uint8),
            "state": rng.normal(size=policy.state_dim).astype(np.float32),
            "instruction": "pick up the red cube and place it on the blue zone"}


def time_act(policy: Policy, calls: int, warmup: int) -> list[float]:
    """Milliseconds per ``act`` call after ``warmup`` untimed calls."""
    obs = observation(policy)
    for _ in range(warmup):
        policy.act(obs)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        policy.act(obs)
        times.append(1000 * (time.perf_counter() - t))
    return times


def bench_latency(policy_dir: str, runtimes: list[str], calls: int = 200, warmup: int = 20, threads: int = 0) -> list[dict]:
    """One row per runtime: p50/p99 ms, mean, threads, and the action error against eager fp32."""
    for name in runtimes:
        if name not in RUNTIMES:
            raise ValueError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}")
    if calls < 1 or warmup < 0:
        raise ValueError("calls must be >= 1 and warmup >= 0")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _bench(policy_dir, runtimes, calls, warmup, threads)
    finally:
        torch.set_num_threads(previous)


def _bench(policy_dir: str, runtimes: list[str], calls: int, warmup: int, threads: int) -> list[dict]:
    base = load_torch_policy(Path(policy_dir))
    reference = base.act(observation(base))
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in runtimes:
            t = time.perf_counter()
            policy = runtime(base, name, Path(work), threads)
            setup = time.perf_counter() - t
            times = time_act(policy, calls, warmup)
            policy.reset()
            err = float(np.abs(policy.act(observation(base)) - reference).max())
            rows.append({"runtime": name, "p50_ms": statistics.median(times), "p99_ms": float(np.percentile(times, 99)),
                         "mean_ms": statistics.fmean(times), "setup_s": setup, "calls": calls,
                         "threads": threads or torch.get_num_threads(), "max_action_diff": err})
    return rows
