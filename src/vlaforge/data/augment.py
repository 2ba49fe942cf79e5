"""Image augmentations on uint8 batches: random shift (DrQ) and colour jitter.

Both work on (B, ..., H, W, 3) uint8 tensors and apply one draw per sample to all of its
frames and cameras, so motion between history frames is preserved. Training uses them through
``--image_shift`` and ``--color_jitter``; self-supervised pretraining makes its two views with them.
"""

from __future__ import annotations

import torch


def random_shift(images: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Translate each sample's frames by its integer ``offset`` (B, 2) = (dx, dy), replicating
    the border (DrQ): output pixel (x, y) shows input pixel (x + dx, y + dy).

    The same offset is used for every frame and camera of a sample, so motion between history
    frames is preserved. Works on uint8 (B, ..., H, W, 3) without a float copy.
    """
    b = images.shape[0]
    h, w = images.shape[-3:-1]
    dx, dy = offset[:, 0], offset[:, 1]
    rows = (torch.arange(h)[None] + dy[:, None]).clamp(0, h - 1)  # (B, H)
    cols = (torch.arange(w)[None] + dx[:, None]).clamp(0, w - 1)  # (B, W)
    flat = images.reshape(b, -1, h, w, 3)
    out = flat[torch.arange(b)[:, None, None, None], torch.arange(flat.shape[1])[None, :, None, None],
               rows[:, None, :, None], cols[:, None, None, :]]
    return out.reshape(images.shape)


def jitter_factors(b: int, strength: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Brightness (B,), contrast (B,) and per-channel gain (B, 3), each uniform in 1 +- strength."""
    def draw(*shape: int) -> torch.Tensor:
        return 1 + strength * (2 * torch.rand((b, *shape), generator=gen) - 1)

    return draw(), draw(), draw(3)


def apply_jitter(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Scale each sample's contrast about its mean, then its brightness and channel gains; uint8 in, uint8 out."""
    shape = (images.shape[0],) + (1,) * (images.dim() - 2)
    x = images.float()
    mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    x = ((x - mean) * contrast.view(*shape, 1) + mean) * brightness.view(*shape, 1) * gain.view(*shape, 3)
    return x.round().clamp(0, 255).to(torch.uint8)


def color_jitter(images: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and per-channel gain of up to ``strength`` (0.2 = +-20%) per
    sample, in the spirit of torchvision's ColorJitter."""
    return apply_jitter(images, *jitter_factors(images.shape[0], strength, gen)) if strength > 0 else images
