"""Self-supervised objectives for the vision encoder's conv stages, chosen by name
(``vlaforge pretrain --method``): they need frames only, no actions or instructions.

| method | learns from | loss |
|---|---|---|
| ``mae`` | one frame with 60% of its 8x8 patches blanked | pixel MSE on the blanked patches (a convolutional MAE, as in SparK) |
| ``simclr`` | two augmented views of a frame (shift + colour jitter) | NT-Xent over the batch (Chen et al. 2020) |
| ``moco`` | the same two views | InfoNCE against a momentum encoder's keys and a queue of past keys (MoCo v2) |
| ``predictive`` | a frame and the frame ``horizon`` steps later in its episode | InfoNCE of the predicted future embedding against the batch's futures (CPC-style) |

Every objective reads the encoder through ``ConvEncoder.conv_features`` with zero
conditioning, so the weights it learns are exactly those the policy's FiLM-conv stages load.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.data.augment import color_jitter, random_shift
from vlaforge.models.vision import ConvEncoder
from vlaforge.registry import Registry

SSL_METHODS: Registry = Registry("self-supervised method")


def embed(encoder: ConvEncoder, images: torch.Tensor) -> torch.Tensor:
    """uint8 frames (B, H, W, 3) -> feature maps (B, C, h, w) under zero conditioning."""
    d = encoder.stages[0].film.in_features
    return encoder.conv_features(images, images.new_zeros((images.shape[0], d), dtype=torch.float32))


def augment(images: torch.Tensor, gen: torch.Generator, shift: int = 4, jitter: float = 0.4) -> torch.Tensor:
    """One random view: a shift of up to ``shift`` pixels and colour jitter."""
    offset = torch.randint(-shift, shift + 1, (images.shape[0], 2), generator=gen)
    return color_jitter(random_shift(images, offset), jitter, gen)


def info_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of each query against all keys, its own (same row) being the positive."""
    logits = F.normalize(query.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))


def projector(c: int, dim: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(c, 128), nn.GELU(), nn.Linear(128, dim))


class SSLObjective(nn.Module):
    """An encoder plus whatever the objective trains beside it (decoder, projector)."""

    def __init__(self, encoder: ConvEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.channels = encoder.stages[-1].conv.out_channels

    def loss(self, frames: torch.Tensor, future: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after every optimizer step (momentum encoders update here)."""


@SSL_METHODS.register("mae")
class MaskedAutoencoder(SSLObjective):
    def __init__(self, encoder: ConvEncoder, patch: int = 8, mask_ratio: float = 0.6) -> None:
        super().__init__(encoder)
        self.patch, self.mask_ratio = patch, mask_ratio
        self.decoder = nn.Sequential(nn.Conv2d(self.channels, 64, 3, padding=1), nn.GELU(), nn.Conv2d(64, 64, 3, padding=1),
                                     nn.GELU())
        self.stride = 2 ** sum(1 for stage in encoder.stages if stage.conv.stride[0] == 2)
        self.out = nn.Conv2d(64, 3 * self.stride**2, 1)  # each feature cell paints its stride x stride pixels

    def loss(self, frames: torch.Tensor, future: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, h, w, _ = frames.shape
        keep = torch.rand(b, h // self.patch, w // self.patch, generator=gen) >= self.mask_ratio
        keep = keep.repeat_interleave(self.patch, 1).repeat_interleave(self.patch, 2).to(frames.device)
        masked = torch.where(keep[..., None], frames, torch.full_like(frames, 128))
        recon = F.pixel_shuffle(self.out(self.decoder(embed(self.encoder, masked))), self.stride).float()
        target = frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        hidden = (~keep)[:, None].float()
        return ((recon - target) ** 2 * hidden).sum() / (hidden.sum() * 3).clamp(min=1)


@SSL_METHODS.register("simclr")
class SimCLR(SSLObjective):
    def __init__(self, encoder: ConvEncoder, temperature: float = 0.2) -> None:
        super().__init__(encoder)
        self.temperature = temperature
        self.proj = projector(self.channels)

    def loss(self, frames: torch.Tensor, future: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        views = torch.cat([augment(frames, gen), augment(frames, gen)])
        z = F.normalize(self.proj(embed(self.encoder, views).mean(dim=(2, 3))).float(), dim=-1)
        n = len(frames)
        logits = z @ z.T / self.temperature
        logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # each view's twin
        return F.cross_entropy(logits, target)


@SSL_METHODS.register("moco")
class MoCo(SSLObjective):
    def __init__(self, encoder: ConvEncoder, temperature: float = 0.2, momentum: float = 0.99, queue: int = 1024) -> None:
        super().__init__(encoder)
        self.temperature, self.momentum = temperature, momentum
        self.proj = projector(self.channels)
        self.key_encoder, self.key_proj = copy.deepcopy(encoder), copy.deepcopy(self.proj)
        for p in (*self.key_encoder.parameters(), *self.key_proj.parameters()):
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue, 64), dim=-1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._keys: torch.Tensor | None = None

    def loss(self, frames: torch.Tensor, future: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        q = F.normalize(self.proj(embed(self.encoder, augment(frames, gen)).mean(dim=(2, 3))).float(), dim=-1)
        with torch.no_grad():
            k = F.normalize(self.key_proj(embed(self.key_encoder, augment(frames, gen)).mean(dim=(2, 3))).float(), dim=-1)
        self._keys = k
        logits = torch.cat([(q * k).sum(-1, keepdim=True), q @ self.queue.T], dim=1) / self.temperature
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))

    @torch.no_grad()
    def after_step(self) -> None:
        for online, key in ((self.encoder, self.key_encoder), (self.proj, self.key_proj)):
            for p, pk in zip(online.parameters(), key.parameters()):
                pk.mul_(self.momentum).add_(p.detach(), alpha=1 - self.momentum)
        if self._keys is not None:
            n, size = len(self._keys), len(self.queue)
            idx = (self.queue_ptr + torch.arange(n, device=self.queue.device)) % size
            self.queue[idx] = self._keys
            self.queue_ptr.copy_((self.queue_ptr + n) % size)
            self._keys = None


@SSL_METHODS.register("predictive")
class FuturePrediction(SSLObjective):
    def __init__(self, encoder: ConvEncoder, temperature: float = 0.2) -> None:
        super().__init__(encoder)
        self.temperature = temperature
        self.proj = projector(self.channels)
        self.predictor = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))

    def loss(self, frames: torch.Tensor, future: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z = self.proj(embed(self.encoder, torch.cat([frames, future])).mean(dim=(2, 3)))
        now, later = z.chunk(2)
        return info_nce(self.predictor(now), later, self.temperature)
