"""Static INT8 quantization with PT2E, the writing side (the runtime that re-derives and runs the
int8 graph: runtime/pt2e.py): ``calibration.safetensors`` holds batch-1 model inputs drawn from
real frames of a dataset (deploy/artifact.py checks the parity of the re-derived graph).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from vlaforge.deploy.base import DeployBackend, DeployOptions
from vlaforge.registry import DEPLOY_BACKENDS
from vlaforge.runtime.policy import Policy, example_inputs
from vlaforge.runtime.pt2e import CALIBRATION_FILE, INPUTS


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


def write_static_int8(base: Policy, tmp: Path, options: DeployOptions) -> dict:
    """Store batch-1 calibration inputs from ``options.dataset`` (or random ones, for timing)."""
    if options.calibration_samples < 1:
        raise ValueError(f"calibration_samples must be >= 1, got {options.calibration_samples}")
    if options.random_calibration and not options.dataset:
        calibration = [example_inputs(base, seed=s) for s in range(options.calibration_samples)]
    else:
        calibration = calibration_inputs(base, options.dataset, options.calibration_samples)
    save_file({name: torch.cat([x[i] for x in calibration]).contiguous() for i, name in enumerate(INPUTS)},
              str(tmp / CALIBRATION_FILE))
    return {"runtime": "torch-pt2e", "calibration_file": CALIBRATION_FILE,
            "size_bytes": sum((tmp / f).stat().st_size for f in ("model.safetensors", CALIBRATION_FILE)),
            "fp32_size_bytes": (tmp / "model.safetensors").stat().st_size,
            "calibration": {"dataset": options.dataset or None, "samples": options.calibration_samples}}


DEPLOY_BACKENDS.register("static-int8")(DeployBackend(
    write_static_int8, parity_limit=1.0,  # 0.25 on the quickstart policy
    summary="PT2E static int8 (weights and activations), calibrated on dataset frames, compiled by Inductor at load"))
