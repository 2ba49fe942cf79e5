"""Static INT8 quantization with PT2E, the writing side (the runtime that re-derives and runs the
int8 graph: runtime/pt2e.py): ``calibration.safetensors`` holds batch-1 model inputs drawn from
real frames of a dataset, and the parity of the re-derived graph is checked before writing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from vlaforge.runtime.policy import Policy, example_inputs, load_torch_policy
from vlaforge.runtime.pt2e import CALIBRATION_FILE, INPUTS, load_static_int8


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
