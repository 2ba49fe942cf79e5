"""Deployed policy directories, the writing side: ``deploy(policy_dir, out, method)`` is the one
path by which export, quantization and ``bench latency`` make a deployed policy. It copies the
policy's config, normaliser and fp32 weights, lets the backend registered under ``method`` in
``DEPLOY_BACKENDS`` add its files, records their sha256, loads the directory back through its
runtime (exactly as ``load_policy`` will) and refuses it unless its actions stay within the
backend's parity limit of the fp32 policy's. deploy.json (read by runtime/backends.py):

    {"runtime": "onnxruntime" | "torch" | "torch-pt2e", "method": "<the backend>",
     "model" (onnxruntime) | "calibration_file" (torch-pt2e): "<a file in this directory>",
     "sha256": "<of that file>", "size_bytes": ..., "fp32_size_bytes": ..., "parity_max_abs": ...,
     "parity_limit": ..., "head": ..., "source": "<policy directory>"}

A deployed directory is data, never code: every file it names is a plain file inside it, and
no loader unpickles (ONNX is a protobuf graph, the rest safetensors and JSON).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from vlaforge.deploy import onnx, quantize, static_int8  # noqa: F401  (registration)
from vlaforge.deploy.base import DeployBackend, DeployOptions
from vlaforge.files import atomic_dir, sha256_file
from vlaforge.registry import DEPLOY_BACKENDS
from vlaforge.runtime.backends import load_deployed
from vlaforge.runtime.policy import Policy, example_inputs, load_torch_policy

RUNTIME_FILES = ("config.json", "normalization.json", "model.safetensors")
PARITY_SAMPLES = 8


def backend(method: str) -> DeployBackend:
    """The registered backend ``method``, or a one-line error listing them."""
    if method not in DEPLOY_BACKENDS.names():
        raise ValueError(f"unknown deploy method {method!r}; known: {', '.join(DEPLOY_BACKENDS.names())}")
    return DEPLOY_BACKENDS.get(method)


def parity(deployed: Policy, base: Policy, samples: int = PARITY_SAMPLES) -> float:
    """max |deployed - base| over the normalised action chunks of ``samples`` example inputs
    (random pixels, states and tokens; seeds 0..samples-1)."""
    worst = 0.0
    for seed in range(samples):
        x = example_inputs(base, seed=seed)
        worst = max(worst, float(np.abs(deployed.predict(*x) - base.predict(*x)).max()))
    return worst


def deploy(policy_dir: str | os.PathLike, out: str | os.PathLike, method: str,
           options: DeployOptions = DeployOptions()) -> Path:
    """Write ``policy_dir`` deployed with ``method`` to the new directory ``out`` (atomically: on
    any failure, the parity check's included, nothing is left at ``out``)."""
    chosen = backend(method)
    src, out = Path(policy_dir), Path(out)
    if not str(out) or out == Path("."):
        raise ValueError("deploying needs --output=DIR, a new directory for the deployed policy")
    if out.resolve() == src.resolve():
        raise ValueError(f"the deployed policy must go to a new directory, not over {src}")
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose another --output or remove it")
    base = load_torch_policy(src)
    with atomic_dir(out) as tmp:
        for name in RUNTIME_FILES:
            shutil.copy2(src / name, tmp / name)
        info = {**chosen.write(base, tmp, options), "method": method, "head": base.cfg.head, "source": str(src)}
        runtime_file = info.get("model") or info.get("calibration_file")
        if runtime_file:
            info["sha256"] = sha256_file(tmp / runtime_file)
        (tmp / "deploy.json").write_text(json.dumps(info, indent=2))
        err = parity(load_deployed(tmp), base)
        if not np.isfinite(err) or err > chosen.parity_limit:
            raise RuntimeError(f"{method}: parity check failed: max |deployed - fp32| = {err:.3g} > "
                               f"{chosen.parity_limit} (normalised action units); nothing written to {out}")
        info |= {"parity_max_abs": err, "parity_limit": chosen.parity_limit}
        (tmp / "deploy.json").write_text(json.dumps(info, indent=2))
    return out
