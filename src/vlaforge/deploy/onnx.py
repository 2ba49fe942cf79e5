"""ONNX export of a policy's network, checked against PyTorch (the runtime: runtime/onnx.py).

The graph maps (uint8 images, normalised states, tokens) to the normalised action chunk; the
tokenizer, normaliser and observation history stay in Python around it, exactly as for the
PyTorch policy. Heads that sample noise (dit, flow) are not exported yet.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from vlaforge.registry import HEADS
from vlaforge.runtime.onnx import _ort, session
from vlaforge.runtime.policy import Policy, example_inputs, load_torch_policy

INPUTS = ("image", "state", "tokens")


def export_onnx(policy: Policy, path: Path) -> None:
    """Write the policy's network as an ONNX graph (opset 18) with named inputs."""
    if not HEADS.get(policy.cfg.head).exportable:
        supported = [h for h in HEADS.names() if HEADS.get(h).exportable]
        raise ValueError(f"ONNX export supports the {', '.join(supported)} heads; this policy's head is "
                         f"{policy.cfg.head!r} (its sampling loop is not exported yet)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(policy.model.float().eval(), example_inputs(policy), str(path), input_names=list(INPUTS),
                          output_names=["actions"], dynamo=True, opset_version=18, verbose=False,
                          external_data=False)


def quantize_int8(src: Path, dst: Path) -> None:
    """ORT dynamic quantization: int8 weights, activations quantized per call."""
    _ort()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def parity(policy: Policy, sess, samples: int = 8) -> float:
    """Largest |ONNX - PyTorch| over the normalised action chunks of random inputs."""
    worst = 0.0
    for seed in range(samples):
        images, states, tokens = example_inputs(policy, seed=seed)
        want = policy.predict(images, states, tokens)
        got = sess.run(None, {"image": images.numpy(), "state": states.numpy(), "tokens": tokens.numpy()})[0][0]
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def write_onnx(policy_dir: Path, tmp: Path, int8: bool) -> dict:
    """Export (and optionally quantize) into ``tmp``; returns deploy.json's fields."""
    policy = load_torch_policy(Path(policy_dir))
    export_onnx(policy, tmp / "model.onnx")
    model = "model.onnx"
    fp32_bytes = (tmp / model).stat().st_size
    if int8:
        quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx")
        (tmp / "model.onnx").unlink()  # the int8 graph is the deployed one; fp32 weights stay in safetensors
        model = "model.int8.onnx"
    err = parity(policy, session(tmp / model))
    limit = 0.5 if int8 else 1e-3  # normalised action units
    if not np.isfinite(err) or err > limit:
        raise RuntimeError(f"ONNX parity check failed: max |onnx - torch| = {err:.3g} > {limit} in normalised units")
    return {"runtime": "onnxruntime", "method": "onnx-int8" if int8 else "onnx-fp32", "model": model,
            "size_bytes": (tmp / model).stat().st_size, "fp32_size_bytes": fp32_bytes, "parity_max_abs": err,
            "head": policy.cfg.head, "opset": 18}
