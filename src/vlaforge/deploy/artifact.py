"""Deployed policy directories: the policy's config, normaliser and fp32 weights, plus what a
runtime needs (``model.onnx``, ``model.int8.onnx``), described by ``deploy.json``:

    {"runtime": "onnxruntime" | "torch" | "torch-pt2e", "method": "onnx-fp32" | "onnx-int8" |
     "dynamic-int8" | "int8-weight" | "int4-weight" | "static-int8" | ...,
     "model" (onnxruntime) | "calibration_file" (torch-pt2e): "<a file in this directory>",
     "size_bytes": ..., "parity_max_abs": ...}

A deployed directory is data, never code: every file it names is a plain file inside it, and
no loader unpickles (ONNX is a protobuf graph, the rest safetensors and JSON).

``load_policy`` reads any of them, so evaluation, benchmarks and the control loop run a deployed
policy exactly as they run a trained one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vlaforge.files import atomic_dir, sha256_file
from vlaforge.models.policy import Policy, check_sha256

RUNTIME_FILES = ("config.json", "normalization.json", "model.safetensors")


def write_deployed(policy_dir: str | os.PathLike, out: str | os.PathLike, write: Callable[[Path], dict]) -> Path:
    """Copy the policy's files into a temporary directory, let ``write(tmp)`` add the runtime's
    files and return deploy.json's fields, then rename the directory into place (atomic)."""
    src, out = Path(policy_dir), Path(out)
    if out.resolve() == src.resolve():
        raise ValueError(f"the deployed policy must go to a new directory, not over {src}")
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose another --output or remove it")
    with atomic_dir(out) as tmp:
        for name in RUNTIME_FILES:
            shutil.copy2(src / name, tmp / name)
        info = write(tmp)
        runtime_file = info.get("model") or info.get("calibration_file")
        if runtime_file:
            info["sha256"] = sha256_file(tmp / runtime_file)
        (tmp / "deploy.json").write_text(json.dumps(info | {"source": str(src)}, indent=2))
    return out


RUNTIMES = ("onnxruntime", "torch", "torch-pt2e")


def confined(d: Path, info: dict, key: str) -> str:
    """deploy.json's ``key``: the name of a regular file directly inside ``d`` (no path
    separators, no parent references, no symlink leading out)."""
    name = info.get(key)
    where = d / "deploy.json"
    if not isinstance(name, str) or not name or name != Path(name).name or name in (".", ".."):
        raise ValueError(f"{where}: {key} must name a file inside the policy directory, got {name!r}")
    path = d / name
    if path.is_symlink() or path.resolve().parent != d.resolve():
        raise ValueError(f"{where}: {key} {name!r} leads outside the policy directory")
    return name


def load_deployed(d: Path, verify: bool = True):
    """The policy a deployed directory describes, on its runtime; ``verify`` checks the runtime's
    file against the sha256 deploy.json records (the weights are checked by ``load_torch_policy``)."""
    try:
        info = json.loads((d / "deploy.json").read_text())
        runtime = info["runtime"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{d / 'deploy.json'} is unreadable: {e}") from None
    def checked(key: str) -> str:
        name = confined(d, info, key)
        if verify and (d / name).is_file():
            check_sha256(d / name, info.get("sha256"), d / "deploy.json")
        return name

    if runtime == "onnxruntime":
        from vlaforge.deploy.onnx import load_onnx_policy

        return load_onnx_policy(d, checked("model"), verify=verify)
    if runtime == "torch":
        from vlaforge.deploy.quantize import load_quantized

        return load_quantized(d, info["method"], verify=verify)
    if runtime == "torch-pt2e":
        from vlaforge.deploy.static_int8 import load_static_int8

        return load_static_int8(d, checked("calibration_file"), verify=verify)
    if runtime == "torch-export":
        raise ValueError(f"{d / 'deploy.json'}: runtime 'torch-export' is refused: loading a torch.export archive "
                         "unpickles it, so it could run code; quantize the policy again with "
                         "`vlaforge quantize --method=static-int8` (it now stores calibration data, not a program)")
    raise ValueError(f"{d / 'deploy.json'} names an unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")


def example_inputs(policy, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random model inputs of the policy's shapes (images, states, tokens of real vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    t = policy.cfg.n_obs_steps
    images = torch.randint(0, 256, (batch, t, *policy.image_shape), generator=g, dtype=torch.uint8)
    states = torch.randn(batch, t, policy.state_dim, generator=g)
    tokens = torch.randint(1, len(policy.tokenizer), (batch, policy.cfg.max_text_tokens), generator=g)
    return images, states, tokens


class RuntimePolicy(Policy):
    """A policy whose network call is ``predict_fn`` (a compiled, quantized or ORT network)."""

    def __init__(self, base: Policy, predict_fn: Callable) -> None:
        self._setup(base.cfg, base.normalizer, base.tokenizer, base.meta)
        self._predict_fn = predict_fn
        self.reset()

    def reset(self, seed: int = 0) -> None:
        self._history.clear()

    def predict(self, images: torch.Tensor, states: torch.Tensor, tokens: torch.Tensor) -> np.ndarray:
        return self._predict_fn(images, states, tokens)
