"""Behaviour-cloning trainer: one explicit loop, CleanRL-style.

Per optimizer step: ``accumulate`` micro-batches under autocast, (un)scaled backward, gradient
clipping, the configured optimizer with warmup + cosine, EMA update; metrics every
``log_every`` steps, an atomic checkpoint every ``ckpt_every`` and, for learning curves, an
exported policy every ``snapshot_every``. Batches and dropout are seeded by the step, so a run
resumed from a checkpoint reproduces the loss curve of an uninterrupted one. The same loop runs
on every rank under ``torchrun`` (train/parallel.py).

Effective batch = ``batch_size * accumulate * dp * fsdp``; the peak learning rate is
``optim.lr`` scaled by ``optim.lr_scaling`` from ``optim.reference_batch`` to it.

``train(cfg)`` = ``check_config`` (every rule on combinations of settings) -> ``build_run`` (data,
model with its initialisation settled once, the active techniques of techniques.py, optimizer)
-> ``fit`` (the loop, which names no optional technique) -> ``finish`` (export, summary).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from vlaforge.config import load_yaml, setting_changes, to_dict
from vlaforge.data.dataset import ENV_STATE, LeRobotDataset
from vlaforge.data.normalize import Normalizer
from vlaforge.data.sampler import ChunkSampler, pixel_columns
from vlaforge.data.streaming import StreamingSampler
from vlaforge.files import atomic_write_json
from vlaforge.models.config import PolicyConfig
from vlaforge.models.policy import build_policy
from vlaforge.registry import TEXT_ENCODERS
from vlaforge.runtime.policy import Policy, load_policy
from vlaforge.seeds import step_seed
from vlaforge.train import amp, parallel
from vlaforge.train.alignment import coral_loss
from vlaforge.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vlaforge.train.config import TrainConfig
from vlaforge.train.distill import check_teacher, distillation_loss
from vlaforge.train.ema import EMA
from vlaforge.train.optim import build_optimizer, lr_at, scaled_lr
from vlaforge.train.pipeline import Pipeline
from vlaforge.train.pretrain import load_encoder
from vlaforge.train.rundir import open_run_dir, save_config, truncate_metrics
from vlaforge.train.techniques import TECHNIQUES
from vlaforge.train.tracking import Tracker, flatten, run_info


class TrainingError(RuntimeError):
    """Training cannot continue (for example, the loss became NaN)."""


# Settings that do not change what a run computes: where it writes, how often it logs, how the
# work is laid out (micro-batches and parallelism reproduce one large batch exactly; the effective
# batch is compared instead). Every other setting defines the run.
NOT_DEFINING = ("output_dir", "device", "ckpt_every", "log_every", "snapshot_every", "resume", "resume_allow_changes",
                "threads", "tracking", "batch_size", "accumulate", "parallel.", "verify_data")
PATHS = ("dataset", "init_encoder", "init_from", "align_dataset", "teacher")


def run_changes(old: TrainConfig, new: TrainConfig) -> list[str]:
    """The settings defining a run that differ between ``old`` and ``new``, as 'key: old -> new'."""
    def defining(cfg: TrainConfig) -> dict:
        flat = {k: v for k, v in flatten(to_dict(cfg)).items() if not k.startswith(NOT_DEFINING)}
        for k in PATHS:  # the same directory however it is spelt
            flat[k] = str(Path(flat[k]).resolve()) if flat[k] else ""
        return flat | {"effective batch": cfg.batch_size * cfg.accumulate * cfg.parallel.dp * cfg.parallel.fsdp}

    return setting_changes(defining(old), defining(new))


def _prepare_run_dir(cfg: TrainConfig) -> Path:
    run_dir = Path(cfg.output_dir)
    checkpoint = latest_checkpoint(run_dir / "checkpoints") is not None
    open_run_dir(run_dir, cfg.resume, checkpoint if cfg.resume else checkpoint or (run_dir / "policy").exists(), "training")
    if cfg.resume:
        if (run_dir / "config.yaml").is_file():
            changes = run_changes(load_yaml(TrainConfig, run_dir / "config.yaml"), cfg)
            if changes and not cfg.resume_allow_changes:
                raise ValueError(f"--resume would change what defines the run in {run_dir} ({'; '.join(changes)}); "
                                 "resume with the run's own settings, or pass --resume_allow_changes=true")
            if changes:
                warnings.warn(f"resuming {run_dir} with changed settings: {'; '.join(changes)}", stacklevel=2)
    else:
        # A run killed before its first checkpoint starts over: its metric rows would repeat.
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    return run_dir


class BCObjective(nn.Module):
    """The behaviour-cloning loss as a module's forward, so that DDP's and FSDP's hooks, which
    ride on ``forward``, see every call."""

    def __init__(self, model: nn.Module, align_weight: float = 0.0, distill_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.align_weight, self.distill_weight = align_weight, distill_weight
        self.last_align_loss: float | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "teacher_action" in batch:
            loss = distillation_loss(self.model, batch, self.distill_weight)
        else:
            loss = self.model.loss(batch)
        if "align_image" in batch:  # unlabelled target-domain frames: align the visual features
            source = self.model.visual_features(batch["image"], batch["tokens"])
            target = self.model.visual_features(batch["align_image"], batch["align_tokens"])
            align = coral_loss(source, target)
            self.last_align_loss = float(align.detach())
            loss = loss + self.align_weight * align
        return loss


def train_step(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    micro_batches: Iterable[dict[str, torch.Tensor]],
    precision: str,
    device: torch.device,
    clip: float,
) -> tuple[float, torch.Tensor, bool]:
    """One optimizer step over k micro-batches; returns (loss, grad norm, skipped).

    Each micro-batch's mean loss is divided by k before backward, so the summed gradient is
    the gradient of the mean over all micro-batches: the same update as one batch k times the
    size. Data-parallel gradients are reduced once, on the last micro-batch. A step whose
    gradients are not finite is skipped (with fp16 the loss scaler also backs off). Optimizers
    that need a closure (L-BFGS, Sophia) get one that recomputes the loss and gradients on the
    same micro-batches.
    """
    needs_closure = getattr(optimizer, "requires_closure", False)
    if needs_closure and scaler.is_enabled():
        raise ValueError(f"{type(optimizer).__name__} re-evaluates the loss in its step, which fp16 loss scaling "
                         "does not support; use --precision=bf16 or fp32")
    batches = [{k: v.to(device, non_blocking=True) for k, v in b.items()} for b in micro_batches]
    total = _backward(module, scaler, batches, precision, device)
    scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    norm = parallel.clip_grad_norm(params, clip)
    if needs_closure and torch.isfinite(norm):

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            return torch.tensor(_backward(module, scaler, batches, precision, device))

        optimizer.step(closure)
        skipped = False
    else:
        skipped = amp.optimizer_step(scaler, optimizer, norm)
    optimizer.zero_grad(set_to_none=True)
    return total, norm, skipped


def _backward(module: nn.Module, scaler: torch.amp.GradScaler, batches: list[dict], precision: str,
              device: torch.device) -> float:
    """Accumulate the gradient of the mean loss over ``batches``; returns that mean loss."""
    total = 0.0
    for i, batch in enumerate(batches):
        with parallel.grad_sync(module, i == len(batches) - 1):
            with amp.autocast(precision, device):
                loss = module(batch) / len(batches)
            scaler.scale(loss).backward()
        total += loss.item()
    return total


def check_config(cfg: TrainConfig) -> None:
    """Every rule on combinations of settings, before anything is loaded or written."""
    if cfg.accumulate < 1 or cfg.batch_size < 1 or cfg.steps < 1:
        raise ValueError("steps, batch_size and accumulate must be >= 1")
    if cfg.snapshot_every < 0:
        raise ValueError(f"snapshot_every must be >= 0 (0 = off), got {cfg.snapshot_every}")
    for key in ("ckpt_every", "log_every"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key} must be >= 1 (steps between {key.split('_')[0]}s), got {getattr(cfg, key)}")
    p = cfg.policy
    for key in ("d_model", "n_layers", "n_heads", "chunk_size", "n_obs_steps", "max_text_tokens", "keypoints"):
        if getattr(p, key) < 1:
            raise ValueError(f"policy.{key} must be >= 1, got {getattr(p, key)}")
    if p.d_model % p.n_heads:
        raise ValueError(f"policy.d_model ({p.d_model}) must be a multiple of policy.n_heads ({p.n_heads})")
    if cfg.seeds:
        raise ValueError(f"seeds {cfg.seeds} asks for one run per seed: call train_seeds (the CLI does), not train")
    if cfg.init_from and cfg.teacher:
        raise ValueError("--init_from and --teacher exclude each other: a distilled student starts from scratch")
    if cfg.init_from and cfg.init_encoder:
        raise ValueError("--init_encoder and --init_from exclude each other: a fine-tuned policy keeps its encoder")
    if cfg.parallel.pp > 1 and cfg.batch_size % cfg.parallel.pp_microbatches:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of parallel.pp_microbatches "
                         f"{cfg.parallel.pp_microbatches}")
    for technique in TECHNIQUES:
        if technique.active(cfg):
            technique.check(cfg)


def train(cfg: TrainConfig, show_progress: bool = True) -> Path:
    """Train a policy from ``cfg.dataset``; returns the exported policy directory.

    Under ``torchrun`` every rank runs this function; rank 0 alone writes the run directory
    (config, metrics, tracking, policy) while checkpoints are written by all.
    """
    check_config(cfg)
    d, device = parallel.init(cfg.parallel, amp.resolve_device(cfg.device))
    try:
        run = build_run(cfg, d, device)
        fit(run, show_progress and d.is_main)
        return finish(run)
    finally:
        parallel.shutdown(d)


def train_seeds(cfg: TrainConfig, show_progress: bool = True) -> list[Path]:
    """One run per seed of ``cfg.seeds`` in ``output_dir/seed<N>`` (each resumable on its own),
    or the single run of ``cfg.seed``; -> the policy directories."""
    if not cfg.seeds:
        return [train(cfg, show_progress)]
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"seeds must be distinct, got {cfg.seeds}")
    out = []
    for seed in cfg.seeds:
        run = Path(cfg.output_dir) / f"seed{seed}"
        resume = cfg.resume and latest_checkpoint(run / "checkpoints") is not None
        out.append(train(dataclasses.replace(cfg, seed=seed, seeds=[], output_dir=str(run), resume=resume), show_progress))
    return out


LOADERS = ("auto", "memory", "stream")


def choose_loader(cfg: TrainConfig, ds: LeRobotDataset, run_dir: Path, record_it: bool = True) -> tuple[str, str]:
    """``memory`` or ``stream`` and why: ``auto`` streams when the decoded frames would take over
    a quarter of the memory available now (the rest is for the model, optimizer, batches and the
    evaluation that may follow). The two draw different batches, so a resumed ``auto`` run keeps
    the choice recorded in ``loader.json`` (written by the main rank, ``record_it``) whatever
    memory the machine has now."""
    if cfg.loader not in LOADERS:
        raise ValueError(f"unknown loader {cfg.loader!r}; known: {', '.join(LOADERS)}")
    record = run_dir / "loader.json"
    if cfg.loader == "auto" and cfg.resume and record.is_file():
        kept = json.loads(record.read_text())
        loader, why = kept["loader"], f"{kept['reason']}; kept on resume"
    else:
        frames = sum(e["length"] for e in ds.episodes)
        need = frames * sum(int(np.prod(ds.features[k]["shape"])) for k in ds.image_keys)  # uint8 bytes
        free = available_memory()
        why = f"decoded frames {need / 1e9:.2f} GB, {free / 1e9:.1f} GB available"
        loader = cfg.loader if cfg.loader != "auto" else ("stream" if need > free / 4 else "memory")
        why += "" if cfg.loader == "auto" else f"; --loader={cfg.loader}"
        if record_it:
            atomic_write_json(record, {"loader": loader, "reason": why})
    if loader == "stream" and cfg.balance != "none":
        raise ValueError(f"--balance={cfg.balance} needs the whole dataset in memory (its weights span every frame); "
                         "use --loader=memory or --balance=none")
    return loader, why


def available_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable), or 8 GiB where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


class Run:
    """What one training run holds, settled before the loop: data, normaliser and tokenizer,
    the model with its initialisation (scratch, ``--init_from``, ``--teacher``'s maps,
    ``--init_encoder``), the active techniques, optimizer, scaler, EMA and the step to start at."""

    def __init__(self, cfg: TrainConfig, d: parallel.Dist, device: torch.device) -> None:
        self.cfg, self.d, self.device = cfg, d, device
        self.precision = amp.resolve_precision(cfg.precision, device)
        self.run_dir = _prepare_run_dir(cfg)
        self.dataset = LeRobotDataset(cfg.dataset, row_stats=False)
        self.loader, self.loader_reason = choose_loader(cfg, self.dataset, self.run_dir, d.is_main)
        if self.loader == "memory":
            self.data = self.dataset.load(verify=cfg.verify_data)
        else:  # the first episode stands in for the data's shapes, cameras and tasks; batches stream
            if cfg.verify_data:
                self.dataset.verify()
            self.data = self.dataset.load(verify=False, episodes=[0])
        self.base = _load_base(cfg) if cfg.init_from else None
        self.teacher = load_policy(cfg.teacher, str(device)) if cfg.teacher else None
        self.pipe: Pipeline | None = None
        self.ema: EMA | None = None

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The weights a policy is exported with: the EMA's when it is on."""
        return self.ema.shadow if self.ema is not None else self.model.state_dict()


def build_run(cfg: TrainConfig, d: parallel.Dist, device: torch.device) -> Run:
    """Everything ``fit`` needs, in the order that keeps runs reproducible: the seed is set right
    before the model is built, techniques change the model before the optimizer sees it, and a
    resume restores the checkpoint last."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    run = Run(cfg, d, device)
    data, dataset, base, teacher = run.data, run.dataset, run.base, run.teacher
    texts = data.tasks + [w for wordings in data.paraphrases.values() for w in wordings]  # every instruction wording
    if teacher is not None:
        # The student reads the teacher's normalised actions and tokens, so it shares both maps.
        run.normalizer, run.tokenizer = teacher.normalizer, teacher.tokenizer
    elif base is None:
        run.normalizer = Normalizer.from_stats(dataset.stats, data.state.shape[1], data.action.shape[1],
                                               source=str(dataset.root / "meta/stats.json"))
        run.tokenizer = TEXT_ENCODERS.get(cfg.policy.text_encoder).tokenizer(texts)
    else:
        # The base's statistics are kept: its weights are calibrated to them, and a few
        # demonstrations would give noisy ones. New words are appended to its vocabulary.
        run.cfg = cfg = dataclasses.replace(cfg, policy=base.cfg)
        run.normalizer, run.tokenizer = base.normalizer, base.tokenizer.extended(texts)
    p = cfg.policy
    env_state_names = dataset.features.get(ENV_STATE, {}).get("names") or []
    pixels = pixel_columns(env_state_names, data.cameras) if data.env_state is not None else None
    if run.loader == "memory":
        run.sampler = ChunkSampler(data, run.normalizer, run.tokenizer, p.n_obs_steps, p.chunk_size, p.max_text_tokens,
                                   pixels, cfg.balance)
    else:
        run.sampler = StreamingSampler(dataset, run.normalizer, run.tokenizer, p.n_obs_steps, p.chunk_size,
                                       p.max_text_tokens, pixels, cfg.stream_window, cfg.accumulate)
    if d.is_main:
        print(f"data: {'in memory' if run.loader == 'memory' else 'streamed from disk'} ({run.loader_reason})")
    run.spec = spec = _spec(run)
    if teacher is not None:
        check_teacher(teacher, spec, cfg.distill_weight, p)
        if p.text_encoder != teacher.cfg.text_encoder:
            raise ValueError(f"--policy.text_encoder={p.text_encoder} differs from the teacher's "
                             f"{teacher.cfg.text_encoder}: a student reads the teacher's tokens")
    torch.manual_seed(cfg.seed)  # every rank builds the same initial weights
    model = build_policy(p, spec) if base is None else _finetune_model(base, spec)
    init_meta = {}
    text_origin = _load_text_embeddings(model, p) if base is None else base.meta.get("text_encoder")
    if text_origin:
        init_meta["text_encoder"] = text_origin
    if base is not None:
        init_meta["init_from"] = str(cfg.init_from)
    if cfg.init_encoder:
        pretrained = load_encoder(model.vision, cfg.init_encoder)
        init_meta["init_encoder"] = {"path": str(cfg.init_encoder), "method": pretrained["method"]}
    run.model = model.to(device)
    run.n_params = sum(t.numel() for t in model.parameters())
    _warn_batch_norm(model, cfg)
    run.techniques = [technique(run) for technique in TECHNIQUES if technique.active(cfg)]
    for technique in run.techniques:
        technique.prepare_model()
    run.objective = BCObjective(model, cfg.align_weight, cfg.distill_weight)
    run.module = parallel.parallelize(run.objective, model, d)
    if cfg.parallel.pp > 1:
        run.pipe = Pipeline(model, d, cfg.parallel.pp, cfg.parallel.pp_schedule, cfg.parallel.pp_microbatches, device)
    run.effective_batch = cfg.batch_size * cfg.accumulate * d.dp_size
    run.optim_cfg = dataclasses.replace(cfg.optim, lr=scaled_lr(cfg.optim, run.effective_batch))
    run.optimizer = build_optimizer(model, run.optim_cfg)
    for technique in run.techniques:
        technique.prepare_optimizer()
    run.scaler = amp.grad_scaler(run.precision, device)
    run.ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    run.start = 0
    if cfg.resume:
        run.start = load_checkpoint(latest_checkpoint(run.run_dir / "checkpoints"), model, run.optimizer, run.scaler,
                                    run.ema.shadow if run.ema else None)
    info = dataset.info.get("vlaforge", {})
    run.meta = {"spec": {k: v for k, v in spec.items() if k != "vocab_size"}, "suite": info.get("suite"),
                "env": info.get("env"), "tasks": info.get("tasks"), "fps": dataset.fps, **init_meta}
    for technique in run.techniques:
        run.meta |= technique.meta()
    return run


def _spec(run: Run) -> dict:
    """The observation/action spec the policy is built for (a fine-tuned policy keeps its base's
    auxiliary head and action range)."""
    data, base = run.data, run.base
    spec = {
        "image_size": int(data.images.shape[2]),
        "cameras": data.cameras,
        "state_dim": int(data.state.shape[1]),
        "action_dim": int(data.action.shape[1]),
        "aux_dim": 0 if data.env_state is None else int(data.env_state.shape[1]),
        "vocab_size": len(run.tokenizer),
        "action_range": _action_range(run.dataset.stats, run.normalizer),
    }
    if base is not None and 0 in (spec["aux_dim"], base.meta["spec"]["aux_dim"]):
        # The base's auxiliary head is kept (untrained without privileged state in the data);
        # a base without one ignores the dataset's privileged state.
        spec["aux_dim"] = base.meta["spec"]["aux_dim"]
    if base is not None:
        spec["action_range"] = base.meta["spec"].get("action_range")
    return spec


def export(run: Run, path: Path) -> Path:
    """Write the (EMA) weights as a policy directory; collective: every rank calls it."""
    weights = parallel.full_state_dict(run.weights)
    if run.pipe is not None:
        weights = parallel.gather_stages(weights, run.d)
    if run.d.is_main:
        plain = weights
        for technique in run.techniques:
            plain = technique.export_weights(plain)
        policy = build_policy(run.cfg.policy, run.spec)
        policy.load_state_dict({k: v.float().cpu() for k, v in plain.items()})
        Policy(policy, run.normalizer, run.tokenizer, run.meta).save(path)
        for technique in run.techniques:
            technique.exported(weights, path)
    return path


def fit(run: Run, show_progress: bool) -> None:
    """The loop: per step the learning rate, the step's micro-batches (through the active
    techniques), one optimizer step, EMA, then metrics, checkpoints and snapshots on schedule."""
    cfg, d = run.cfg, run.d
    tracker = _start_tracking(run) if d.is_main else None
    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(), disable=not show_progress,
    )
    samples, t_last, loss_sum, loss_n, run.skipped_steps = 0, time.perf_counter(), 0.0, 0, 0
    run.module.train()
    with progress:
        bar = progress.add_task("train", total=cfg.steps, completed=run.start, status="")
        for step in range(run.start, cfg.steps):
            lr = lr_at(step, cfg.steps, run.optim_cfg)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(step_seed(cfg.seed, step))  # dropout noise depends on the step only
            micro = (run.sampler.draw(cfg.seed, step, m, cfg.batch_size, cfg.image_shift, (d.dp_rank, d.dp_size),
                                      cfg.color_jitter) for m in range(cfg.accumulate))
            for technique in run.techniques:
                micro = technique.batches(step, micro)
            if run.pipe is None:
                step_loss, grad_norm, skipped = train_step(run.module, run.optimizer, run.scaler, micro, run.precision,
                                                           run.device, cfg.clip_grad)
                step_loss = parallel.mean_over_ranks(step_loss, d)
            else:
                step_loss, grad_norm, skipped = run.pipe.train_step(run.optimizer, list(micro), run.precision,
                                                                    run.device, cfg.clip_grad)
            if not math.isfinite(step_loss):
                raise TrainingError(
                    f"loss is {step_loss} at step {step}; the last checkpoint in {run.run_dir / 'checkpoints'} is intact"
                )
            run.skipped_steps += skipped
            if run.ema is not None and not skipped:
                run.ema.update(run.model, step)
            samples += run.effective_batch
            loss_sum, loss_n = loss_sum + step_loss, loss_n + 1
            done = step + 1
            if tracker is not None and (done % cfg.log_every == 0 or done == cfg.steps):
                now = time.perf_counter()
                rate = samples / max(now - t_last, 1e-9)
                metrics = {"loss": loss_sum / loss_n, "lr": lr, "grad_norm": float(grad_norm), "samples_per_s": rate,
                           "skipped_steps": run.skipped_steps, **run.model.metrics()}
                for technique in run.techniques:
                    metrics |= technique.metrics()
                tracker.log(done, metrics)
                progress.update(bar, status=f"loss {metrics['loss']:.4f}  {rate:,.0f} samples/s")
                samples, t_last, loss_sum, loss_n = 0, now, 0.0, 0
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                save_checkpoint(run.run_dir / "checkpoints", done, run.model, run.optimizer, run.scaler,
                                run.ema.shadow if run.ema else None)
            if cfg.snapshot_every and done % cfg.snapshot_every == 0 and done < cfg.steps:
                export(run, run.run_dir / "snapshots" / f"step_{done:07d}")
            progress.update(bar, completed=done)
    run.tracker = tracker


def _start_tracking(run: Run) -> Tracker:
    """config.yaml, the metrics log (cut back to the resumed checkpoint) and the tracker (rank 0)."""
    cfg = run.cfg
    if cfg.resume:
        truncate_metrics(run.run_dir / "metrics.jsonl", lambda row: row.get("step", 0) <= run.start)
    save_config(run.run_dir, cfg)
    params = flatten(to_dict(cfg)) | {"params": run.n_params, "effective_batch": run.effective_batch,
                                      "world_size": run.d.world}
    return Tracker(run.run_dir, cfg.tracking, params, run_info(cfg.dataset), cfg.resume)


def finish(run: Run) -> Path:
    """Export the policy and write train_summary.json; -> the policy directory."""
    local_fraction = parallel.local_fraction(run.model, run.n_params)
    out = export(run, run.run_dir / "policy")
    if not run.d.is_main:
        return out
    run.tracker.close()
    summary = {"params": run.n_params, "precision": run.precision, "device": str(run.device), "steps": run.cfg.steps,
               "world_size": run.d.world, "parallel": dataclasses.asdict(run.cfg.parallel),
               "local_param_fraction": local_fraction, "effective_batch": run.effective_batch,
               "skipped_steps": run.skipped_steps, "loader": run.loader, "loader_reason": run.loader_reason}
    (run.run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return out


def _action_range(stats: dict, normalizer: Normalizer) -> tuple[list[float], list[float]] | None:
    """The demonstrated actions' per-dimension minimum and maximum in normalised units (the
    tokenized head's bin range, the diffusion head's clip range), or None without min/max."""
    a = stats.get("action", {})
    if "min" not in a or "max" not in a:
        return None
    low = normalizer.norm_action(np.asarray(a["min"], np.float32))
    high = np.maximum(normalizer.norm_action(np.asarray(a["max"], np.float32)), low + 1e-3)
    return low.tolist(), high.tolist()


def _warn_batch_norm(model: nn.Module, cfg: TrainConfig) -> None:
    """BatchNorm statistics come from each micro-batch on each rank, so neither accumulation
    nor data parallelism then equals one large batch."""
    if (cfg.accumulate > 1 or cfg.parallel.dp * cfg.parallel.fsdp > 1) and any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        warnings.warn("the model has BatchNorm layers: with accumulate > 1 or data parallelism their batch statistics "
                      "come from each micro-batch, so the update differs from one large batch", stacklevel=3)


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
    extra = spec["vocab_size"] - embed.shape[0]
    state["text.embed.weight"] = torch.cat([embed, embed[1:2].expand(extra, -1)])
    model.load_state_dict(state)
    return model


def _load_text_embeddings(model: nn.Module, cfg: PolicyConfig) -> dict | None:
    """Copy the text encoder's pretrained table into a new model; -> its origin for config.json
    (None for embeddings learned from scratch)."""
    pretrained = TEXT_ENCODERS.get(cfg.text_encoder).pretrained()
    if pretrained is None:
        return None
    table, origin = pretrained
    with torch.no_grad():
        model.text.embed.weight.copy_(table)
    return origin
