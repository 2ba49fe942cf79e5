"""The ``onnxruntime`` deploy runtime: a policy whose network is an ONNX graph run by ONNX Runtime
(written by ``vlaforge export onnx`` / ``quantize --method=onnx-int8``, deploy/onnx.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vlaforge.registry import DEPLOY_RUNTIMES
from vlaforge.runtime.policy import RuntimePolicy, load_torch_policy


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"ONNX deployment needs onnxruntime: pip install 'vlaforge[deploy]' ({e})") from None
    return onnxruntime


def session(path: Path, threads: int = 0):
    """An ONNX Runtime CPU session (TensorRT, then CUDA, first when the GPU build has them) with
    ``threads`` intra-op threads; 0 = as many as torch uses (``torch.set_num_threads``), so one
    thread setting governs both runtimes."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    wanted = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    providers = [p for p in wanted if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), opts, providers=providers)


def graph_feeds(wants_noise: bool, images: torch.Tensor, states: torch.Tensor, tokens: torch.Tensor,
                noise: torch.Tensor | None) -> dict[str, np.ndarray]:
    """The exported graph's inputs by name (deploy/onnx.py's INPUTS, plus the initial noise
    (B, K, A) of a sampling head's graph), for any runtime that runs that graph."""
    feeds = {"image": images.numpy(), "state": states.numpy().astype(np.float32), "tokens": tokens.numpy()}
    if wants_noise:
        if noise is None:
            raise ValueError("this ONNX graph samples: it needs the initial noise (B, K, A)")
        feeds["noise"] = noise.numpy().astype(np.float32)
    return feeds


def onnx_predict(sess):
    """One row's prediction on an ONNX Runtime session (``RuntimePolicy``'s ``predict_fn``); a
    sampling head's graph also takes the initial noise."""
    wants_noise = "noise" in {i.name for i in sess.get_inputs()}

    def predict(images: torch.Tensor, states: torch.Tensor, tokens: torch.Tensor,
                noise: torch.Tensor | None = None) -> np.ndarray:
        return sess.run(None, graph_feeds(wants_noise, images, states, tokens, noise))[0][0]

    return predict


def load_onnx_policy(d: Path, model_file: str, threads: int = 0, verify: bool = True) -> RuntimePolicy:
    """deploy.json's ``model`` (an ONNX graph) around the fp32 policy's normaliser and tokenizer."""
    if not (d / model_file).is_file():
        raise FileNotFoundError(f"deployed policy {d} lacks {model_file}")
    return RuntimePolicy(load_torch_policy(d, verify=verify), onnx_predict(session(d / model_file, threads)))


@DEPLOY_RUNTIMES.register("onnxruntime")
def _load_deployed(d: Path, info: dict, file, verify: bool) -> RuntimePolicy:
    return load_onnx_policy(d, file("model"), verify=verify)
