"""Batch-1 latency of a policy's ``act`` on every runtime (``vlaforge bench latency``).

Each runtime is timed on the same observations after a warm-up (which also absorbs
torch.compile's compilation); p50 and p99 over ``calls`` calls, threads stated. ``act`` includes
the Python around the network (tokenizer, normaliser, history), as a control loop pays it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from vlaforge.deploy.artifact import deploy
from vlaforge.deploy.base import DeployOptions
from vlaforge.registry import DEPLOY_BACKENDS
from vlaforge.runtime.backends import load_deployed
from vlaforge.runtime.policy import Policy, load_torch_policy


def runtimes() -> list[str]:
    """What ``bench latency`` can time: ``eager`` (the fp32 policy) and every deploy backend."""
    return ["eager", *DEPLOY_BACKENDS.names()]


def runtime(base_dir: Path, name: str, workdir: Path) -> Policy:
    """The policy in ``base_dir`` on the runtime ``name``: itself for ``eager``, else deployed with
    that backend into ``workdir`` (parity checked, as ``vlaforge quantize`` does) and loaded back.
    static-int8 calibrates on random inputs here: the timing does not depend on the ranges."""
    if name == "eager":
        return load_torch_policy(base_dir)
    return load_deployed(deploy(base_dir, workdir / name, name, DeployOptions(random_calibration=True)))


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


def bench_latency(policy_dir: str, names: list[str], calls: int = 200, warmup: int = 20, threads: int = 0) -> list[dict]:
    """One row per runtime: p50/p99 ms, mean, threads, and the action error against eager fp32."""
    for name in names:
        if name not in runtimes():
            raise ValueError(f"unknown runtime {name!r}; known: {', '.join(runtimes())}")
    if calls < 1 or warmup < 0:
        raise ValueError("calls must be >= 1 and warmup >= 0")
    with cpu_threads(threads):
        return _bench(Path(policy_dir), names, calls, warmup)


@contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (0 = as set), restored afterwards. ONNX
    Runtime sessions created inside take the same count (runtime/onnx.py)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _bench(policy_dir: Path, names: list[str], calls: int, warmup: int) -> list[dict]:
    reference = load_torch_policy(policy_dir)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            t = time.perf_counter()
            policy = runtime(policy_dir, name, Path(work))
            setup = time.perf_counter() - t
            rows.append({"runtime": name, **time_policy(policy, reference, calls, warmup), "setup_s": setup})
    return rows


def time_policy(policy: Policy, reference: Policy, calls: int, warmup: int) -> dict:
    """p50/p99/mean ms of ``policy.act`` and its largest action difference from ``reference``'s."""
    times = time_act(policy, calls, warmup)
    policy.reset()
    obs = observation(reference)
    err = float(np.abs(policy.act(obs) - reference.act(obs)).max())
    return {"p50_ms": statistics.median(times), "p99_ms": float(np.percentile(times, 99)),
            "mean_ms": statistics.fmean(times), "calls": calls, "threads": torch.get_num_threads(),
            "max_action_diff": err}
