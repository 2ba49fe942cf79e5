"""Optional training techniques: each one a small class with the same hooks, listed once in
``TECHNIQUES``; the training loop (trainer.py) calls the hooks and names none of them.

| technique    | flag              | hooks used                                                      |
|--------------|-------------------|-----------------------------------------------------------------|
| grounding    | --grounding_scenes | batches (labelled scenes without actions replace a share), meta|
| alignment    | --align_dataset   | batches (target-domain frames), metrics (CORAL loss)            |
| qat          | --qat             | prepare_model (fake-quantized Linear layers), meta              |
| distillation | --teacher         | batches (the teacher's chunks as targets), meta                 |
| pruning      | --prune           | prepare_model (masks), prepare_optimizer (re-apply after each step), meta |
| finetune     | --finetune        | prepare_model (LoRA adapters / freezing), export_weights (merge), exported (adapter file), meta |

A technique is active when its flag is set (``active``); ``check`` holds its rules on the other
settings and runs before anything is loaded. The list order is the order hooks run in: target
frames join a batch before the teacher labels it, QAT wraps the layers before they are masked.
Grounding goes first: it replaces whole samples, which the later hooks then see like any other.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from vlaforge.data.dataset import LeRobotDataset
from vlaforge.data.grounding import render_scenes
from vlaforge.data.sampler import ChunkSampler
from vlaforge.envs.randomization.wrapper import domain_env
from vlaforge.seeds import ALIGN_STREAM, GROUNDING_STREAM, step_seed
from vlaforge.train.config import TrainConfig
from vlaforge.train.distill import with_teacher_targets
from vlaforge.train.lora import add_adapters, merged_state_dict, save_adapter
from vlaforge.train.prune import apply_masks, parse_prune, pruning_masks, zero_fraction
from vlaforge.train.qat import QAT_METHODS, prepare_qat

if TYPE_CHECKING:
    from vlaforge.train.trainer import Run


# Grounding scenes that justify one more render worker: a spawned worker costs about as much to
# start as rendering this many (70 scenes/s on one core).
SCENES_PER_WORKER = 250


class Technique:
    flag: ClassVar[str] = ""  # the TrainConfig field that turns it on

    def __init__(self, run: "Run") -> None:
        self.run = run

    @classmethod
    def active(cls, cfg: TrainConfig) -> bool:
        return bool(getattr(cfg, cls.flag))

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        """Raise ValueError for a setting this technique cannot run with."""

    def prepare_model(self) -> None:
        """Change the model (on its device) before the objective and optimizer are built."""

    def prepare_optimizer(self) -> None:
        """Attach to the optimizer once it is built."""

    def batches(self, step: int, micro: Iterator[dict]) -> Iterator[dict]:
        """Transform the step's micro-batches (a lazy stream, in order)."""
        return micro

    def meta(self) -> dict:
        """Entries for the exported policy's config.json."""
        return {}

    def export_weights(self, weights: dict) -> dict:
        """The state dict a plain policy of this architecture loads (export folds changes in)."""
        return weights

    def exported(self, weights: dict, path: Path) -> None:
        """Called on rank 0 after the policy directory ``path`` was written from ``weights``."""

    def metrics(self) -> dict:
        """Entries for the logged metrics."""
        return {}


class Grounding(Technique):
    """Grounding co-training (data/grounding.py): ``grounding_fraction`` of every micro-batch is
    drawn from ``grounding_scenes`` rendered scenes per task, which carry the target/goal labels of
    the auxiliary losses but no actions (their behaviour-cloning slots are invalid, so they add
    no behaviour-cloning loss). The scenes are rendered in the domain the dataset was collected
    in, so a policy trained on randomized data sees randomized scenes in every row of its batch."""

    flag = "grounding_scenes"

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        if cfg.grounding_scenes < 0:
            raise ValueError(f"grounding_scenes must be >= 0 (0 = off), got {cfg.grounding_scenes}")
        if not 0 < cfg.grounding_fraction < 1:
            raise ValueError(f"grounding_fraction must be in (0, 1), got {cfg.grounding_fraction}")
        if cfg.teacher:
            raise ValueError("--grounding_scenes does not combine with --teacher: grounding frames have no actions "
                             "for the teacher to relabel")

    def __init__(self, run: "Run") -> None:
        super().__init__(run)
        info = run.dataset.info.get("vlaforge", {})
        sampler = run.sampler
        if sampler.env_state_dim is None or not info.get("suite"):
            raise ValueError(f"--grounding_scenes needs a simulated dataset with privileged task points "
                             f"(observation.environment_state); {run.cfg.dataset} has none")
        tasks, per_task = list(info["tasks"]), run.cfg.grounding_scenes
        # Under torchrun every rank renders, and the ranks already hold the cores.
        workers = 1 if run.d.world > 1 else max(1, min(os.cpu_count() or 1, len(tasks) * per_task // SCENES_PER_WORKER))
        t0 = time.perf_counter()
        make_env = functools.partial(domain_env, info["suite"], split="train", env_cfg=info.get("env") or {},
                                     domain=info.get("domain"))
        frames = render_scenes(make_env, tasks, per_task, workers=workers)
        self.seconds = time.perf_counter() - t0
        if frames.task_points.shape[1] != sampler.env_state_dim:
            raise ValueError(f"grounding scenes give {frames.task_points.shape[1]} task-point columns, the dataset "
                             f"{sampler.env_state_dim}: the env settings differ from the data's")
        p = run.cfg.policy
        t = p.n_obs_steps  # a still frame: its history is itself
        self.image = torch.from_numpy(frames.images)[:, None].expand(-1, t, -1, -1, -1, -1)
        state = torch.from_numpy(run.normalizer.norm_state(frames.state).astype(np.float32))
        self.state = state[:, None].expand(-1, t, -1)
        self.tokens = torch.tensor([run.tokenizer.encode(s, p.max_text_tokens) for s in frames.instructions])
        self.env_state = torch.from_numpy(sampler.standardise_env_state(frames.task_points))
        self.keypoints = None
        if sampler.pixel_index is not None:  # (N, T, V, P, 2)
            kp = torch.from_numpy(frames.task_points[:, np.asarray(sampler.pixel_index)])
            self.keypoints = kp[:, None].expand(-1, t, -1, -1, -1)

    def batches(self, step: int, micro: Iterator[dict]) -> Iterator[dict]:
        cfg, d = self.run.cfg, self.run.d
        n = max(1, round(cfg.grounding_fraction * cfg.batch_size))
        for m, batch in enumerate(micro):  # the frames from their own stream of the step's seed
            gen = self.run.sampler.generator(cfg.seed + GROUNDING_STREAM, step, m)
            i = torch.randint(0, len(self.tokens), (n * d.dp_size,), generator=gen)[d.dp_rank * n:(d.dp_rank + 1) * n]
            k = batch["action"].shape[1]
            extra = {"image": self.image[i], "state": self.state[i], "tokens": self.tokens[i],
                     "action": torch.zeros(n, k, batch["action"].shape[2]),
                     "action_valid": torch.zeros(n, k, dtype=torch.bool), "env_state": self.env_state[i]}
            if self.keypoints is not None:
                extra["keypoints"] = self.keypoints[i]
            yield batch | {key: torch.cat([batch[key][: len(batch[key]) - n], v.to(batch[key].dtype)])
                           for key, v in extra.items()}

    def meta(self) -> dict:
        cfg = self.run.cfg
        return {"grounding": {"scenes_per_task": cfg.grounding_scenes, "fraction": cfg.grounding_fraction,
                              "render_seconds": round(self.seconds, 1)}}


class Alignment(Technique):
    """CORAL alignment of visual features with unlabelled target-domain frames (alignment.py)."""

    flag = "align_dataset"

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        if cfg.parallel.pp > 1:
            raise ValueError("feature alignment (--align_dataset) is not supported with pipeline parallelism")
        if cfg.align_weight < 0:
            raise ValueError(f"align_weight must be >= 0, got {cfg.align_weight}")

    def __init__(self, run: "Run") -> None:
        super().__init__(run)
        target = LeRobotDataset(run.cfg.align_dataset).load()
        if target.images.shape[1:] != run.data.images.shape[1:]:
            raise ValueError(f"align_dataset images {target.images.shape[1:]} differ from the training images "
                             f"{run.data.images.shape[1:]}")
        p = run.cfg.policy
        self.sampler = ChunkSampler(target, run.normalizer, run.tokenizer, p.n_obs_steps, 1, p.max_text_tokens)

    def batches(self, step: int, micro: Iterator[dict]) -> Iterator[dict]:
        cfg, d = self.run.cfg, self.run.d
        for m, batch in enumerate(micro):  # target frames from their own stream of the step's seed
            target = self.sampler.sample(cfg.batch_size, self.sampler.generator(cfg.seed + ALIGN_STREAM, step, m), 0,
                                         (d.dp_rank, d.dp_size))
            yield batch | {"align_image": target["image"], "align_tokens": target["tokens"]}

    def metrics(self) -> dict:
        loss = self.run.objective.last_align_loss
        return {} if loss is None else {"align_loss": loss}


class QuantizationAware(Technique):
    """Fake-quantized Linear layers, as ``vlaforge quantize`` will quantize them (qat.py)."""

    flag = "qat"

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        if cfg.qat and cfg.qat not in QAT_METHODS:
            raise ValueError(f"unknown QAT method {cfg.qat!r}; known: {', '.join(QAT_METHODS)}")
        _data_parallel_only(cfg)

    def prepare_model(self) -> None:
        prepare_qat(self.run.model, self.run.cfg.qat)

    def meta(self) -> dict:
        return {"qat": self.run.cfg.qat}


class Distillation(Technique):
    """The teacher's action chunks as targets (distill.py); the teacher itself is loaded with the
    run's initialisation, since the student shares its normaliser and tokenizer."""

    flag = "teacher"

    def batches(self, step: int, micro: Iterator[dict]) -> Iterator[dict]:
        run = self.run
        for batch in micro:
            yield with_teacher_targets(run.teacher, batch, run.device, step_seed(run.cfg.seed, step))

    def meta(self) -> dict:
        cfg, teacher = self.run.cfg, self.run.teacher
        return {"distilled_from": {"teacher": str(cfg.teacher), "weight": cfg.distill_weight, "head": teacher.cfg.head}}


class Pruning(Technique):
    """Pruning masks held through every update (prune.py)."""

    flag = "prune"

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        if cfg.prune:
            parse_prune(cfg.prune)
        _data_parallel_only(cfg)

    def prepare_model(self) -> None:
        self.masks = pruning_masks(self.run.model, *parse_prune(self.run.cfg.prune))
        apply_masks(self.run.model, self.masks)

    def prepare_optimizer(self) -> None:  # pruned weights stay exactly zero through every update
        self.run.optimizer.register_step_post_hook(lambda *_: apply_masks(self.run.model, self.masks))

    def meta(self) -> dict:
        method, sparsity = parse_prune(self.run.cfg.prune)
        return {"pruning": {"method": method, "sparsity": sparsity, "zero_fraction": zero_fraction(self.run.model,
                                                                                                 self.masks)}}


class FineTune(Technique):
    """Parameter-efficient fine-tuning of an ``--init_from`` policy: LoRA adapters (lora.py) or
    the action head alone; ``--finetune=full`` (the default) trains every weight and is not a
    technique."""

    flag = "finetune"
    MODES = ("full", "lora", "head")

    @classmethod
    def active(cls, cfg: TrainConfig) -> bool:
        return cfg.finetune != "full"

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        if cfg.finetune not in FineTune.MODES:
            raise ValueError(f"unknown finetune mode {cfg.finetune!r}; known: {', '.join(FineTune.MODES)}")
        if not cfg.init_from:
            raise ValueError(f"--finetune={cfg.finetune} adapts a trained policy: give it --init_from=DIR")
        if cfg.qat or cfg.prune:
            raise ValueError(f"--finetune={cfg.finetune} does not combine with --qat or --prune")
        if cfg.parallel.tp > 1 or cfg.parallel.pp > 1 or cfg.parallel.fsdp > 1:
            raise ValueError(f"--finetune={cfg.finetune} runs with data parallelism only (dp), not fsdp/tp/pp")
        if cfg.finetune == "lora" and (cfg.lora_rank < 1 or cfg.lora_alpha <= 0):
            raise ValueError(f"lora_rank must be >= 1 and lora_alpha > 0, got {cfg.lora_rank} and {cfg.lora_alpha}")

    def prepare_model(self) -> None:
        model, cfg = self.run.model, self.run.cfg
        if cfg.finetune == "lora":
            self.layers = add_adapters(model, cfg.lora_rank, cfg.lora_alpha)
        else:
            for p in model.parameters():
                p.requires_grad_(False)
            for p in model.head.parameters():
                p.requires_grad_(True)
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def export_weights(self, weights: dict) -> dict:
        cfg = self.run.cfg
        return merged_state_dict(weights, cfg.lora_alpha / cfg.lora_rank) if cfg.finetune == "lora" else weights

    def exported(self, weights: dict, path: Path) -> None:
        if self.run.cfg.finetune == "lora":
            save_adapter(weights, path.with_name(path.name + ".adapter.safetensors"), self.run.cfg.lora_rank,
                         self.run.cfg.lora_alpha)

    def meta(self) -> dict:
        cfg = self.run.cfg
        entry = {"mode": cfg.finetune, "trainable_params": self.trainable}
        if cfg.finetune == "lora":
            entry |= {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "layers": len(self.layers)}
        return {"finetune": entry}


def _data_parallel_only(cfg: TrainConfig) -> None:
    if (cfg.qat or cfg.prune) and (cfg.parallel.tp > 1 or cfg.parallel.pp > 1 or cfg.parallel.fsdp > 1):
        raise ValueError("quantization-aware training and pruning run with data parallelism only (dp), not fsdp/tp/pp")


TECHNIQUES: tuple[type[Technique], ...] = (Grounding, Alignment, QuantizationAware, Distillation, Pruning, FineTune)
