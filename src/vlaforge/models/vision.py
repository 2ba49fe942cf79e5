"""Small CNN image encoder that turns each camera frame into an 8x8 grid of tokens.

CoordConv channels (pixel x, y) are appended to the input: the policy must say *where* things
are, and explicit coordinates make that easy for a network trained in minutes.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ConvEncoder(nn.Module):
    def __init__(self, image_size: int, channels: list[int], d_model: int, grid: int = 8) -> None:
        super().__init__()
        downs = int(math.log2(image_size // grid))
        if 2**downs * grid != image_size:
            raise ValueError(f"image_size {image_size} must be {grid} times a power of two")
        layers: list[nn.Module] = []
        c_in = 5
        widths = list(channels) + [channels[-1]] * max(0, downs - len(channels))
        for k in range(downs):
            c_out = widths[k]
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.GELU()]
            c_in = c_out
        layers += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.GroupNorm(8, c_in), nn.GELU(), nn.Conv2d(c_in, d_model, 1)]
        self.net = nn.Sequential(*layers)
        self.pos = nn.Parameter(torch.zeros(1, grid * grid, d_model))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, image_size), torch.linspace(-1, 1, image_size), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> tokens (B, grid*grid, d_model)."""
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        x = torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1).to(x.dtype)], dim=1)
        x = self.net(x)
        return x.flatten(2).transpose(1, 2) + self.pos
