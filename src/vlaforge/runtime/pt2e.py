"""Static INT8 quantization with PT2E: the network is exported with torch.export, observers
are inserted by the x86 Inductor quantizer, calibrated on real frames of a dataset, and the
calibrated graph is converted to int8 (weights per channel, activations per tensor with the
calibrated ranges). At load it is compiled with Inductor, which fuses the int8 kernels; the first
call pays the compilation.

The deployed directory holds data only: the fp32 weights and the calibration inputs
(``calibration.safetensors``), from which the load re-derives the same int8 graph (the
quantizer is deterministic given them). A saved ExportedProgram (``torch.export.save``) is not
used: ``torch.export.load`` unpickles parts of its archive, so a crafted file would run code.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from vlaforge.registry import DEPLOY_RUNTIMES
from vlaforge.runtime.policy import Policy, RuntimePolicy, WithNoise, example_inputs, load_torch_policy

INPUTS = ("images", "states", "tokens")  # the model's arguments, one row per calibration sample
CALIBRATION_FILE = "calibration.safetensors"


def static_int8(policy: Policy, calibration: list[tuple]) -> torch.nn.Module:
    """The policy's network exported, calibrated on ``calibration`` and converted to int8."""
    logging.getLogger("torchao").setLevel(logging.ERROR)
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as e:
        raise ImportError(f"static-int8 needs torchao: pip install 'vlaforge[deploy]' ({e})") from None
    if not calibration:
        raise ValueError("static-int8 needs at least one calibration sample")
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    model, example = policy.model.float().eval(), example_inputs(policy)
    if policy.samples:  # the initial noise as a fourth input (as in the ONNX export), drawn for calibration
        g = torch.Generator().manual_seed(0)
        model = WithNoise(model)
        shape = (1, policy.cfg.chunk_size, policy.action_dim)
        example = (*example, torch.randn(shape, generator=g))
        calibration = [(*x, torch.randn(shape, generator=g)) for x in calibration]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.export.export(model, example).module()
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for x in calibration:
                prepared(*x)
        return convert_pt2e(prepared)


def module_predict(module: torch.nn.Module):
    @torch.no_grad()
    def predict(images, states, tokens, noise=None) -> np.ndarray:
        extra = () if noise is None else (noise,)
        return module(images, states.float(), tokens, *extra)[0].float().numpy()

    return predict


def load_static_int8(d: Path, calibration_file: str = CALIBRATION_FILE, compile: bool = True,
                     verify: bool = True) -> RuntimePolicy:
    """The fp32 policy in ``d`` quantized again from its stored calibration inputs."""
    path = d / calibration_file
    if not path.is_file():
        raise FileNotFoundError(f"deployed policy {d} lacks {calibration_file}")
    base = load_torch_policy(d, verify=verify)
    try:
        tensors = load_file(str(path))
        stacked = [tensors[name] for name in INPUTS]
    except Exception as e:
        raise ValueError(f"{path} does not hold the calibration tensors {', '.join(INPUTS)}: {e}") from None
    n = stacked[0].shape[0]
    if n < 1 or any(t.shape[0] != n for t in stacked):
        raise ValueError(f"{path}: the calibration tensors {', '.join(INPUTS)} must share a non-empty first dimension")
    module = static_int8(base, [tuple(t[i : i + 1] for t in stacked) for i in range(n)])
    return RuntimePolicy(base, module_predict(torch.compile(module) if compile else module))


@DEPLOY_RUNTIMES.register("torch-pt2e")
def _load_deployed(d: Path, info: dict, file, verify: bool) -> RuntimePolicy:
    return load_static_int8(d, file("calibration_file"), verify=verify)
