"""Self-supervised pretraining of the vision encoder on unlabelled frames, then behaviour cloning.

    vlaforge pretrain --method=mae --datasets=[data/randomized,data/tabletop] --output_dir=runs/mae
    vlaforge train --dataset=data/small --init_encoder=runs/mae

Frames of every dataset are pooled (every camera is its own frame; actions and instructions are
never read), so a large randomized collection can teach the encoder what a few demonstrations
cannot. The run directory holds ``encoder.safetensors`` (the conv stages, under the names the
policy's ``vision`` module uses), ``pretrain.json`` (method, loss curve) and ``config.yaml``;
checkpoints resume exactly, as the trainer's do.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from vlaforge.data.dataset import LeRobotDataset
from vlaforge.files import atomic_write_bytes
from vlaforge.models.ssl import SSL_METHODS
from vlaforge.models.vision import ConvEncoder
from vlaforge.train import amp
from vlaforge.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vlaforge.train.config import PretrainConfig
from vlaforge.train.rundir import open_run_dir, save_config, truncate_metrics

ENCODER_FILE = "encoder.safetensors"
WARMUP = 50  # steps, or a tenth of a shorter run


def frame_pool(datasets: list[str], horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every frame of ``datasets`` as uint8 (N, H, W, 3) and, per frame, the index of the frame
    ``horizon`` steps later in the same episode and camera (the last one near the end)."""
    frames, future, offset = [], [], 0
    for root in datasets:
        data = LeRobotDataset(root).load()
        n, v = data.images.shape[:2]
        ends = np.cumsum(data.lengths)[data.episode]  # one past each frame's episode end
        ahead = np.minimum(np.arange(n) + horizon, ends - 1)
        for cam in range(v):
            frames.append(torch.from_numpy(data.images[:, cam]))
            future.append(torch.from_numpy(offset + ahead))
            offset += n
    shapes = {tuple(f.shape[1:]) for f in frames}
    if len(shapes) > 1:
        raise ValueError(f"pretraining datasets have different frame shapes {sorted(shapes)}; use one image size")
    return torch.cat(frames), torch.cat(future)


def _lr(step: int, cfg: PretrainConfig) -> float:
    warmup = min(WARMUP, cfg.steps // 10)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))


def pretrain(cfg: PretrainConfig, show_progress: bool = True) -> Path:
    """Train ``cfg.method`` on the frames of ``cfg.datasets``; returns the run directory."""
    objective_cls = SSL_METHODS.get(cfg.method)
    if cfg.steps < 1 or cfg.batch_size < 2:
        raise ValueError("pretrain needs steps >= 1 and batch_size >= 2 (contrastive losses compare frames)")
    if not cfg.datasets:
        raise ValueError("pretrain needs at least one dataset (--datasets=[DIR,...])")
    run = Path(cfg.output_dir)
    ckpts = run / "checkpoints"
    checkpoint = latest_checkpoint(ckpts) is not None
    open_run_dir(run, cfg.resume, checkpoint if cfg.resume else checkpoint or (run / ENCODER_FILE).exists(), "pretraining")
    device = amp.resolve_device(cfg.device)
    precision = amp.resolve_precision(cfg.precision, device)
    frames, future = frame_pool(cfg.datasets, cfg.horizon)
    if frames.shape[1] != cfg.image_size:
        raise ValueError(f"frames are {frames.shape[1]}px but --image_size={cfg.image_size}")
    torch.manual_seed(cfg.seed)
    objective = objective_cls(ConvEncoder(cfg.image_size, cfg.vision_channels, cfg.d_model)).to(device)
    # The encoder's language-keypoint readout is not pretrained: only its conv stages are.
    params = [p for n, p in objective.named_parameters()
              if p.requires_grad and (n.startswith("encoder.stages.") or not n.startswith("encoder."))]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    scaler = amp.grad_scaler(precision, device)
    save_config(run, cfg)
    start = load_checkpoint(latest_checkpoint(ckpts), objective, optimizer, scaler, None) if cfg.resume else 0
    log = run / "metrics.jsonl"
    history = truncate_metrics(log, lambda row: row["step"] <= start) if cfg.resume else []
    progress = Progress(TextColumn(f"[bold]pretrain {cfg.method}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeRemainingColumn(), disable=not show_progress)
    objective.train()
    with progress, log.open("w") as out:
        for row in history:
            out.write(json.dumps(row) + "\n")
        bar = progress.add_task("pretrain", total=cfg.steps, completed=start, status="")
        for step in range(start, cfg.steps):
            gen = torch.Generator().manual_seed(hash((cfg.seed, step)) & 0x7FFF_FFFF_FFFF)
            i = torch.randint(0, len(frames), (cfg.batch_size,), generator=gen)
            for group in optimizer.param_groups:
                group["lr"] = _lr(step, cfg)
            with amp.autocast(precision, device):
                loss = objective.loss(frames[i].to(device), frames[future[i]].to(device), gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretraining loss is {loss.item()} at step {step}; checkpoints in {ckpts} are intact")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(optimizer)
            scaler.update()
            objective.after_step()
            row = {"step": step + 1, "loss": float(loss.detach())}
            history.append(row)
            out.write(json.dumps(row) + "\n")
            out.flush()
            progress.update(bar, advance=1, status=f"loss {row['loss']:.4f}")
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
                save_checkpoint(ckpts, step + 1, objective, optimizer, scaler, None)
    weights = {k: v.detach().float().cpu().contiguous() for k, v in objective.encoder.state_dict().items()
               if k.startswith("stages.")}
    atomic_write_bytes(run / ENCODER_FILE, safetensors_bytes(weights, metadata={"method": cfg.method}))
    losses = [r["loss"] for r in history]
    window = max(1, len(losses) // 10)
    summary = {"method": cfg.method, "datasets": cfg.datasets, "frames": len(frames), "steps": cfg.steps,
               "vision_channels": cfg.vision_channels, "d_model": cfg.d_model, "image_size": cfg.image_size,
               "loss_first": float(np.mean(losses[:window])), "loss_last": float(np.mean(losses[-window:]))}
    (run / "pretrain.json").write_text(json.dumps(summary, indent=2))
    return run


def load_encoder(vision: torch.nn.Module, directory: str | os.PathLike) -> dict:
    """Load a pretrained encoder's conv stages into a policy's ``vision`` module; returns the
    pretraining summary. Shapes must match (same vision_channels, d_model and image size)."""
    d = Path(directory)
    path = d / ENCODER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{d} holds no pretrained encoder ({ENCODER_FILE}); run `vlaforge pretrain` first")
    try:
        weights = load_file(str(path))
    except Exception as e:
        raise ValueError(f"pretrained encoder {path} is unreadable: {e}") from None
    own = vision.state_dict()
    bad = [k for k, v in weights.items() if k not in own or own[k].shape != v.shape]
    if bad or not weights:
        raise ValueError(f"pretrained encoder {path} does not fit this policy's vision encoder (mismatched: "
                         f"{', '.join(bad[:4]) or 'no weights'}); pretrain with the same vision_channels and d_model")
    vision.load_state_dict(weights, strict=False)
    return json.loads((d / "pretrain.json").read_text())
