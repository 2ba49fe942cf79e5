"""Language-conditioned CNN image encoder with spatial-softmax keypoint tokens.

Each conv stage is FiLM-modulated by the pooled instruction embedding, so the feature maps can
light up the object the instruction names. A spatial softmax then turns each of ``keypoints``
channels into an expected (x, y) image position (as in robomimic and Levine et al.), and each
keypoint becomes one token; a mean-pooled feature token carries the global context. CoordConv
channels (pixel x, y) are appended to the input. Few tokens keep the fusion transformer cheap.
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
        # Instruction-queried keypoints: logit_k(x, y) += <q_k(instruction), feature(x, y)>.
        self.keypoint_query = nn.Linear(d_model, keypoints * c_in)
        self.keypoint_proj = nn.Linear(2, d_model)
        self.keypoint_id = nn.Parameter(torch.randn(1, keypoints, d_model) * 0.02)
        self.pool_proj = nn.Linear(c_in, d_model)
        self.temperature = nn.Parameter(torch.ones(1))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, image_size), torch.linspace(-1, 1, image_size), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)
        self.num_tokens = keypoints + 1

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) and (B, d_model) condition -> tokens (B, keypoints + 1, d_model)."""
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        x = torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1)], dim=1)
        for stage in self.stages:
            x = stage(x, cond)
        b, _, h, w = x.shape
        feats = x.flatten(2)  # (B, C, H*W)
        query = self.keypoint_query(cond).view(b, -1, feats.shape[1])  # (B, K, C)
        logits = (self.keypoint_conv(x).flatten(2) + query @ feats / feats.shape[1] ** 0.5).float() / self.temperature
        attn = logits.softmax(-1)
        gy, gx = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device), indexing="ij")
        grid = torch.stack([gx.flatten(), gy.flatten()], -1)  # (H*W, 2)
        points = attn @ grid  # (B, K, 2) expected positions
        kp_tokens = self.keypoint_proj(points) + self.keypoint_id
        pooled = self.pool_proj(x.float().mean(dim=(2, 3)))[:, None]
        return torch.cat([kp_tokens, pooled.to(kp_tokens.dtype)], dim=1)
