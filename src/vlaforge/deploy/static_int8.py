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
from safetensors.torch import load_file, save_file

from vlaforge.deploy.artifact import RuntimePolicy, example_inputs
from vlaforge.models.policy import Policy, load_torch_policy

INPUTS = ("images", "states", "tokens")  # the model's arguments, one row per calibration sample
CALIBRATION_FILE = "calibration.safetensors"


def calibration_inputs(policy: Policy, dataset: str, samples: int, seed: int = 0) -> list[tuple]:
    """``samples`` batch-1 model inputs drawn from the frames of ``dataset``."""
    from vlaforge.data.dataset import LeRobotDataset
    from vlaforge.data.sampler import ChunkSampler

    if not dataset:
        raise ValueError("static-int8 calibrates on real frames: pass --dataset=DIR (the training data, for example)")
    data = LeRobotDataset(dataset).load()
    if data.images.shape[1:] != policy.image_shape:
        raise ValueError(f"calibration images {data.images.shape[1:]} differ from the policy's {policy.image_shape}")
    c = policy.cfg
    sampler = ChunkSampler(data, policy.normalizer, policy.tokenizer, c.n_obs_steps, c.chunk_size, c.max_text_tokens)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(samples):
        b = sampler.sample(1, gen)
        out.append((b["image"], b["state"], b["tokens"]))
    return out


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.export.export(policy.model.float().eval(), example_inputs(policy)).module()
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for x in calibration:
                prepared(*x)
        return convert_pt2e(prepared)


def _predict(module: torch.nn.Module):
    @torch.no_grad()
    def predict(images, states, tokens) -> np.ndarray:
        return module(images, states.float(), tokens)[0].float().numpy()

    return predict


def write_static_int8(policy_dir: Path, tmp: Path, dataset: str, samples: int) -> dict:
    base = load_torch_policy(policy_dir)
    calibration = calibration_inputs(base, dataset, samples)
    save_file({name: torch.cat([x[i] for x in calibration]).contiguous() for i, name in enumerate(INPUTS)},
              str(tmp / CALIBRATION_FILE))
    loaded = load_static_int8(tmp, CALIBRATION_FILE, compile=False)
    err = max(float(np.abs(loaded.predict(*x) - base.predict(*x)).max()) for x in
              [example_inputs(base, seed=s) for s in range(8)])
    return {"runtime": "torch-pt2e", "method": "static-int8", "calibration_file": CALIBRATION_FILE,
            "size_bytes": sum((tmp / f).stat().st_size for f in ("model.safetensors", CALIBRATION_FILE)),
            "fp32_size_bytes": (tmp / "model.safetensors").stat().st_size, "parity_max_abs": err,
            "calibration": {"dataset": dataset, "samples": samples}, "head": base.cfg.head}


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
    return RuntimePolicy(base, _predict(torch.compile(module) if compile else module))
