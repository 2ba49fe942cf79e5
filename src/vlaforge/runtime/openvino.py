"""The ``openvino`` deploy runtime: the policy's ONNX graph compiled by OpenVINO for the CPU
(written by ``vlaforge quantize --method=openvino-fp32``, deploy/onnx.py). OpenVINO reads the
ONNX protobuf directly, so the directory holds the same graph ONNX Runtime runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vlaforge.registry import DEPLOY_RUNTIMES
from vlaforge.runtime.onnx import graph_feeds
from vlaforge.runtime.policy import RuntimePolicy, load_torch_policy


def _ov():
    try:
        import openvino
    except ImportError as e:
        raise ImportError(f"the OpenVINO runtime needs openvino: pip install 'vlaforge[deploy]' ({e})") from None
    return openvino


def compiled_model(path: Path, threads: int = 0):
    """The graph compiled for the CPU, latency-oriented, in fp32 (OpenVINO would otherwise run
    bf16 on CPUs that have it: 7e-3 from PyTorch on the test policy, beyond an fp32 backend's
    parity limit), with ``threads`` inference threads (0 = as many as torch uses, so one thread
    setting governs every runtime)."""
    ov = _ov()
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
              "INFERENCE_PRECISION_HINT": "f32"}
    return core.compile_model(core.read_model(str(path)), "CPU", config)


def openvino_predict(model):
    """One row's prediction on a compiled OpenVINO model (``RuntimePolicy``'s ``predict_fn``)."""
    wants_noise = "noise" in {p.get_any_name() for p in model.inputs}
    request = model.create_infer_request()

    def predict(images: torch.Tensor, states: torch.Tensor, tokens: torch.Tensor,
                noise: torch.Tensor | None = None) -> np.ndarray:
        feeds = graph_feeds(wants_noise, images, states, tokens, noise)
        return np.asarray(request.infer(feeds)[model.outputs[0]])[0]

    return predict


@DEPLOY_RUNTIMES.register("openvino")
def _load_deployed(d: Path, info: dict, file, verify: bool) -> RuntimePolicy:
    path = d / file("model")
    if not path.is_file():
        raise FileNotFoundError(f"deployed policy {d} lacks {path.name}")
    return RuntimePolicy(load_torch_policy(d, verify=verify), openvino_predict(compiled_model(path)))
