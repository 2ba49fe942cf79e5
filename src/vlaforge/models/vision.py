"""Language-conditioned CNN image encoder with spatial-softmax keypoint tokens.

Each conv stage is FiLM-modulated by the pooled instruction embedding. A spatial softmax then
turns each of ``keypoints`` logit maps into an expected (x, y) image position (as in robomimic
and Levine et al.), and each keypoint becomes one token; a mean-pooled feature token carries the
global context. A keypoint's logit map is a learned 1x1 conv plus the dot product of the features
with a query the keypoint reads from the instruction through its own attention over the words,
so one keypoint can follow "the red cube" while another follows "the blue zone". The first
keypoints can be supervised with the image positions of the task's target and goal
(``heatmap_loss``), which teaches the word-to-pixel binding directly. CoordConv channels (pixel
x, y) are appended to the input. Few tokens keep the fusion transformer cheap.
"""

from __future__ import annotations

import torch
from torch import nn


class FiLMConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, d_cond: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(8, c_out)
        self.film = nn.Linear(d_cond, 2 * c_out)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        return self.act(self.norm(self.conv(x)) * (1 + scale) + shift)


def cell_centres(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Feature-cell centres in [-1, 1] image coordinates, (H*W, 2) as (x, y)."""
    gy, gx = torch.meshgrid(torch.linspace(-1, 1, h, device=device), torch.linspace(-1, 1, w, device=device), indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], -1)


class ConvEncoder(nn.Module):
    def __init__(self, image_size: int, channels: list[int], d_model: int, keypoints: int = 32) -> None:
        super().__init__()
        if image_size not in (64, 128):
            raise ValueError(f"image_size must be 64 or 128, got {image_size}")
        strides = [2, 2] + [1] * (len(channels) - 2) if image_size == 64 else [2, 2, 2] + [1] * (len(channels) - 3)
        if len(channels) < len([s for s in strides if s == 2]):
            raise ValueError(f"vision_channels needs at least {strides.count(2)} entries for {image_size}px images")
        c_in = 5
        self.stages = nn.ModuleList()
        for c_out, stride in zip(channels, strides):
            self.stages.append(FiLMConv(c_in, c_out, stride, d_model))
            c_in = c_out
        self.keypoint_conv = nn.Conv2d(c_in, keypoints, 1)
        # Per-keypoint attention over the instruction words yields the keypoint's feature query.
        self.word_query = nn.Parameter(torch.randn(1, keypoints, d_model) * 0.02)
        self.word_key = nn.Linear(d_model, d_model)
        self.word_value = nn.Linear(d_model, c_in)
        self.keypoint_proj = nn.Linear(2, d_model)
        self.keypoint_id = nn.Parameter(torch.randn(1, keypoints, d_model) * 0.02)
        self.pool_proj = nn.Linear(c_in, d_model)
        self.temperature = nn.Parameter(torch.ones(1))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, image_size), torch.linspace(-1, 1, image_size), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)
        self.num_tokens = keypoints + 1

    def feature_map(self, images: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The last FiLM-conv stage's output (B*N, C, H', W') for uint8 images (B*N, H, W, 3)."""
        n = images.shape[0] // text.shape[0]
        pooled = (text * text_mask[..., None]).sum(1) / text_mask.sum(1, keepdim=True).clamp(min=1)
        return self.conv_features(images, pooled.repeat_interleave(n, dim=0))

    def conv_features(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The FiLM-conv stages on uint8 images (B, H, W, 3) under conditioning ``cond`` (B, d);
        self-supervised pretraining passes zeros, which makes every FiLM layer its bias."""
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        x = torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1)], dim=1)
        for stage in self.stages:
            x = stage(x, cond)
        return x

    def forward(
        self, images: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B*N, H, W, 3) and the (B, L, d) instruction words they belong to (N images
        each) -> tokens (B*N, keypoints + 1, d) and keypoint logit maps (B*N, keypoints, H', W')."""
        n = images.shape[0] // text.shape[0]
        x = self.feature_map(images, text, text_mask)
        b, c, h, w = x.shape
        feats = x.flatten(2)  # (B*N, C, H*W)
        scores = self.word_query @ self.word_key(text).transpose(1, 2) / text.shape[-1] ** 0.5  # (B, K, L)
        scores = scores.float().masked_fill(~text_mask[:, None, :], float("-inf")).softmax(-1)
        query = (scores.to(text.dtype) @ self.word_value(text)).repeat_interleave(n, dim=0)  # (B*N, K, C)
        logits = (self.keypoint_conv(x).flatten(2) + query.to(feats.dtype) @ feats / c**0.5).float() / self.temperature
        points = logits.softmax(-1) @ cell_centres(h, w, x.device)  # (B*N, K, 2) expected positions
        kp_tokens = self.keypoint_proj(points) + self.keypoint_id
        pooled_feats = self.pool_proj(x.float().mean(dim=(2, 3)))[:, None]
        return torch.cat([kp_tokens, pooled_feats.to(kp_tokens.dtype)], dim=1), logits.view(b, -1, h, w)


def heatmap_loss(logits: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the first P keypoint maps against the true image positions of P points.

    logits (B, K, H, W); points (B, P, 2) in [-1, 1] image coordinates (x right, y down). The
    label spreads each point bilinearly over its four nearest cells, so the map's expected
    position is unbiased below the cell size. Points outside the image are clamped to its edge.
    """
    b, k, h, w = logits.shape
    p = points.shape[1]
    if p > k:
        raise ValueError(f"{p} task points are supervised but the encoder has {k} keypoints; set policy.keypoints >= {p}")
    gx = ((points[..., 0].float() + 1) / 2 * (w - 1)).clamp(0, w - 1 - 1e-4)
    gy = ((points[..., 1].float() + 1) / 2 * (h - 1)).clamp(0, h - 1 - 1e-4)
    x0, y0 = gx.floor().long(), gy.floor().long()
    fx, fy = gx - x0, gy - y0
    label = torch.zeros(b, p, h * w, device=logits.device)
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        label.scatter_add_(2, ((y0 + dy) * w + x0 + dx)[..., None], weight[..., None])
    logp = logits[:, :p].flatten(2).float().log_softmax(-1)
    return -(label * logp).sum(-1).mean()
