"""Behaviour-cloning trainer: one explicit loop, CleanRL-style.

Per optimizer step: ``grad_accum`` micro-batches under autocast, (un)scaled backward, gradient
clipping, AdamW with warmup + cosine, EMA update; metrics every ``log_every`` steps and an
atomic checkpoint every ``ckpt_every``. Batches and dropout are seeded by the step, so a run
resumed from a checkpoint reproduces the loss curve of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vlaforge.config import PolicyConfig, TrainConfig, save_yaml, to_dict
from vlaforge.data.dataset import ENV_STATE, LeRobotDataset
from vlaforge.data.normalize import Normalizer
from vlaforge.data.sampler import ChunkSampler, pixel_columns
from vlaforge.data.tokenizer import WordTokenizer
from vlaforge.models.policy import Policy, build_policy, load_policy
from vlaforge.train import amp
from vlaforge.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vlaforge.train.ema import EMA
from vlaforge.train.optim import build_optimizer, lr_at
from vlaforge.train.tracking import Tracker, flatten


class TrainingError(RuntimeError):
    """Training cannot continue (for example, the loss became NaN)."""


def _prepare_run_dir(cfg: TrainConfig) -> Path:
    run_dir = Path(cfg.output_dir)
    ckpts = run_dir / "checkpoints"
    if cfg.resume:
        if latest_checkpoint(ckpts) is None:
            raise FileNotFoundError(f"--resume given but {ckpts} holds no checkpoint")
    elif latest_checkpoint(ckpts) is not None or (run_dir / "policy").exists():
        raise FileExistsError(
            f"run directory {run_dir} already holds a trained run; pass --resume to continue it or choose "
            "another --output_dir (nothing was changed)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def train(cfg: TrainConfig, show_progress: bool = True) -> Path:
    """Train a policy from ``cfg.dataset``; returns the exported policy directory."""
    if cfg.grad_accum < 1 or cfg.batch_size < 1 or cfg.steps < 1:
        raise ValueError("steps, batch_size and grad_accum must be >= 1")
    device = amp.resolve_device(cfg.device)
    precision = amp.resolve_precision(cfg.precision, device)
    run_dir = _prepare_run_dir(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)

    dataset = LeRobotDataset(cfg.dataset)
    data = dataset.load()
    base = _load_base(cfg) if cfg.init_from else None
    if base is None:
        normalizer = Normalizer.from_stats(dataset.stats)
        tokenizer = WordTokenizer.from_texts(data.tasks)
    else:
        # The base's statistics are kept: its weights are calibrated to them, and a few
        # demonstrations would give noisy ones. New words are appended to its vocabulary.
        cfg = dataclasses.replace(cfg, policy=base.cfg)
        normalizer, tokenizer = base.normalizer, base.tokenizer.extended(data.tasks)
    p = cfg.policy
    env_state_names = dataset.features.get(ENV_STATE, {}).get("names") or []
    pixels = pixel_columns(env_state_names, data.cameras) if data.env_state is not None else None
    sampler = ChunkSampler(data, normalizer, tokenizer, p.n_obs_steps, p.chunk_size, p.max_text_tokens, pixels)
    spec = {
        "image_size": int(data.images.shape[2]),
        "cameras": data.cameras,
        "state_dim": int(data.state.shape[1]),
        "action_dim": int(data.action.shape[1]),
        "aux_dim": 0 if data.env_state is None else int(data.env_state.shape[1]),
        "vocab": tokenizer.vocab,
    }
    if base is not None and 0 in (spec["aux_dim"], base.meta["spec"]["aux_dim"]):
        # The base's auxiliary head is kept (untrained without privileged state in the data);
        # a base without one ignores the dataset's privileged state.
        spec["aux_dim"] = base.meta["spec"]["aux_dim"]
    torch.manual_seed(cfg.seed)
    if base is None:
        model = build_policy(p, spec).to(device)
    else:
        model = _finetune_model(base, spec).to(device)
    optimizer = build_optimizer(model, cfg.optim)
    scaler = amp.grad_scaler(precision, device)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    start = 0
    if cfg.resume:
        ckpt = latest_checkpoint(run_dir / "checkpoints")
        start, ema_state = load_checkpoint(ckpt, model, optimizer, scaler)
        if ema is not None and ema_state is not None:
            ema.shadow = ema_state
        _truncate_metrics(run_dir / "metrics.jsonl", start)
    save_yaml(cfg, run_dir / "config.yaml")
    info = dataset.info.get("vlaforge", {})
    meta = {"spec": {k: v for k, v in spec.items() if k != "vocab"}, "suite": info.get("suite"),
            "env": info.get("env"), "tasks": info.get("tasks"), "fps": dataset.fps}
    if base is not None:
        meta["init_from"] = str(cfg.init_from)
    n_params = sum(t.numel() for t in model.parameters())
    tracker = Tracker(run_dir, cfg.tracking, flatten(to_dict(cfg)) | {"params": n_params}, cfg.resume)

    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(), disable=not show_progress,
    )
    samples, t_last, loss_sum, loss_n = 0, time.perf_counter(), 0.0, 0
    model.train()
    with progress:
        bar = progress.add_task("train", total=cfg.steps, completed=start, status="")
        for step in range(start, cfg.steps):
            lr = lr_at(step, cfg.steps, cfg.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout noise depends on the step only
            step_loss = 0.0
            for micro in range(cfg.grad_accum):
                batch = sampler.sample(cfg.batch_size, sampler.generator(cfg.seed, step, micro), cfg.image_shift)
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with amp.autocast(precision, device):
                    loss = model.loss(batch) / cfg.grad_accum
                scaler.scale(loss).backward()
                step_loss += loss.item()
            if not math.isfinite(step_loss):
                raise TrainingError(
                    f"loss is {step_loss} at step {step}; the last checkpoint in {run_dir / 'checkpoints'} is intact"
                )
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad if cfg.clip_grad > 0 else float("inf"))
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model, step)
            samples += cfg.batch_size * cfg.grad_accum
            loss_sum, loss_n = loss_sum + step_loss, loss_n + 1
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                now = time.perf_counter()
                rate = samples / max(now - t_last, 1e-9)
                metrics = {"loss": loss_sum / loss_n, "lr": lr, "grad_norm": float(grad_norm), "samples_per_s": rate}
                tracker.log(done, metrics)
                progress.update(bar, status=f"loss {metrics['loss']:.4f}  {rate:,.0f} samples/s")
                samples, t_last, loss_sum, loss_n = 0, now, 0.0, 0
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                save_checkpoint(run_dir / "checkpoints", done, model, optimizer, scaler, ema.shadow if ema else None)
            progress.update(bar, completed=done)
    tracker.close()
    if ema is not None:
        ema.copy_to(model)
    model = model.cpu().float()
    policy = Policy(model, normalizer, tokenizer, meta)
    out = policy.save(run_dir / "policy")
    (run_dir / "train_summary.json").write_text(
        json.dumps({"params": n_params, "precision": precision, "device": str(device), "steps": cfg.steps}, indent=2)
    )
    return out


def _load_base(cfg: TrainConfig) -> Policy:
    """The policy ``cfg.init_from`` names; its architecture replaces ``cfg.policy``, so any
    other architecture given alongside it is a contradiction."""
    base = load_policy(cfg.init_from)
    if cfg.policy not in (PolicyConfig(), base.cfg):
        raise ValueError(
            f"--init_from={cfg.init_from} takes the architecture from that policy; drop the --policy.* settings "
            f"(given {dataclasses.asdict(cfg.policy)}, the policy has {dataclasses.asdict(base.cfg)})"
        )
    return base


def _finetune_model(base: Policy, spec: dict) -> torch.nn.Module:
    """The base model for a dataset with this ``spec``: new words start as the base's <unk>
    embedding, so before fine-tuning the model acts exactly as the base does zero-shot."""
    have = base.meta["spec"]
    for key in ("image_size", "cameras", "state_dim", "action_dim"):
        if spec[key] != have[key]:
            raise ValueError(f"dataset {key} {spec[key]} differs from the --init_from policy's {have[key]}")
    if spec["aux_dim"] != have["aux_dim"]:
        raise ValueError(f"dataset privileged state has {spec['aux_dim']} columns, the --init_from policy {have['aux_dim']}")
    model = build_policy(base.cfg, spec)
    state = base.model.state_dict()
    embed = state["text.embed.weight"]
    extra = len(spec["vocab"]) - embed.shape[0]
    state["text.embed.weight"] = torch.cat([embed, embed[1:2].expand(extra, -1)])
    model.load_state_dict(state)
    return model


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past the checkpoint being resumed, so the log has no duplicates."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))
