"""ONNX export of a policy's network: the onnx-fp32 and onnx-int8 deploy backends (the runtime:
runtime/onnx.py; the parity check against PyTorch: deploy/artifact.py).

The graph maps (uint8 images, normalised states, tokens) to the normalised action chunk; the
tokenizer, normaliser and observation history stay in Python around it, exactly as for the
PyTorch policy. The channels and heads a pruned policy has zeroed are sliced out of the
tensors before export (``runtime/torch_methods.sliced``), so the graph is the smaller network.
A sampling head (dit, flow) is exported with its sampling loop unrolled
(``sample_steps`` denoiser calls in the graph) and its initial noise (B, K, A) as a fourth
input, so the graph is deterministic and the runtime draws the noise from the session's
generator exactly as the PyTorch policy does.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from vlaforge.deploy.base import DeployBackend
from vlaforge.registry import DEPLOY_BACKENDS, HEADS
from vlaforge.runtime.onnx import _ort
from vlaforge.runtime.policy import Policy, WithNoise, example_inputs
from vlaforge.runtime.torch_methods import sliced

INPUTS = ("image", "state", "tokens")


def export_onnx(policy: Policy, path: Path) -> None:
    """Write the policy's network as an ONNX graph (opset 18) with named inputs."""
    if not HEADS.get(policy.cfg.head).exportable:
        supported = [h for h in HEADS.names() if HEADS.get(h).exportable]
        raise ValueError(f"ONNX export supports the {', '.join(supported)} heads; this policy's head is "
                         f"{policy.cfg.head!r}, which is not marked exportable")
    # A pruned policy's dead channels and heads are cut out first (exact; no-op when none are).
    model, inputs, names = sliced(policy.model), example_inputs(policy), list(INPUTS)
    if HEADS.get(policy.cfg.head).samples:
        model, names = WithNoise(model), [*names, "noise"]
        inputs = (*inputs, torch.randn(1, policy.cfg.chunk_size, policy.action_dim, generator=torch.Generator().manual_seed(0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), input_names=names, output_names=["actions"], dynamo=True,
                          opset_version=18, verbose=False, external_data=False)


def quantize_int8(src: Path, dst: Path) -> None:
    """ORT dynamic quantization: int8 weights, activations quantized per call."""
    _ort()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def write_onnx(base: Policy, tmp: Path, int8: bool) -> dict:
    """Export (and, for int8, quantize) ``base``'s network into ``tmp``; deploy.json's fields."""
    export_onnx(base, tmp / "model.onnx")
    model = "model.onnx"
    fp32_bytes = (tmp / model).stat().st_size
    if int8:
        quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx")
        (tmp / "model.onnx").unlink()  # the int8 graph is the deployed one; fp32 weights stay in safetensors
        model = "model.int8.onnx"
    return {"runtime": "onnxruntime", "model": model, "size_bytes": (tmp / model).stat().st_size,
            "fp32_size_bytes": fp32_bytes, "opset": 18}


def write_openvino(base: Policy, tmp: Path) -> dict:
    """The ONNX graph for OpenVINO's CPU plugin (it compiles the graph at load)."""
    from vlaforge.runtime.openvino import _ov

    _ov()
    export_onnx(base, tmp / "model.onnx")
    size = (tmp / "model.onnx").stat().st_size
    return {"runtime": "openvino", "model": "model.onnx", "size_bytes": size, "fp32_size_bytes": size, "opset": 18}


DEPLOY_BACKENDS.register("openvino-fp32")(DeployBackend(
    lambda base, tmp, options: write_openvino(base, tmp), parity_limit=1e-3,
    summary="the ONNX graph compiled by OpenVINO for the CPU (latency hint)"))
DEPLOY_BACKENDS.register("onnx-fp32")(DeployBackend(
    lambda base, tmp, options: write_onnx(base, tmp, int8=False), parity_limit=1e-3,  # 3e-6 on the quickstart policy
    summary="the network as an ONNX graph (opset 18) on ONNX Runtime"))
DEPLOY_BACKENDS.register("onnx-int8")(DeployBackend(
    lambda base, tmp, options: write_onnx(base, tmp, int8=True), parity_limit=1.0,  # 0.16 on the quickstart policy
    summary="the ONNX graph with int8 weights and per-call int8 activations (ORT dynamic quantization)"))
