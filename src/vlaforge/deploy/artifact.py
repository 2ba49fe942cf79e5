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

from vlaforge.files import atomic_dir, sha256_file

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
