"""Atomic, exactly-resumable, sharded checkpoints: every tensor in safetensors, the rest in JSON.

    checkpoints/step_0000500/shard-0000R-model-00001-of-00001.safetensors   one file per rank
                             state.json                                      step, optimizer
                                                                             hyper-parameters, loss scaler

``torch.distributed.checkpoint`` (DCP) writes each rank's shards of the model, the optimizer
state and the EMA weights (keys ``model.*``, ``optim.*``, ``ema.*``, by parameter name) and
reads them back into whatever layout the resuming run has, so a run saved by N processes
resumes in M, one included. A checkpoint is written into ``step_XXXXXXX.tmp`` and renamed by
rank 0 once every rank has finished, so the newest directory without the suffix is whole.
Ranks must share the checkpoint directory's filesystem.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)
# DCP logs every tensor it touches at DEBUG level, which pytest's log capture then formats.
logging.getLogger("c10d-NullHandler-dcp_logger").setLevel(logging.INFO)


def _collect(
    model: nn.Module, optimizer: torch.optim.Optimizer, ema: dict[str, torch.Tensor] | None
) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors to shard (by name) and the JSON-able rest of the training state."""
    msd, osd = get_state_dict(model, optimizer, options=_OPTIONS)
    tensors = {f"model.{k}": v for k, v in msd.items()}
    tensors |= {f"optim.{k}": v for k, v in osd.items() if torch.is_tensor(v)}
    tensors |= {f"ema.{k}": v for k, v in (ema or {}).items()}
    return tensors, {k: v for k, v in osd.items() if not torch.is_tensor(v)}


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ema_state: dict[str, torch.Tensor] | None,
    keep: int = 2,
) -> Path:
    """Write (collectively, on every rank) the checkpoint of ``step``; keeps the newest ``keep``."""
    final = ckpt_dir / f"step_{step:07d}"
    tmp = ckpt_dir / f"step_{step:07d}.tmp"
    if _is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    tensors, optim_rest = _collect(model, optimizer, ema_state)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(path=str(tmp), save_distributed=dist.is_initialized()))
    if _is_main():
        state = {"step": step, "optim": optim_rest, "scaler": scaler.state_dict(), "ema": ema_state is not None}
        (tmp / "state.json").write_text(json.dumps(state))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(p for p in ckpt_dir.glob("step_*") if not p.name.endswith(".tmp"))[:-keep]:
            shutil.rmtree(old)
    _barrier()
    return final


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    done = sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    return done[-1] if done else None


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ema_state: dict[str, torch.Tensor] | None,
) -> int:
    """Restore model, optimizer, scaler and (in place) the EMA weights; returns the next step."""
    try:
        state = json.loads((path / "state.json").read_text())
        if state["ema"] != (ema_state is not None):
            raise ValueError("the checkpoint's EMA setting differs from this run's train.ema_decay")
        tensors, _ = _collect(model, optimizer, ema_state)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
            dcp.load(tensors, storage_reader=HuggingFaceStorageReader(path=str(path)))
    except Exception as e:
        raise ValueError(f"checkpoint {path} is unreadable: {e}") from None
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optim_sd = {k[len("optim."):]: v for k, v in tensors.items() if k.startswith("optim.")} | state["optim"]
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=_OPTIONS)
    scaler.load_state_dict(state["scaler"])
    return int(state["step"])
