"""Pipeline parallelism: the fusion transformer's blocks split into consecutive stages, one per
rank, driven by a GPipe or 1F1B schedule from ``torch.distributed.pipelining``.

    torchrun --nproc_per_node=2 -m vlaforge train --parallel.pp=2 --parallel.pp_microbatches=4

Every rank builds the whole model and drops what other stages own (torchtitan's way), so
parameter names, and with them checkpoint keys, are those of the whole model: a pipelined
checkpoint resumes in one process and back. The first stage owns the encoders and the token
assembly, the last the action head and read-out; the blocks are divided as evenly as possible. Between
stages travel the tokens, their key mask (as floats) and the keypoint maps that the loss on the
last stage supervises. Each rank draws the same batch; the first stage consumes its inputs and
the last its targets, packed into one tensor so the schedule can split them into micro-batches.

Pipeline parallelism runs alone here (no dp/fsdp/tp beside it), without fp16 loss scaling and
without closure optimizers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vlaforge.models.policy import bc_loss
from vlaforge.train import amp, parallel


def stage_layers(n_layers: int, n_stages: int) -> list[list[str]]:
    """Block names per stage, split as evenly as possible (earlier stages take the remainder)."""
    if n_layers < n_stages:
        raise ValueError(f"parallel.pp={n_stages} needs at least as many transformer layers, the policy has {n_layers}")
    base, extra = divmod(n_layers, n_stages)
    bounds = [0]
    for s in range(n_stages):
        bounds.append(bounds[-1] + base + (s < extra))
    return [[str(i) for i in range(bounds[s], bounds[s + 1])] for s in range(n_stages)]


class Stage(nn.Module):
    """One pipeline stage of a VLA policy; ``model`` is pruned in place to what the stage owns."""

    def __init__(self, model: nn.Module, index: int, n_stages: int) -> None:
        super().__init__()
        self.first, self.last = index == 0, index == n_stages - 1
        keep = set(stage_layers(len(model.blocks), n_stages)[index])
        for name in list(model.blocks):
            if name not in keep:
                del model.blocks[name]
        if not self.first:
            for name in ("vision", "text", "state_proj", "frame_embed", "state_pos", "queries", "aux_query"):
                if hasattr(model, name):
                    setattr(model, name, None)
        if not self.last:
            for name in ("ln_f", "head", "aux_head"):
                if hasattr(model, name):
                    setattr(model, name, None)
        self.model = model

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.first:
            x, mask, heatmaps = self.model.embed(*args)
            mask = mask.float()
        else:
            x, mask, heatmaps = args
        for block in self.model.blocks.values():
            x = block(x, mask > 0.5)
        if not self.last:
            return x, mask, heatmaps
        cond, aux = self.model.readout(x)
        return cond, aux if aux is not None else cond.new_zeros(len(cond), 0), heatmaps


class Targets:
    """The loss's part of a batch packed into one (B, X) tensor and unpacked per micro-batch."""

    KEYS = ("action", "action_valid", "env_state", "keypoints")

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.shapes = {k: batch[k].shape[1:] for k in self.KEYS if k in batch}

    def pack(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([batch[k].float().flatten(1) for k in self.shapes], 1)

    def unpack(self, packed: torch.Tensor) -> dict[str, torch.Tensor]:
        out, at = {}, 0
        for k, shape in self.shapes.items():
            n = math.prod(shape)
            out[k] = packed[:, at : at + n].reshape(len(packed), *shape)
            at += n
        out["action_valid"] = out["action_valid"] > 0.5
        return out


class Pipeline:
    """This rank's stage and the schedule that runs it."""

    def __init__(self, model: nn.Module, d: parallel.Dist, n_stages: int, schedule: str, microbatches: int,
                 device: torch.device) -> None:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        schedules = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}
        if schedule not in schedules:
            raise ValueError(f"unknown parallel.pp_schedule {schedule!r}; use gpipe or 1f1b")
        if model.cfg.ffn == "moe":
            raise ValueError("pipeline parallelism does not carry the mixture-of-experts balancing loss between "
                             "stages; train policy.ffn=moe with dp/fsdp")
        index = d.mesh["pp"].get_local_rank()
        self.stage_module = Stage(model, index, n_stages)
        self.stage = PipelineStage(self.stage_module, index, n_stages, device, group=d.mesh.get_group("pp"))
        self.schedule = schedules[schedule](self.stage, microbatches, loss_fn=self._loss)
        self.d, self.targets, self.scale = d, None, 1.0

    def _loss(self, output: tuple[torch.Tensor, ...], packed: torch.Tensor) -> torch.Tensor:
        cond, aux, heatmaps = output
        head = self.stage_module.model.head
        return bc_loss(head, cond, aux if aux.shape[-1] else None, heatmaps, self.targets.unpack(packed)) * self.scale

    def train_step(self, optimizer: torch.optim.Optimizer, micro_batches: list[dict[str, torch.Tensor]],
                   precision: str, device: torch.device, clip: float) -> tuple[float, torch.Tensor, bool]:
        """One optimizer step over the micro-batches (each split again by the schedule)."""
        if precision == "fp16":
            raise ValueError("pipeline parallelism runs without fp16 loss scaling; use --precision=bf16 or fp32")
        if getattr(optimizer, "requires_closure", False):
            raise ValueError(f"{type(optimizer).__name__} needs a closure, which pipeline schedules cannot re-run")
        self.scale = 1.0 / len(micro_batches)
        total = 0.0
        for batch in micro_batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            self.targets = self.targets or Targets(batch)
            with amp.autocast(precision, device):
                if self.stage_module.first:
                    self.schedule.step(batch["image"], batch["state"], batch["tokens"])
                elif self.stage_module.last:
                    losses: list[torch.Tensor] = []
                    self.schedule.step(target=self.targets.pack(batch), losses=losses)
                    total += float(torch.stack(losses).mean())
                else:
                    self.schedule.step()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        norm = parallel.clip_grad_norm(params, clip, self.d.mesh.get_group("pp"))
        skipped = amp.optimizer_step(amp.grad_scaler("fp32", device), optimizer, norm)
        optimizer.zero_grad(set_to_none=True)
        # Only the last stage saw the loss; the sum over stages hands it to every rank.
        return parallel.mean_over_ranks(total, self.d) * self.d.world, norm, skipped
