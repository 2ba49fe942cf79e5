"""Deployed policy directories: deploy.json names a runtime of the ``DEPLOY_RUNTIMES`` registry
and the files it reads. A runtime is one function registered under its name,
``load(d, info, file, verify) -> Policy``, where ``info`` is deploy.json and ``file(key)`` gives
the file deploy.json names under ``key``, confined to ``d`` and checked against its sha256:

    {"runtime": "onnxruntime" | "openvino" | "torch" | "torch-pt2e", "method": "onnx-fp32" | "onnx-int8" |
     "dynamic-int8" | "int8-weight" | "int4-weight" | "static-int8" | ...,
     "model" (onnxruntime, openvino) | "calibration_file" (torch-pt2e): "<a file in this directory>",
     "size_bytes": ..., "parity_max_abs": ..., "sha256": "<of that file>"}

A deployed directory is data, never code: every file it names is a plain file inside it, and no
runtime unpickles (ONNX is a protobuf graph, the rest safetensors and JSON). The writing side
(export, quantize, parity checks) is in deploy/.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlaforge.registry import DEPLOY_RUNTIMES
from vlaforge.runtime import onnx, openvino, pt2e, torch_methods  # noqa: F401  (registration)
from vlaforge.runtime.policy import check_sha256


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
        """deploy.json's file under ``key``: confined to ``d`` and, with ``verify``, its sha256 checked."""
        name = confined(d, info, key)
        if verify and (d / name).is_file():
            check_sha256(d / name, info.get("sha256"), d / "deploy.json")
        return name

    if runtime == "torch-export":
        raise ValueError(f"{d / 'deploy.json'}: runtime 'torch-export' is refused: loading a torch.export archive "
                         "unpickles it, so it could run code; quantize the policy again with "
                         "`vlaforge quantize --method=static-int8` (it now stores calibration data, not a program)")
    if runtime not in DEPLOY_RUNTIMES.names():
        raise ValueError(f"{d / 'deploy.json'} names an unknown runtime {runtime!r}; "
                         f"known: {', '.join(DEPLOY_RUNTIMES.names())}")
    return DEPLOY_RUNTIMES.get(runtime)(d, info, checked, verify)
