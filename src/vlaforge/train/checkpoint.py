"""Atomic, exactly-resumable checkpoints: safetensors for every tensor, JSON for the rest.

    checkpoints/step_0000500/{model,ema,optim}.safetensors + state.json

A checkpoint is written into ``step_XXXXXXX.tmp`` and renamed when complete, so the newest
directory without the suffix is always whole.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def _flatten_optim(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optim(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ema_state: dict[str, torch.Tensor] | None,
    keep: int = 2,
) -> Path:
    final = ckpt_dir / f"step_{step:07d}"
    tmp = ckpt_dir / f"step_{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    if ema_state is not None:
        save_file({k: v.contiguous().cpu() for k, v in ema_state.items()}, str(tmp / "ema.safetensors"))
    tensors, optim_meta = _flatten_optim(optimizer)
    tensors["__torch_rng__"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optim.safetensors"))
    state = {"step": step, "optim": optim_meta, "scaler": scaler.state_dict()}
    (tmp / "state.json").write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(p for p in ckpt_dir.glob("step_*") if not p.name.endswith(".tmp"))[:-keep]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    done = sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    return done[-1] if done else None


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> tuple[int, dict[str, torch.Tensor] | None]:
    """Restore model, optimizer, scaler and RNG; returns (next step, EMA state or None)."""
    try:
        state = json.loads((path / "state.json").read_text())
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        tensors = load_file(str(path / "optim.safetensors"))
    except Exception as e:
        raise ValueError(f"checkpoint {path} is unreadable: {e}") from None
    torch.set_rng_state(tensors.pop("__torch_rng__"))
    optimizer.load_state_dict(_unflatten_optim(tensors, state["optim"]))
    scaler.load_state_dict(state["scaler"])
    ema = load_file(str(path / "ema.safetensors")) if (path / "ema.safetensors").is_file() else None
    return int(state["step"]), ema
