"""Data, fully-sharded, tensor and pipeline parallelism composed from small functions applied
to a plain model, torchtitan-style, on ``torch.distributed`` launched by ``torchrun``.

    torchrun --nproc_per_node=4 -m vlaforge train --parallel.fsdp=2 --parallel.tp=2 ...

The device mesh has the named dimensions ``pp`` (pipeline stages, train/pipeline.py), ``dp``
(replicated data parallel), ``fsdp`` (sharded data parallel) and ``tp`` (tensor parallel), in
that order, each present when its degree is above 1; the world size must be their product.
gloo serves CPU and NCCL serves CUDA.

- ``dp`` alone wraps the model in DistributedDataParallel; with ``fsdp`` it becomes the
  replicate dimension of hybrid sharding (HSDP), as DDP cannot hold sharded parameters.
- ``fsdp`` applies FSDP2 ``fully_shard`` to every fusion block and then to the whole model.
- ``tp`` splits every fusion block's attention by heads (q, k, v column-wise, output row-wise)
  and its MLP (first layer column-wise, second row-wise) with DTensor ``parallelize_module``;
  the CNN, text encoder and heads stay replicated. It combines with ``fsdp`` (2-D) but not with
  ``dp`` alone.
- ``pp`` runs alone.

Every data-parallel rank draws the same global batch and trains on its slice
(``ChunkSampler.sample(part=...)``), so an N-rank run sees what a 1-rank run with an N-times
larger batch sees.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from vlaforge.train.config import ParallelConfig


@dataclass
class Dist:
    """Where this process sits: global rank, its data-parallel coordinate, the device mesh."""

    rank: int = 0
    world: int = 1
    dp_rank: int = 0
    dp_size: int = 1
    mesh: object | None = None  # torch.distributed.device_mesh.DeviceMesh when world > 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


DIMS = ("pp", "dp", "fsdp", "tp")


def mesh_shape(cfg: ParallelConfig) -> dict[str, int]:
    """The mesh dimensions above size 1, in mesh order."""
    for name in DIMS:
        if getattr(cfg, name) < 1:
            raise ValueError(f"parallel.{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.tp > 1 and cfg.dp > 1 and cfg.fsdp == 1:
        raise ValueError("parallel.tp combines with parallel.fsdp, not with parallel.dp alone "
                         "(DDP cannot hold tensor-parallel parameters); use --parallel.fsdp instead of --parallel.dp")
    if cfg.pp > 1 and cfg.dp * cfg.fsdp * cfg.tp > 1:
        raise ValueError("parallel.pp runs alone here; set dp, fsdp and tp to 1 with it")
    return {name: getattr(cfg, name) for name in DIMS if getattr(cfg, name) > 1}


def init(cfg: ParallelConfig, device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up (if any) and build the mesh; returns this rank's
    place and device (``cuda:LOCAL_RANK`` on GPUs)."""
    shape = mesh_shape(cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    wanted = math.prod(shape.values())
    if world != wanted:
        raise ValueError(
            f"parallel degrees pp={cfg.pp} x dp={cfg.dp} x fsdp={cfg.fsdp} x tp={cfg.tp} = {wanted} processes, but the world size is "
            f"{world}; launch with `torchrun --nproc_per_node={wanted} -m vlaforge train ...`"
        )
    if world == 1:
        return Dist(device=device), device
    from torch.distributed.device_mesh import init_device_mesh

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=10))
    mesh = init_device_mesh(device.type, tuple(shape.values()), mesh_dim_names=tuple(shape))
    rank = dist.get_rank()
    return Dist(rank, world, (rank // cfg.tp) % (cfg.dp * cfg.fsdp), cfg.dp * cfg.fsdp, mesh, device), device


def apply_tp(model: nn.Module, mesh) -> None:
    """Shard every fusion block's attention by heads and its MLP across ``mesh``."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    from vlaforge.models.transformer import MLP, Attention

    for block in model.blocks.values():
        if not isinstance(block.mixer, Attention) or not isinstance(block.ffn, MLP):
            raise ValueError("tensor parallelism splits attention heads and the MLP; it does not support "
                             f"policy.backbone={model.cfg.backbone} or policy.ffn={model.cfg.ffn} (use dp/fsdp)")
        if block.mixer.n_heads % mesh.size():
            raise ValueError(f"parallel.tp={mesh.size()} must divide the {block.mixer.n_heads} attention heads")
        plan = {"mixer.q": ColwiseParallel(), "mixer.k": ColwiseParallel(), "mixer.v": ColwiseParallel(),
                "mixer.proj": RowwiseParallel(), "ffn.0": ColwiseParallel(), "ffn.2": RowwiseParallel()}
        parallelize_module(block, mesh, plan)


def apply_fsdp(root: nn.Module, model: nn.Module, mesh) -> None:
    """FSDP2: each fusion block is its own shard group, the rest of the model the root's."""
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks.values():
        fully_shard(block, mesh=mesh)
    fully_shard(root, mesh=mesh)


def parallelize(root: nn.Module, model: nn.Module, d: Dist) -> nn.Module:
    """Apply the configured parallelisms; ``root`` is the module whose forward computes the loss
    (it wraps ``model``). Returns the module to call in the training loop."""
    if not d.enabled:
        return root
    names = d.mesh.mesh_dim_names
    if "tp" in names:
        apply_tp(model, d.mesh["tp"])
    if "fsdp" in names:
        apply_fsdp(root, model, d.mesh["dp", "fsdp"] if "dp" in names else d.mesh["fsdp"])
        return root
    if "dp" in names:
        return nn.parallel.DistributedDataParallel(root, process_group=d.mesh.get_group("dp"))
    return root


def grad_sync(module: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Skip the data-parallel gradient reduction for all but the last micro-batch."""
    if enabled:
        return contextlib.nullcontext()
    if isinstance(module, nn.parallel.DistributedDataParallel):
        return module.no_sync()
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2

        @contextlib.contextmanager
        def paused():
            module.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                module.set_requires_gradient_sync(True)

        return paused()
    return contextlib.nullcontext()


def clip_grad_norm(params: list[nn.Parameter], max_norm: float, group=None) -> torch.Tensor:
    """Global gradient norm, over shards too, clipped to ``max_norm`` when it is finite and > 0.

    Plain gradients and DTensor gradients of each device mesh are normed apart and combined:
    tensor parallelism leaves the parameters outside the fusion blocks as plain tensors (or 1-D
    sharded ones beside 2-D sharded blocks under fsdp x tp). With ``group`` (pipeline
    stages, which hold different parameters) the squared norms are summed over its ranks.
    """
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    squares = torch.zeros((), dtype=torch.float32, device=grads[0].device if grads else "cpu")
    kinds: dict = {}  # plain tensors, and DTensors by device mesh (2-D meshes mix 1-D and 2-D)
    for g in grads:
        kinds.setdefault(g.device_mesh if isinstance(g, DTensor) else None, []).append(g)
    for kind in kinds.values():
        norm = torch.nn.utils.get_total_norm(kind)
        norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
        squares = squares + norm.float() ** 2
    if group is not None:
        dist.all_reduce(squares, group=group)
    norm = squares.sqrt()
    if max_norm > 0 and torch.isfinite(norm):
        coef = min(1.0, max_norm / (float(norm) + 1e-6))
        if coef < 1.0:
            for g in grads:
                g.mul_(coef)
    return norm


def local_fraction(model: nn.Module, total: int) -> float:
    """Share of the whole model's ``total`` parameter elements this rank holds (1.0 when nothing
    is sharded or split into stages)."""
    from torch.distributed.tensor import DTensor

    return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in model.parameters()) / total


def full_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sharded (DTensor) entries gathered whole; a collective, so every rank calls it."""
    from torch.distributed.tensor import DTensor

    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state.items()}


def mean_over_ranks(value: float, d: Dist) -> float:
    """A metric averaged over all ranks (what a single process with the whole batch reports)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t) / d.world


def gather_stages(state: dict[str, torch.Tensor], d: Dist) -> dict[str, torch.Tensor]:
    """Rank 0 receives the union of every pipeline stage's (CPU) state; other ranks get {}."""
    parts = [None] * d.world if d.is_main else None
    dist.gather_object({k: v.detach().cpu() for k, v in state.items()}, parts, dst=0)
    return {k: v for part in parts for k, v in part.items()} if d.is_main else {}


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
